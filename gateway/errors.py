"""Errors the proxy answers with, in OpenAI's shape (CONTRACT.md, the error table)."""

from __future__ import annotations

import math

from billing.reservations import (
    BudgetRefused,
    CountersUnavailable,
    LedgerUnavailable,
    RateLimited,
    Refused,
    RunLoopDetected,
    RunStepsRefused,
)
from counters import RUN_STATE_TTL_S


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, *, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, type="invalid_request_error", param=param, code="invalid_request")


def invalid_api_key(message: str = "Invalid, revoked or expired API key.") -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def budget_exceeded(message: str, *, param: str) -> GatewayError:
    return GatewayError(402, message, type="budget_exceeded", code="budget_exceeded", param=param)


def run_steps_exceeded(message: str) -> GatewayError:
    return GatewayError(402, message, type="budget_exceeded", code="run_max_steps", param="run")


def run_loop_detected(message: str) -> GatewayError:
    """A run the loop guard stopped stays stopped while the store keeps its state: its
    ``Retry-After`` says so (an SDK retries sooner all the same, and is refused again)."""
    return GatewayError(429, message, type="rate_limit_error", code="run_loop_detected", param="run",
                        headers={"retry-after": str(RUN_STATE_TTL_S)})


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(403, f"This key may not use the model {model!r}.", type="permission_error",
                        code="model_not_allowed", param="model")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(404, f"The model {model!r} does not exist.", type="not_found_error",
                        code="model_not_found", param="model")


def rate_limited(message: str, *, retry_after: float, headers: dict[str, str]) -> GatewayError:
    seconds = max(1, int(retry_after + 0.999))
    return GatewayError(429, message, type="rate_limit_error", code="rate_limit_exceeded",
                        headers={**headers, "retry-after": str(seconds)})


def upstream_rate_limited(message: str, *, retry_after_s: float) -> GatewayError:
    """Every link of the chain is rate limited by its provider: the client should back off, not
    fail (an SDK retries a 429 after its ``Retry-After``)."""
    return GatewayError(429, message, type="rate_limit_error", code="upstream_rate_limited",
                        headers={"retry-after": str(max(1, math.ceil(retry_after_s)))})


def upstream_failed(message: str) -> GatewayError:
    return GatewayError(502, message, type="upstream_error", code="upstream_error")


def service_unavailable(message: str, *, code: str, retry_after_s: int = 1) -> GatewayError:
    """The gateway cannot keep its promises right now (its database or counters are unreachable):
    the call is refused before anything is sent upstream, and the client may retry."""
    return GatewayError(503, message, type="service_unavailable_error", code=code,
                        headers={"retry-after": str(retry_after_s)})


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(500, f"The gateway failed to handle this request ({request_id}); it has been logged.",
                        type="api_error", code="internal_error")


def refusal_error(refused: Refused) -> GatewayError:
    """Billing's refusal of a call, as the contract answers it."""
    if isinstance(refused, RunStepsRefused):
        return run_steps_exceeded(refused.message)
    if isinstance(refused, RunLoopDetected):
        return run_loop_detected(refused.message)
    if isinstance(refused, BudgetRefused):
        return budget_exceeded(refused.message, param=refused.param)
    if isinstance(refused, RateLimited):
        return rate_limited(refused.message, retry_after=refused.retry_after, headers=refused.headers)
    if isinstance(refused, CountersUnavailable):
        return service_unavailable(refused.message, code="counters_unavailable")
    if isinstance(refused, LedgerUnavailable):
        return service_unavailable(refused.message, code="database_unavailable")
    raise TypeError(f"no error of the contract for {refused!r}")
