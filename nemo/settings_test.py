"""Test settings: the real settings, with a fast password hasher, over plain HTTP."""

import os

# Production refuses to start without a key. Set in the environment, not here alone: servers and
# workers the tests start in processes of their own inherit it, and key hashes made here (HMACs
# over it) must match there.
os.environ.setdefault("SECRET_KEY", "nemo-test-secret-key-not-for-production-0123456789")

from nemo.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks run in the test process even when REDIS_URL gives Celery a broker; the tests that need a
# real worker start one themselves.
CELERY_TASK_ALWAYS_EAGER = True
# Django's test client and the browser tests' live server speak plain HTTP (tests/test_settings.py
# checks the production defaults).
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
