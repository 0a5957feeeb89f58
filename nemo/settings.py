"""Settings, read from the environment (see CONTRACT.md, "Running it").

The embedded default needs nothing: SQLite in the project, in-process counters and cache, and
Celery tasks run eagerly. Setting DATABASE_URL / REDIS_URL switches to PostgreSQL and Redis.
A bad value stops start-up with a message that names the variable.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def _read(name: str, reader, default):
    try:
        return reader(name, default=default)
    except (ValueError, ImproperlyConfigured, environ.ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"{name} has a bad value: {exc}") from exc


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _strict_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


DEBUG = _strict_bool("DEBUG", False)
# A fixed key for local development (DEBUG=true): key hashes are HMACs over SECRET_KEY, so it must
# stay the same across restarts. It is public, so production refuses to fall back to it, and
# `check --deploy` flags it when it is set by hand (keys/checks.py).
NEMO_DEVELOPMENT_SECRET_KEY = "nemo-dev-insecure-secret-key-change-me-in-production"
SECRET_KEY = _read("SECRET_KEY", env.str, "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (it keys the hashes of every API key); "
            "DEBUG=true runs with a development key"
        )
    SECRET_KEY = NEMO_DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = _read("ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost", "testserver"])

# HTTPS in production (DEBUG off): session and CSRF cookies only over HTTPS, plain HTTP redirected,
# and browsers told to keep to HTTPS for a year (HSTS). Each can be set. Behind a proxy that
# terminates TLS, trust its X-Forwarded-Proto only if it overwrites whatever the client sent.
SECURE_SSL_REDIRECT = _strict_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = _strict_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _strict_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = _read("SECURE_HSTS_SECONDS", env.int, 0 if DEBUG else 365 * 24 * 3600)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS must be 0 (off) or more, not {SECURE_HSTS_SECONDS}")
SECURE_HSTS_INCLUDE_SUBDOMAINS = _strict_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if _strict_bool("NEMO_TRUST_X_FORWARDED_PROTO", False) else None
)
# The client's address is the last of X-Forwarded-For (the one the proxy appended), not the proxy's.
NEMO_TRUST_X_FORWARDED_FOR = _strict_bool("NEMO_TRUST_X_FORWARDED_FOR", False)

# Sign-in throttle of the dashboard and the admin (dashboard/logins.py): this many failures for one
# username or from one address within the window, and sign-in is refused until the window passes.
NEMO_LOGIN_MAX_FAILURES = _read("NEMO_LOGIN_MAX_FAILURES", env.int, 5)
NEMO_LOGIN_WINDOW_S = 60 * _read("NEMO_LOGIN_WINDOW_MINUTES", env.int, 15)
if NEMO_LOGIN_MAX_FAILURES < 1 or NEMO_LOGIN_WINDOW_S < 60:
    raise ImproperlyConfigured("NEMO_LOGIN_MAX_FAILURES and NEMO_LOGIN_WINDOW_MINUTES must be at least 1")

DATABASE_URL = _read("DATABASE_URL", env.str, f"sqlite:///{BASE_DIR / 'nemo.sqlite3'}")
_scheme = DATABASE_URL.split("://", 1)[0] if "://" in DATABASE_URL else None
if _scheme not in environ.Env.DB_SCHEMES:
    raise ImproperlyConfigured(
        f"DATABASE_URL must look like postgres://user@host:5432/name or sqlite:///path, not {DATABASE_URL!r}"
    )
try:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
except (ImproperlyConfigured, KeyError, ValueError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL has a bad value: {DATABASE_URL!r} ({exc})") from exc
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The gateway writes from several threads; wait for the lock rather than fail.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
else:
    # A pool per process instead of persistent connections. Under ASGI each request runs in a
    # context of its own: a connection kept past its request (CONN_MAX_AGE > 0) was never reused,
    # only left open, and requests at once each opened another, until max_connections ran out.
    # A request borrows a pooled connection and hands it back when it ends; beyond the pool's
    # size, requests wait for one (Django's docs: no persistent connections under ASGI).
    NEMO_DB_POOL_SIZE = _read("NEMO_DB_POOL_SIZE", env.int, 10)
    if NEMO_DB_POOL_SIZE < 1:
        raise ImproperlyConfigured(f"NEMO_DB_POOL_SIZE must be at least 1, not {NEMO_DB_POOL_SIZE}")
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A pooled connection may have died with a database restart: check it before handing it out.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 0, "max_size": NEMO_DB_POOL_SIZE}

REDIS_URL = _read("REDIS_URL", env.str, "") or None
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://", "redis+cluster://",
                                           "rediss+cluster://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// or redis+cluster:// URL, not {REDIS_URL!r}")
# A Redis Cluster (counters/cluster.py) holds the counters; pub/sub, which a cluster carries to
# every node, goes through its first node (counters.cluster.pubsub_url); Celery needs a broker of
# its own (CELERY_BROKER_URL) and Django's cache stays in the process.
REDIS_CLUSTER = bool(REDIS_URL) and "+cluster://" in REDIS_URL

# Namespace of the gateway's keys in Redis (counters, circuit state, cache).
NEMO_REDIS_PREFIX = _read("NEMO_REDIS_PREFIX", env.str, "nemo:")
# After Redis lost its state (a flush, a restart without persistence), how long admissions wait
# for every live worker to put its calls in flight back (counters/lua/epoch.lua): a few of the
# workers' half-second heartbeats.
NEMO_RECOVERY_HOLD_S = _read("NEMO_RECOVERY_HOLD_S", env.float, 3.0)
if not 0.5 <= NEMO_RECOVERY_HOLD_S <= 60:
    raise ImproperlyConfigured(f"NEMO_RECOVERY_HOLD_S must be 0.5 to 60 seconds, not {NEMO_RECOVERY_HOLD_S}")

CELERY_BROKER_URL = _read("CELERY_BROKER_URL", env.str, "") or (None if REDIS_CLUSTER else REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "reap-stale-reservations": {"task": "analytics.tasks.reap_reservations", "schedule": 60.0},
    "roll-up-spend": {"task": "analytics.tasks.roll_up_spend", "schedule": 60.0},
    "settle-daily-spend": {"task": "analytics.tasks.settle_daily_spend", "schedule": 86400.0},
    "export-logs": {"task": "analytics.tasks.export_all_sinks", "schedule": 30.0},
    "prune-logs": {"task": "analytics.tasks.prune_request_logs", "schedule": 86400.0},
    "make-log-partitions": {"task": "analytics.tasks.make_log_partitions", "schedule": 86400.0},
    "scan-alerts": {"task": "webhooks.tasks.scan_all_alerts", "schedule": 15.0},
    "deliver-webhooks": {"task": "webhooks.tasks.deliver_all_due", "schedule": 30.0},
}
# The queue tasks go to when none is named (workers take it with --queues).
CELERY_TASK_DEFAULT_QUEUE = _read("CELERY_TASK_DEFAULT_QUEUE", env.str, "celery")
# A webhook delivery that failed is tried again after this many seconds, doubling up to 30
# minutes, for up to three days.
NEMO_WEBHOOK_RETRY_BASE_S = _read("NEMO_WEBHOOK_RETRY_BASE_S", env.float, 30.0)
if not 0.01 <= NEMO_WEBHOOK_RETRY_BASE_S <= 3600:
    raise ImproperlyConfigured(
        f"NEMO_WEBHOOK_RETRY_BASE_S must be 0.01 to 3600 seconds, not {NEMO_WEBHOOK_RETRY_BASE_S}")

NEMO_ROUTER_CONFIG = _read("NEMO_ROUTER_CONFIG", env.str, "") or None
if NEMO_ROUTER_CONFIG and not Path(NEMO_ROUTER_CONFIG).is_file():
    raise ImproperlyConfigured(f"NEMO_ROUTER_CONFIG points at {NEMO_ROUTER_CONFIG!r}, which is not a file")
NEMO_SIGNUP_CREDITS = "5.00"
# Export sinks may reach private, loopback and link-local addresses, over plain http too
# (analytics/exporters/destinations.py): for self-hosted services on the operator's own network.
NEMO_SINK_ALLOW_PRIVATE = _strict_bool("NEMO_SINK_ALLOW_PRIVATE", False)
NEMO_LOG_RETENTION_MONTHS = _read("NEMO_LOG_RETENTION_MONTHS", env.int, 13)
# Microseconds a gateway worker keeps polling after activity instead of sleeping (gateway/busypoll.py):
# lower latency for a busier CPU. 0, the default, is off.
NEMO_BUSY_POLL_US = _read("NEMO_BUSY_POLL_US", env.int, 0)
if not 0 <= NEMO_BUSY_POLL_US <= 1_000_000:
    raise ImproperlyConfigured(f"NEMO_BUSY_POLL_US must be 0 (off) to 1000000 microseconds, not {NEMO_BUSY_POLL_US}")

# A call that names no output limit is sent the most its budgets can still pay for (up to the
# model's maximum and the default below); a 402 only when not even NEMO_MIN_OUTPUT_TOKENS fit.
NEMO_MIN_OUTPUT_TOKENS = _read("NEMO_MIN_OUTPUT_TOKENS", env.int, 256)
if not 1 <= NEMO_MIN_OUTPUT_TOKENS <= 65_536:
    raise ImproperlyConfigured(f"NEMO_MIN_OUTPUT_TOKENS must be 1 to 65536, not {NEMO_MIN_OUTPUT_TOKENS}")

# The largest request body the proxy reads, in MiB; a larger one is a 413 (CONTRACT.md).
NEMO_MAX_BODY_MB = _read("NEMO_MAX_BODY_MB", env.int, 32)
if not 1 <= NEMO_MAX_BODY_MB <= 1024:
    raise ImproperlyConfigured(f"NEMO_MAX_BODY_MB must be 1 to 1024 (MiB), not {NEMO_MAX_BODY_MB}")

# ``GET /metrics`` asks for this as a Bearer token when it is set (Prometheus' ``authorization``).
NEMO_METRICS_TOKEN = _read("NEMO_METRICS_TOKEN", env.str, "") or None
# On SIGTERM, how long a gateway worker lets its calls in flight (streams) finish before it exits;
# ``/readyz`` answers 503 meanwhile. gunicorn's graceful timeout (gunicorn.conf.py) allows it.
NEMO_DRAIN_GRACE_S = _read("NEMO_DRAIN_GRACE_S", env.float, 30.0)
if not 0 <= NEMO_DRAIN_GRACE_S <= 3600:
    raise ImproperlyConfigured(f"NEMO_DRAIN_GRACE_S must be 0 to 3600 seconds, not {NEMO_DRAIN_GRACE_S}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "keys",
    "billing",
    "analytics",
    "webhooks",
    "gateway",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "nemo.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "nemo.wsgi.application"
ASGI_APPLICATION = "nemo.asgi.application"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# One date format across the dashboard and the admin (nemo/formats/en/formats.py).
FORMAT_MODULE_PATH = ["nemo.formats"]

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = (
    {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    if REDIS_URL and not REDIS_CLUSTER
    else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "dashboard.api.auth.OrgTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "dashboard.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nemo Router management API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The gateway's structured log (gateway/events.py): its JSON lines as they are.
    "formatters": {"line": {"format": "%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler"},
                 "events": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": _read("LOG_LEVEL", env.str, "INFO")},
    "loggers": {"gateway.events": {"handlers": ["events"], "level": "INFO", "propagate": False}},
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
