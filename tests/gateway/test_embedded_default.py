"""The README's first command (``make run``): the gateway on the embedded default — SQLite, the
in-process counters, the built-in mock provider — answers an agent's calls. The suite runs on
PostgreSQL in CI, so this serves the product as ``make run`` does, on a SQLite file of its own, in
processes of its own."""

import os
import re
import signal
import socket
import subprocess
import sys

import anthropic
import httpx
import openai

from tests.promises.budget.support import wait_until
from tests.test_commands import PROJECT_DIR


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_runs_gateway_answers_its_demo_key_on_sqlite(tmp_path):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": f"sqlite:///{tmp_path / 'nemo.db'}",
               "DEBUG": "true", "REDIS_URL": "", "CELERY_BROKER_URL": "",
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=environ,
                              capture_output=True, text=True, timeout=300)

    assert manage("migrate", "--noinput", "-v0").returncode == 0
    demo = manage("demo")
    secret = re.search(r"Demo key: (sk-nemo-\S+)", demo.stdout).group(1)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "nemo.asgi:application", "-c", "gunicorn.conf.py",
         "-k", "uvicorn_worker.UvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}"],
        cwd=PROJECT_DIR, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, what="the gateway to be ready", timeout_s=60)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, timeout=30, max_retries=0)
        # The key's first call rebuilds its counters from the ledger (it deadlocked on SQLite).
        answer = client.chat.completions.create(model="gemini-2.5-flash",
                                                messages=[{"role": "user", "content": "hi"}])
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], stream=True) if chunk.choices)
        response = client.responses.create(model="gemini-2.5-flash", input="hi")
        message = anthropic.Anthropic(base_url=url, api_key=secret, timeout=30, max_retries=0).messages.create(
            model="gemini-2.5-flash", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)

    assert answer.choices[0].message.content == "Mock answer to: hi"
    assert streamed == "Mock answer to: hi"
    assert response.output_text == "Mock answer to: hi"
    assert message.content[0].text == "Mock answer to: hi"
    assert server.returncode == 0, errors[-3000:]
