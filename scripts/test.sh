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
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  # Another apt process (unattended upgrades, a second shell) may hold the lock: wait for it,
  # bounded, instead of failing at once.
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq)
  for attempt in 1 2 3; do
    if $SUDO "${apt[@]}" update && \
       $SUDO "${apt[@]}" install --no-install-recommends "${need[@]}" >/dev/null; then
      break
    fi
    [ "$attempt" -eq 3 ] && { echo "apt-get failed 3 times; install ${need[*]} by hand" >&2; exit 1; }
    echo "apt-get failed (attempt $attempt of 3); trying again in 20 s" >&2
    sleep 20
  done
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

export PATH="$PWD/.venv/bin:$PATH"
ruff check .
mkdir -p test-artifacts
python -m pytest "$@"
