"""A stand-in for llama-server's /metrics, /slots and /health on 127.0.0.1 (real HTTP, real socket).

The text formats follow llama-server's: Prometheus text with ``llamacpp:`` metric names, and a
JSON list of slots with ``id`` and ``is_processing``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LlamaStandin:
    def __init__(self, slots: int = 4) -> None:
        self.processing = 0
        self.deferred = 0
        self.slots = slots
        #: path -> raw body served instead of the real format (hostile or truncated answers)
        self.bodies: dict[str, bytes] = {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                if self.path in outer.bodies:
                    body, ctype = outer.bodies[self.path], "text/plain"
                elif self.path == "/metrics":
                    body = ("# HELP llamacpp:requests_processing Number of requests processing.\n"
                            "# TYPE llamacpp:requests_processing gauge\n"
                            f"llamacpp:requests_processing {outer.processing}\n"
                            "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
                            "# TYPE llamacpp:requests_deferred gauge\n"
                            f"llamacpp:requests_deferred {outer.deferred}\n"
                            "llamacpp:prompt_tokens_total 1234\n").encode()
                    ctype = "text/plain; version=0.0.4"
                elif self.path == "/slots":
                    body = json.dumps([{"id": i, "n_ctx": 4096, "is_processing": i < outer.processing}
                                       for i in range(outer.slots)]).encode()
                    ctype = "application/json"
                elif self.path == "/health":
                    body, ctype = b'{"status":"ok"}', "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> LlamaStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
