"""Fake upstream servers speaking each provider's real wire format, for tests.

Start one in an async test with ``async with FakeGemini() as fake:`` (or from a sync test with
``with FakeGemini() as fake:``, served from a thread); point the provider at
``fake.provider_options(...)``; program faults with ``fake.script(Status(503), Reply())``; read
what reached it in ``fake.requests`` / ``fake.count``.
"""

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.behaviours import DieBeforeFirstByte, DieMidway, Hang, Raw, Reply, Reset, Status, StreamError
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeUpstream, ReceivedRequest

__all__ = [
    "DieBeforeFirstByte",
    "DieMidway",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeTokenServer",
    "FakeUpstream",
    "Hang",
    "Raw",
    "ReceivedRequest",
    "Reply",
    "Reset",
    "Status",
    "StreamError",
    "write_service_account",
]
