"""What both Vertex AI wire formats share: endpoint layout, OAuth, Google's error shape."""

from __future__ import annotations

import json
from typing import Any

from gateway.providers.base import Provider, ProviderConfig, UpstreamError, classify_status
from gateway.providers.google_auth import token_source


class VertexProvider(Provider):
    publisher: str

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        options = config.options
        if not options.get("project"):
            raise ValueError(f"provider {config.name}: 'project' is required")
        self.project: str = options["project"]
        self.location: str = options.get("location") or "us-central1"
        self.base_url = (options.get("base_url") or _default_base_url(self.location)).rstrip("/")
        self.tokens = token_source(options.get("credentials"))

    def model_url(self, model: str, method: str) -> str:
        return (
            f"{self.base_url}/v1/projects/{self.project}/locations/{self.location}"
            f"/publishers/{self.publisher}/models/{model}:{method}"
        )

    def credentials_ready(self) -> bool:
        return self.tokens.fresh()

    async def auth_headers(self) -> dict[str, str]:
        token = await self.tokens.token()
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def classify_error(self, *, status: int, headers: Any, body: bytes) -> UpstreamError:
        error = google_error(json_or_none(body))
        message = _google_error_message(error) if error else body[:500].decode("utf-8", "replace")
        return classify_status(status, headers, message)


def _default_base_url(location: str) -> str:
    # The global endpoint has no region in its host name.
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def google_error(data: Any) -> dict | None:
    """The ``error`` of ``{"error": {...}}``; streamed calls wrap it in an array."""
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return None


def _google_error_message(error: dict) -> str:
    return f"{error.get('status') or error.get('code')}: {error.get('message', '')}"


def google_stream_error(error: dict) -> UpstreamError:
    """An error sent inside a 200 stream: its ``code`` is the HTTP status it stands for."""
    code = error.get("code")
    return classify_status(code if isinstance(code, int) else 500, None, _google_error_message(error))
