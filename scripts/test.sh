#!/usr/bin/env bash
# Install everything the tests need (Debian packages too), then run ruff and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages the tests use for real: rsync, sshd, cloud-init's schema check, Chromium,
# and the worker's assembly step (fastp, SKESA, MEGAHIT; art_illumina simulates its reads).
need=()
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v cloud-init >/dev/null || need+=(cloud-init)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v fastp >/dev/null || need+=(fastp)
command -v skesa >/dev/null || need+=(skesa)
command -v megahit >/dev/null || need+=(megahit)
command -v art_illumina >/dev/null || need+=(art-nextgen-simulation-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

export PATH="$PWD/.venv/bin:$PATH"
ruff check .
mkdir -p test-artifacts
python -m pytest "$@"
