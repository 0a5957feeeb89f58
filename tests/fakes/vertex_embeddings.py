"""A fake Vertex AI endpoint of Google's models that also embeds: ``:predict`` in the shape of the
Text Embeddings API reference (``predictions[].embeddings.values`` and ``.statistics``), with its
limits: ``gemini-embedding-001`` takes one instance a request, each model has its largest
``outputDimensionality``. Everything else is the Gemini fake's."""

from __future__ import annotations

from typing import Any

from gateway.providers.shapes import estimate_tokens
from tests.fakes.behaviours import Reply, Status
from tests.fakes.gemini import FakeGemini
from tests.fakes.server import ReceivedRequest, fake_vector

# Each model's vectors when no outputDimensionality is asked, which is also the most it makes.
DIMENSIONS = {"text-embedding-005": 768, "text-multilingual-embedding-002": 768, "gemini-embedding-001": 3072}


def _model(request: ReceivedRequest) -> str:
    return request.path.rsplit("/", 1)[-1].split(":")[0]


class FakeVertex(FakeGemini):
    @property
    def predictions(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path.endswith(":predict")]

    def is_stream(self, request: ReceivedRequest) -> bool:
        return not request.path.endswith(":predict") and super().is_stream(request)

    def refusal(self, request: ReceivedRequest) -> Status | None:
        if not request.path.endswith(":predict"):
            return super().refusal(request)
        model, body = _model(request), request.json
        if model not in DIMENSIONS:
            return Status(404, message=f"Publisher Model `{model}` not found.")
        instances = body.get("instances") or []
        if model == "gemini-embedding-001" and len(instances) > 1:
            return Status(400, message="Only one instance is allowed per request for gemini-embedding-001.")
        wanted = (body.get("parameters") or {}).get("outputDimensionality")
        if wanted is not None and not 1 <= wanted <= DIMENSIONS[model]:
            return Status(400, message=f"outputDimensionality must be at most {DIMENSIONS[model]}.")
        return None

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        if not request.path.endswith(":predict"):
            return super().answer(request, reply, stream=stream)
        body = request.json
        dimensions = (body.get("parameters") or {}).get("outputDimensionality") or DIMENSIONS[_model(request)]
        predictions = [
            {"embeddings": {"statistics": {"truncated": False, "token_count": estimate_tokens(instance["content"])},
                            "values": fake_vector(instance["content"], dimensions)}}
            for instance in body["instances"]
        ]
        characters = sum(len(instance["content"]) for instance in body["instances"])
        return {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
