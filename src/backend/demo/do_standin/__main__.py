"""``python -m backend.demo.do_standin``: the stand-in on its own, for rehearsing a `serve` by hand.

Prints the settings that point microfetch at it and a key id for ``MICROFETCH_DO_SSH_KEYS``,
serves until Ctrl-C, then prints the ledger. Needs root, as its droplets are sshds on port 22.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from backend.demo.do_standin.cloud import Cloud
from backend.demo.do_standin.server import DoStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.demo.do_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (any free)")
    parser.add_argument("--token", default="standin-token", help="the bearer token it accepts")
    parser.add_argument("--public-key", type=Path, required=True,
                        help="an OpenSSH public key file to register as the account's SSH key")
    parser.add_argument("--activation-seconds", type=float, default=5.0,
                        help="how long a new droplet stays 'new' (5)")
    parser.add_argument("--droplet-limit", type=int, default=25, help="the account's limit (25)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the stand-in's droplets are sshds on port 22 of 127.0.0.N: run it as root")
        return 2
    cloud = Cloud(args.token, activation_seconds=args.activation_seconds,
                  droplet_limit=args.droplet_limit)
    key = cloud.add_ssh_key(args.public_key.read_text().strip())
    stand_in = DoStandIn(cloud).start(args.port)
    for name, value in (stand_in.settings_env() | {"MICROFETCH_DO_SSH_KEYS": str(key["id"])}
                        ).items():
        print(f"export {name}={value}")
    print(f"# ledger: {stand_in.base}/_standin/ledger  faults: POST {stand_in.base}"
          "/_standin/faults  (Ctrl-C stops and prints the ledger)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        stop.wait()
    print(stand_in.stop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
