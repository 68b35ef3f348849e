#!/usr/bin/env bash
# Create a virtual environment, install microfetch, and run the daemon and web server
# on the embedded `local` backend. Settings come from the environment (see the README).
#
#   bash scripts/run.sh                # in the foreground, until Ctrl-C
#   bash scripts/run.sh --background   # install, start, wait until healthy, then return
#                                      # (log: microfetch-serve.log, pid: microfetch-serve.pid)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rsync >/dev/null || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq rsync >/dev/null
}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .

export MICROFETCH_BACKEND="${MICROFETCH_BACKEND:-local}"
if [ "${1:-}" != "--background" ]; then
  exec .venv/bin/microfetch serve "$@"
fi

nohup .venv/bin/microfetch serve >microfetch-serve.log 2>&1 &
echo $! >microfetch-serve.pid
for _ in $(seq 60); do
  if .venv/bin/microfetch healthcheck --timeout 2 >/dev/null 2>&1; then
    echo "microfetch serve is running (pid $(cat microfetch-serve.pid), log microfetch-serve.log)"
    echo "stop it with: kill \$(cat microfetch-serve.pid)"
    exit 0
  fi
  kill -0 "$(cat microfetch-serve.pid)" 2>/dev/null || break
  sleep 1
done
echo "microfetch serve did not become healthy; the end of microfetch-serve.log:" >&2
tail -n 20 microfetch-serve.log >&2
exit 1
