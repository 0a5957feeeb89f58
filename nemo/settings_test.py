"""Test settings: the real settings, with a fast password hasher."""

from nemo.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks run in the test process even when REDIS_URL gives Celery a broker; the tests that need a
# real worker start one themselves.
CELERY_TASK_ALWAYS_EAGER = True
