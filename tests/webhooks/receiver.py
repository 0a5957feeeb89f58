"""A webhook receiver: a real HTTP server on 127.0.0.1 (the exporters' fake intake) that keeps
every request it got (headers, exact body, the status it answered) and answers the first
``fail_next`` of them with a 503."""

import json
from dataclasses import dataclass

from tests.analytics.fakes import FakeIntake
from webhooks.signing import signature_valid


@dataclass
class Received:
    headers: dict
    body: bytes
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver(FakeIntake):
    path = "/hooks/nemo"

    def __init__(self, fail_next: int = 0):
        super().__init__()
        self.fail_next = fail_next
        self.received: list[Received] = []
        self.url += self.path

    def handle(self, path, headers, body) -> tuple[int, object]:
        # (Under the intake's lock.)
        status, answer = super().handle(path, headers, body)
        self.received.append(Received(dict(headers), body, status))
        return status, answer

    def authorized(self, headers) -> bool:
        return True  # a webhook is signed, not authenticated: ``badly_signed`` checks the signature

    def accept(self, payload) -> tuple[int, object]:
        return 200, {}

    def accepted(self) -> list[Received]:
        with self.lock:
            return [each for each in self.received if each.status == 200]

    def badly_signed(self, secret: str) -> list[Received]:
        with self.lock:
            return [each for each in self.received
                    if not signature_valid(secret, each.body, each.headers.get("X-Nemo-Signature", ""))]
