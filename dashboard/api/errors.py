"""Management-API errors in one shape: ``{"error": {"message", "type", "param", "code"}}``.

The same shape as the proxy's (OpenAI's), so a script can handle both the same way. A missing
object and another org's object both come out as the selector's Http404, hence the same body.
"""

from collections.abc import Iterator

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _errors(detail, path: tuple = ()) -> Iterator[tuple[tuple, str, str]]:
    """Every (field path, message, code) in a DRF error detail, however deeply nested."""
    if isinstance(detail, dict):
        for field, inner in detail.items():
            yield from _errors(inner, path + (field,))
    elif isinstance(detail, list):
        for inner in detail:
            yield from _errors(inner, path)
    else:
        yield path, str(detail), getattr(detail, "code", None) or "invalid"


def _param(path: tuple) -> str | None:
    """The top-level input field an error is about, as OpenAI names ``param``."""
    names = [str(part) for part in path if part not in ("non_field_errors", "detail")]
    return names[0] if names else None


def error_body(*, message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    error_type = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    found = list(_errors(response.data))
    param = _param(found[0][0]) if found else None
    if isinstance(exc, exceptions.ValidationError):
        message = "; ".join(f"{_param(path)}: {text}" if _param(path) else text for path, text, _ in found)
    else:
        message = found[0][1] if found else str(exc)
    code = found[0][2] if found else "error"
    response.data = error_body(message=message, status=response.status_code, param=param, code=code)
    return response
