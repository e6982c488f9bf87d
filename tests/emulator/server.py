"""Entry point of the SageMaker emulator: moto in server mode, plus `moto_plugin`.

    python tests/emulator/server.py --calls CALLS.jsonl --control CONTROL.json

Binds 127.0.0.1 on a free port and prints ``READY <port>`` once it accepts requests;
runs until SIGTERM/SIGINT.  Started and stopped by the `moto_server` fixture
(tests/conftest.py); see `fixture.Emulator` for what tests can ask of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import moto_plugin  # noqa: E402  (path set just above)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--calls", required=True, help="JSON-lines file: one line per API call")
    parser.add_argument("--control", required=True, help="JSON file tests write to steer it")
    args = parser.parse_args()

    moto_plugin.install(calls=Path(args.calls), control=Path(args.control))

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    port = server._server.server_port          # the real port when asked for port 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"READY {port}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    raise SystemExit(main())
