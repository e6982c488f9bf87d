"""Entry point of the SageMaker emulator: moto in server mode, plus `moto_plugin`.

    python tests/emulator/server.py --calls CALLS.jsonl --control CONTROL.json

Binds 127.0.0.1 on a free port and prints ``READY <port>`` once it accepts requests;
runs until SIGTERM/SIGINT.  Started and stopped by the `moto_server` fixture
(tests/conftest.py); see `fixture.Emulator` for what tests can ask of it.

moto's own app (`DomainDispatcherApplication`, patched by `moto_plugin`) is served by
Werkzeug's threaded server, as moto's `ThreadedMotoServer` does, but through
`KeepAliveHandler`: Werkzeug answers every request with ``Connection: close``, so each
boto3 call paid a TCP connect, a new server thread and a 10 ms drain of the socket;
keeping the connection open makes the emulator answer like AWS does (one connection
per client thread, reused) and lets benchmarks measure calls rather than connects.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")   # before moto is imported

import moto_plugin  # noqa: E402  (path set just above)

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)


class KeepAliveHandler(MotoRequestHandler):
    """moto's request handler, with HTTP/1.1 keep-alive for the ordinary requests.

    A request with a ``Content-Length`` body (or none) is answered in full by
    `_answer`: the body is read before the app runs (so the next request line is never
    mistaken for body), the answer is sent in one write with its length, and the
    connection stays open unless the client asked to close it.  Anything else
    (a chunked request body) goes through Werkzeug's own `run_wsgi`, which closes the
    connection after answering, exactly as before.  The status, headers and body the
    app produces are passed on unchanged; only ``Connection: close`` is left out and a
    missing ``Content-Length`` is given instead of a chunked answer.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True    # an answer is one write; never wait to coalesce

    def log_request(self, code="-", size="-") -> None:
        pass                          # moto_plugin's call log records every request

    def run_wsgi(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return super().run_wsgi()
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "Bad Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            self._answer(environ, self.server.app)
        except Exception as exc:       # as Werkzeug does: log it, answer 500, close
            if self.server.passthrough_errors or isinstance(exc, (ConnectionError,
                                                                  TimeoutError)):
                raise                  # a dropped client: `handle` ends the connection
            from werkzeug.debug.tbtools import DebugTraceback
            from werkzeug.exceptions import InternalServerError

            self.close_connection = True
            self.server.log("error", "Error on request:\n"
                            f"{DebugTraceback(exc).render_traceback_text()}")
            if not getattr(self, "_answered", False):
                self._headers_buffer = []      # whatever was started of the answer
                self._answer(environ, InternalServerError())

    @staticmethod
    def _declared_length(headers) -> int | None:
        for key, value in headers:
            if key.lower() == "content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def _answer(self, environ: dict, app) -> None:
        self._answered = False
        started: list = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]
            return lambda data: chunks.append(data)     # the legacy `write` callable

        chunks: list[bytes] = []
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        code_text, _, message = status.partition(" ")
        code = int(code_text)
        payload = b"".join(chunks)
        self.send_response(code, message)
        names = set()
        for key, value in headers:
            self.send_header(key, value)
            names.add(key.lower())
        no_body = environ["REQUEST_METHOD"] == "HEAD" or code < 200 or code in (204, 304)
        if not no_body:
            if "content-length" not in names:
                self.send_header("Content-Length", str(len(payload)))
            elif self._declared_length(headers) != len(payload):
                self.close_connection = True    # the client reads to the close, as before
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")            # end_headers, without its flush
        self._headers_buffer.append(b"" if no_body else payload)
        data = b"".join(self._headers_buffer)
        self._headers_buffer = []
        self._answered = True
        self.wfile.write(data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--calls", required=True, help="JSON-lines file: one line per API call")
    parser.add_argument("--control", required=True, help="JSON file tests write to steer it")
    args = parser.parse_args()

    moto_plugin.install(calls=Path(args.calls), control=Path(args.control))

    from werkzeug.serving import make_server

    # What moto's ThreadedMotoServer does, with the keep-alive handler: one thread per
    # connection (a client's pooled connection keeps its thread), daemon threads.
    server = make_server("127.0.0.1", args.port, DomainDispatcherApplication(create_backend_app),
                         threaded=True, request_handler=KeepAliveHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"READY {server.server_port}", flush=True)   # the real port when asked for 0
    stop.wait()
    server.shutdown()
    serving.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
