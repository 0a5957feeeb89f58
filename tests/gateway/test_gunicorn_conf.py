"""gunicorn.conf.py's hooks, run as gunicorn runs them on a worker."""

import runpy
from pathlib import Path
from types import SimpleNamespace

from uvicorn import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


async def app(scope, receive, send) -> None:
    pass


def test_a_worker_serves_the_app_without_uvicorns_proxy_headers_middleware():
    """X-Forwarded-For and -Proto count only where NEMO_TRUST_X_FORWARDED_FOR / _PROTO say so:
    uvicorn's middleware would rewrite the client's address and scheme from them whenever the
    peer is 127.0.0.1 (and costs every call a parse of the peer's address)."""
    hooks = runpy.run_path(str(CONF))
    # As UvicornWorker makes its config (proxy_headers is uvicorn's default, True).
    untouched, hooked = Config(app=app, log_config=None), Config(app=app, log_config=None)
    hooks["post_worker_init"](SimpleNamespace(config=hooked))
    untouched.load()
    hooked.load()

    assert isinstance(untouched.loaded_app, ProxyHeadersMiddleware)
    assert not isinstance(hooked.loaded_app, ProxyHeadersMiddleware)
