"""Google's embedding models on Vertex AI: ``:predict`` on the publisher model
(``text-embedding-005``, ``text-multilingual-embedding-002``, ``gemini-embedding-001``).

The request is ``{"instances": [{"content": ...}], "parameters":
{"outputDimensionality"?: ...}}``; the answer ``{"predictions": [{"embeddings": {"values": [...],
"statistics": {"token_count": ..., "truncated": ...}}}]}``, one prediction an instance, in order.
``gemini-embedding-001`` takes one instance a request; the others up to ``MAX_INSTANCES``: a
list of inputs goes in as many requests as that takes, sent together.

The Gemini provider (``vertex_gemini``) is one of these, so one provider entry serves a project's
Gemini models and its embedding models alike.
"""

from __future__ import annotations

import json

from gateway.providers.base import UpstreamError, UpstreamRequest
from gateway.providers.shapes import embedding_inputs, estimate_tokens, load_upstream_json, untranslatable
from gateway.providers.vertex import VertexProvider, google_error, google_stream_error

MAX_INSTANCES = 250
# Models that take a single instance a request (by the start of their id).
ONE_INSTANCE_MODELS = ("gemini-embedding",)


class VertexGoogleProvider(VertexProvider):
    """A Vertex provider of Google's own models, which can embed."""

    publisher = "google"

    async def prepare_embedding(self, *, body: dict, model: str) -> list[UpstreamRequest]:
        texts = embedding_inputs(body)
        if not all(isinstance(text, str) for text in texts):
            raise untranslatable("Vertex AI embedding models take text inputs, not token arrays", param="input")
        payload: dict = {}
        if body.get("dimensions"):
            payload["parameters"] = {"outputDimensionality": body["dimensions"]}
        size = 1 if model.startswith(ONE_INSTANCE_MODELS) else MAX_INSTANCES
        url, headers = self.model_url(model, "predict"), await self.auth_headers()
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        return [
            UpstreamRequest(url=url, headers=headers, body=json.dumps(
                {"instances": [{"content": text} for text in batch], **payload}).encode())
            for batch in batches
        ]

    def parse_embedding(self, *, bodies: list[bytes], body: dict, model: str) -> dict:
        texts = embedding_inputs(body)
        data: list[dict] = []
        tokens = 0
        for raw in bodies:
            answer = load_upstream_json(raw)
            if error := google_error(answer):
                raise google_stream_error(error)
            predictions = answer.get("predictions") if isinstance(answer, dict) else None
            if not isinstance(predictions, list):
                raise UpstreamError("server", f"unexpected answer: {raw[:200]!r}")
            for prediction in predictions:
                embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
                values = embeddings.get("values") if isinstance(embeddings, dict) else None
                if not isinstance(values, list):
                    raise UpstreamError("server", f"unexpected prediction: {str(prediction)[:200]}")
                count = (embeddings.get("statistics") or {}).get("token_count")
                if isinstance(count, int | float) and not isinstance(count, bool):
                    tokens += int(count)
                elif len(data) < len(texts):
                    tokens += estimate_tokens(texts[len(data)])
                data.append({"object": "embedding", "index": len(data), "embedding": values})
        if len(data) != len(texts):
            raise UpstreamError("server", f"{len(data)} embeddings for {len(texts)} inputs")
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
