"""Settings come from the environment; a bad value stops start-up with a message naming it.

Each case starts a fresh interpreter, because settings are read once, at import.
"""

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Key hashes are HMACs over it: it must not change from one release to the next.
DEVELOPMENT_SECRET_KEY = "nemo-dev-insecure-secret-key-change-me-in-production"

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
print(settings.SECRET_KEY)
print(settings.SECURE_SSL_REDIRECT)
print(settings.SESSION_COOKIE_SECURE)
print(settings.CSRF_COOKIE_SECURE)
print(settings.SECURE_HSTS_SECONDS)
print(settings.SECURE_HSTS_INCLUDE_SUBDOMAINS)
print(settings.SECURE_PROXY_SSL_HEADER)
"""


# Every case runs with this key unless it says otherwise: production refuses to start without one.
SECRET_KEY = "test-settings-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"

CASES = {
    "no environment": {},
    "development": {"SECRET_KEY": "", "DEBUG": "true"},
    "redis": {"REDIS_URL": "redis://127.0.0.1:6379/5"},
    "missing router config": {"NEMO_ROUTER_CONFIG": "/does/not/exist"},
    "bad redis url": {"REDIS_URL": "http://x"},
    "bad retention": {"NEMO_LOG_RETENTION_MONTHS": "thirteen"},
    "negative busy poll": {"NEMO_BUSY_POLL_US": "-5"},
    "busy poll not a number": {"NEMO_BUSY_POLL_US": "fast"},
    "no body allowed": {"NEMO_MAX_BODY_MB": "0"},
    "body limit not a number": {"NEMO_MAX_BODY_MB": "lots"},
    "bad database url": {"DATABASE_URL": "nonsense://x"},
    "empty database pool": {"DATABASE_URL": "postgres://nemo@127.0.0.1:5432/nemo", "NEMO_DB_POOL_SIZE": "0"},
    "bad debug": {"DEBUG": "maybe"},
    "https settings": {
        "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "3600", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "NEMO_TRUST_X_FORWARDED_PROTO": "true",
    },
    "bad hsts seconds": {"SECURE_HSTS_SECONDS": "a year"},
    "negative hsts seconds": {"SECURE_HSTS_SECONDS": "-1"},
    "bad ssl redirect": {"SECURE_SSL_REDIRECT": "sometimes"},
    "bad proxy header flag": {"NEMO_TRUST_X_FORWARDED_PROTO": "proxy"},
    "bad forwarded for flag": {"NEMO_TRUST_X_FORWARDED_FOR": "proxy"},
    "bad private sinks flag": {"NEMO_SINK_ALLOW_PRIVATE": "internal"},
    "no sign-in failures allowed": {"NEMO_LOGIN_MAX_FAILURES": "0"},
    "sign-in window not a number": {"NEMO_LOGIN_WINDOW_MINUTES": "a while"},
    "no secret key in production": {"SECRET_KEY": ""},
    "no secret key with debug off": {"SECRET_KEY": "", "DEBUG": "false"},
}


def start_django(**environ: str) -> subprocess.Popen:
    """Starts Django in a new interpreter with only these variables set (plus PATH)."""
    return subprocess.Popen(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=PROJECT_DIR,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "nemo.settings", "SECRET_KEY": SECRET_KEY, **environ},
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


def test_with_only_a_secret_key_it_runs_on_sqlite_with_in_process_state_and_eager_tasks(runs):
    started = runs["no environment"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[:8] == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.locmem.LocMemCache",
        "None",
        "None",
        "True",
        "None",
        "False",
        SECRET_KEY,
    ]


def test_with_debug_on_and_no_secret_key_it_runs_with_the_fixed_development_key(runs):
    started = runs["development"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[6:8] == ["True", DEVELOPMENT_SECRET_KEY]


def test_production_sends_cookies_over_https_only_redirects_to_https_and_asks_for_hsts(runs):
    started = runs["no environment"]
    assert started.returncode == 0, started.stderr
    # Redirect, secure session and CSRF cookies, a year of HSTS, subdomains left out, no proxy trusted.
    assert started.stdout.splitlines()[8:] == ["True", "True", "True", "31536000", "False", "None"]


def test_with_debug_on_plain_http_works_for_local_development(runs):
    started = runs["development"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[8:] == ["False", "False", "False", "0", "False", "None"]


def test_each_https_setting_can_be_set_and_a_tls_terminating_proxy_trusted(runs):
    started = runs["https settings"]
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[8:] == [
        "False", "False", "False", "3600", "True", "('HTTP_X_FORWARDED_PROTO', 'https')"]


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
        ("no secret key with debug off", "SECRET_KEY"),
        ("bad database url", "DATABASE_URL"),
        ("empty database pool", "NEMO_DB_POOL_SIZE"),
        ("bad debug", "DEBUG"),
        ("bad hsts seconds", "SECURE_HSTS_SECONDS"),
        ("negative hsts seconds", "SECURE_HSTS_SECONDS"),
        ("bad ssl redirect", "SECURE_SSL_REDIRECT"),
        ("bad proxy header flag", "NEMO_TRUST_X_FORWARDED_PROTO"),
        ("bad forwarded for flag", "NEMO_TRUST_X_FORWARDED_FOR"),
        ("bad private sinks flag", "NEMO_SINK_ALLOW_PRIVATE"),
        ("no sign-in failures allowed", "NEMO_LOGIN_MAX_FAILURES"),
        ("sign-in window not a number", "NEMO_LOGIN_WINDOW_MINUTES"),
    ],
)
def test_a_bad_value_stops_start_up_with_a_message_naming_the_variable(runs, case, variable):
    started = runs[case]
    assert started.returncode != 0
    # The last line is the error itself; the traceback above it quotes settings.py and so names every variable.
    assert variable in last_line(started.stderr)


def check_deploy(**environ: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=PROJECT_DIR,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "nemo.settings", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_flags_the_development_key():
    checked = check_deploy(DEBUG="true")

    assert checked.returncode != 0
    assert "nemo.E001" in checked.stderr
    assert "SECRET_KEY is the public development key" in checked.stderr


def test_check_deploy_passes_a_real_secret_key():
    checked = check_deploy(SECRET_KEY=SECRET_KEY)

    assert "nemo.E001" not in checked.stdout + checked.stderr
