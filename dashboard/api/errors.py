"""Management-API errors in one shape: ``{"error": {"message", "type", "param", "code"}}``."""

from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    param = None
    if isinstance(detail, dict) and "detail" not in detail:
        param = next(iter(detail), None)
        messages = detail[param] if param else detail
        message = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
    elif isinstance(detail, dict):
        message = str(detail["detail"])
    else:
        message = "; ".join(str(m) for m in detail)
    code = getattr(exc, "default_code", "error")
    error_type = "invalid_request_error" if response.status_code == 400 else code
    response.data = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return response
