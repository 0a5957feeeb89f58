"""Settings come from the environment; a bad value stops start-up with a message naming it.

Each case starts a fresh interpreter, because settings are read once, at import.
"""

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent

SHOW_SETTINGS = """
import django
django.setup()
from django.conf import settings
print(settings.DATABASES["default"]["ENGINE"])
print(settings.CACHES["default"]["BACKEND"])
print(settings.REDIS_URL)
print(settings.CELERY_BROKER_URL)
print(settings.CELERY_TASK_ALWAYS_EAGER)
print(settings.NEMO_ROUTER_CONFIG)
print(settings.DEBUG)
"""


CASES = {
    "no environment": {},
    "redis": {"REDIS_URL": "redis://127.0.0.1:6379/5"},
    "missing router config": {"NEMO_ROUTER_CONFIG": "/does/not/exist"},
    "bad redis url": {"REDIS_URL": "http://x"},
    "bad retention": {"NEMO_LOG_RETENTION_MONTHS": "thirteen"},
    "negative busy poll": {"NEMO_BUSY_POLL_US": "-5"},
    "busy poll not a number": {"NEMO_BUSY_POLL_US": "fast"},
    "no body allowed": {"NEMO_MAX_BODY_MB": "0"},
    "body limit not a number": {"NEMO_MAX_BODY_MB": "lots"},
    "bad database url": {"DATABASE_URL": "nonsense://x"},
    "bad debug": {"DEBUG": "maybe"},
    "no secret key in production": {"NEMO_REQUIRE_SECRET_KEY": "true"},
}


def start_django(**environ: str) -> subprocess.Popen:
    """Starts Django in a new interpreter with only these variables set (plus PATH)."""
    return subprocess.Popen(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=PROJECT_DIR,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "nemo.settings", **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case at once: each interpreter spends most of a second importing Django."""
    router_config = tmp_path_factory.mktemp("config") / "router.yaml"
    router_config.write_text("providers: {}\n")
    cases = {**CASES, "router config": {"NEMO_ROUTER_CONFIG": str(router_config)}}
    processes = {name: start_django(**environ) for name, environ in cases.items()}
    return {name: finish(process) for name, process in processes.items()}


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_with_no_environment_it_runs_on_sqlite_with_in_process_state_and_eager_tasks(runs):
    started = runs["no environment"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines() == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.locmem.LocMemCache",
        "None",
        "None",
        "True",
        "None",
        "False",
    ]


def test_redis_url_moves_cache_and_celery_to_redis(runs):
    started = runs["redis"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[1:5] == [
        "django.core.cache.backends.redis.RedisCache",
        "redis://127.0.0.1:6379/5",
        "redis://127.0.0.1:6379/5",
        "False",
    ]


def test_a_router_config_that_exists_is_taken(runs):
    started = runs["router config"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[5].endswith("/router.yaml")


@pytest.mark.parametrize(
    ("case", "variable"),
    [
        ("bad redis url", "REDIS_URL"),
        ("missing router config", "NEMO_ROUTER_CONFIG"),
        ("bad retention", "NEMO_LOG_RETENTION_MONTHS"),
        ("negative busy poll", "NEMO_BUSY_POLL_US"),
        ("busy poll not a number", "NEMO_BUSY_POLL_US"),
        ("no body allowed", "NEMO_MAX_BODY_MB"),
        ("body limit not a number", "NEMO_MAX_BODY_MB"),
        ("no secret key in production", "SECRET_KEY"),
        ("bad database url", "DATABASE_URL"),
        ("bad debug", "DEBUG"),
    ],
)
def test_a_bad_value_stops_start_up_with_a_message_naming_the_variable(runs, case, variable):
    started = runs[case]
    assert started.returncode != 0
    # The last line is the error itself; the traceback above it quotes settings.py and so names every variable.
    assert variable in last_line(started.stderr)
