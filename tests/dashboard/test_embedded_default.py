"""The dashboard on the embedded default (SQLite, what ``make run`` serves): every page a user
reaches after signing in answers, with calls in the log — its overview, the log search with each
filter and its totals, the panel, runs, spend and its CSV. The suite itself runs on PostgreSQL in
CI, so this drives a second Django on a SQLite file of its own, in a process of its own."""

import json
import os
import subprocess
import sys

from tests.test_commands import PROJECT_DIR

PAGES = """
import json
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from analytics.models import RequestLog
from billing.services import organization_create_with_credits
from keys.audit import Actor
from keys.services import virtual_key_create

actor = Actor.system("test")
user = get_user_model().objects.create_user(username="a@example.com", email="a@example.com", password="pw-123456")
org = organization_create_with_credits(name="Embedded", owner=user, actor=actor)
key, _ = virtual_key_create(org=org, name="agent", actor=actor)
now = timezone.now()
ok = [{"deployment": "flash", "outcome": "ok", "latency_ms": 100}]
fell_back = [{"deployment": "flash", "outcome": "timeout", "latency_ms": 900}, *ok]
for n, (latency, status, attempts, tags) in enumerate([
        (100, 200, ok, ["eu"]), (200, 200, fell_back, None), (300, 502, fell_back, ["eu", "customer:acme"]),
        (400, 200, ok, None)]):
    RequestLog.objects.create(
        request_id=f"req_{n}", org=org, key=key, key_prefix=key.prefix, run_id="run-1", model="gemini-2.5-flash",
        deployment="flash", status=status, attempts=attempts, latency_ms=latency, prompt_tokens=10,
        completion_tokens=5, cost=Decimal("0.000100"), tags=tags, created=now - timedelta(minutes=10 - n))
client = Client()
assert client.login(username="a@example.com", password="pw-123456")
answers = {}
for path in ["/overview/", "/log/", "/log/?tag=eu", "/log/?fallback_only=on", "/log/?status_class=5xx",
             "/log/?model=gem&run=run", "/log/req_2/", "/log/req_2/panel/", "/runs/", "/runs/run-1",
             "/spend/", "/spend/calls.csv", "/keys/"]:
    response = client.get(path)
    body = b"".join(response) if response.streaming else response.content
    answers[path] = [response.status_code, body.decode()]
print(json.dumps(answers))
"""


def test_every_page_answers_on_the_embedded_sqlite(tmp_path):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": f"sqlite:///{tmp_path / 'nemo.db'}",
               "SECRET_KEY": os.environ["SECRET_KEY"], "DEBUG": "true", "REDIS_URL": "", "CELERY_BROKER_URL": ""}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=environ,
                              capture_output=True, text=True, timeout=300)

    assert manage("migrate", "--noinput", "-v0").returncode == 0
    done = manage("shell", "-v", "0", "-c", PAGES)
    assert done.returncode == 0, done.stderr[-3000:]

    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    overview = answers["/overview/"][1]
    assert "200 ms" in overview or "200&nbsp;ms" in overview, "the overview's p50 of 100/200/300/400 ms"
    # The searches found what they should: the tagged calls, the ones that fell back, the 502.
    assert ("req_0" in answers["/log/?tag=eu"][1], "req_1" in answers["/log/?tag=eu"][1]) == (True, False)
    assert ("req_1" in answers["/log/?fallback_only=on"][1], "req_0" in answers["/log/?fallback_only=on"][1]) == (
        True, False)
    assert "req_2" in answers["/log/?status_class=5xx"][1] and "req_3" not in answers["/log/?status_class=5xx"][1]
