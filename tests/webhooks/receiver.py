"""A webhook receiver: a real HTTP server on 127.0.0.1 that keeps every request it got (headers
and exact body) and answers the first ``fail_next`` of them with a 503."""

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webhooks.signing import signature_valid


@dataclass
class Received:
    headers: dict
    body: bytes
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, fail_next: int = 0):
        self.fail_next = fail_next
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 503 if receiver.fail_next > 0 else 200
                    receiver.fail_next -= status == 503
                    receiver.received.append(Received(dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/nemo"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Received]:
        with self.lock:
            return [each for each in self.received if each.status == 200]

    def badly_signed(self, secret: str) -> list[Received]:
        with self.lock:
            return [each for each in self.received
                    if not signature_valid(secret, each.body, each.headers.get("X-Nemo-Signature", ""))]
