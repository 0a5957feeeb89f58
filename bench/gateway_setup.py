"""A fresh gateway for a run: its own Postgres database and Redis DB, an org, a key, a routing file.

The key's limits are far above anything the run sends, so the bench measures the cost of every
check on the hot path, never a refusal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

# Client model names are catalog names, so the gateway prices calls from its own catalog.
FAST_MODEL = "gpt-4o-mini"
# Calls to this one are the held streams of the memory test.
HELD_MODEL = "gpt-4o"
UPSTREAM_KEY_ENV = "NEMO_BENCH_UPSTREAM_KEY"
UPSTREAM_KEY = "bench-upstream-key"


def recreate_database(database_url: str) -> None:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"refusing an unusual database name: {name!r}")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def flush_redis_db(redis_url: str) -> None:
    """Empties the one Redis DB of the URL (FLUSHDB, never FLUSHALL)."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def routing_yaml(upstream_url: str) -> str:
    return f"""\
providers:
  fake:
    type: openai
    base_url: {upstream_url}/v1
    api_key_env: {UPSTREAM_KEY_ENV}
  fake-held:
    type: openai
    base_url: {upstream_url}/hold/v1
    api_key_env: {UPSTREAM_KEY_ENV}
deployments:
  - id: bench-fast
    provider: fake
    model: {FAST_MODEL}
    timeout_s: 30
  - id: bench-held
    provider: fake-held
    model: {HELD_MODEL}
    timeout_s: 600
models:
  {FAST_MODEL}:
    chain: [bench-fast]
    routing: ordered
  {HELD_MODEL}:
    chain: [bench-held]
    routing: ordered
"""


def _manage(project: Path, env: dict[str, str], *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=project, env=env, capture_output=True, text=True, check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{finished.stdout}\n{finished.stderr}")
    return finished.stdout.strip()


def prepare(project: Path, env: dict[str, str]) -> str:
    """Migrates the (fresh) database, creates the bench org and key, and returns the key's secret."""
    _manage(project, env, "migrate", "--noinput", "-v0")
    slug = _manage(project, env, "createorg", "Bench", "--credits", "1000000").splitlines()[-1]
    secret = _manage(
        project, env, "createkey", "--org", slug, "--name", "bench", "--budget", "100000",
        "--rpm", "100000000", "--tpm", "1000000000",
    )
    return secret.splitlines()[-1]


def request_log_rows(database_url: str) -> int | None:
    try:
        with psycopg.connect(database_url) as connection:
            return connection.execute("SELECT count(*) FROM analytics_requestlog").fetchone()[0]
    except psycopg.Error:
        return None
