#!/usr/bin/env bash
# Create a virtual environment, install microfetch, and run the daemon and web server
# on the embedded `local` backend. Settings come from the environment (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rsync >/dev/null || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq rsync >/dev/null
}
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .

export MICROFETCH_BACKEND="${MICROFETCH_BACKEND:-local}"
exec .venv/bin/microfetch serve "$@"
