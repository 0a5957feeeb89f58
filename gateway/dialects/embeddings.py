"""``POST /v1/embeddings``: OpenAI's Embeddings API, over the same pipeline as chat.

The request is checked here and goes on as the internal call (``EmbeddingRequest``), which the
pipeline treats as it treats a chat request: the same key, limits, reservation (its prompt only:
an embedding has no output), chain, log row and settle. What differs is the provider method the
call step uses (``method = "embed"``) and that it never streams nor comes from the cache.

Providers always answer in floats (the internal form); ``encoding_format: "base64"`` is applied
here, as OpenAI encodes it: the vector's float32 values, little-endian, in base64. That is what
the ``openai`` SDK asks for when its caller does not say.

Every field is checked, and a field OpenAI's API does not know is a 400 naming it, as OpenAI
answers it: no wire format would carry it, and none is dropped silently.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from gateway.dialects.chat_completions_request import _tag_set
from gateway.errors import GatewayError, invalid_request
from gateway.http import header, json_object, send_json
from gateway.providers.shapes import embedding_inputs

ENCODING_FORMATS = ("float", "base64")
# OpenAI's own limits: inputs a request, and the dimensions any model can be asked for.
MAX_INPUTS = 2048
MAX_DIMENSIONS = 65_536
NEMO_FIELDS = ("tags", "encoding_format")
FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user", "tags"})


@dataclass(slots=True)
class EmbeddingRequest:
    """The internal form of an embeddings call: what the pipeline reads of a ``ChatRequest``,
    with what an embedding is (no stream, no output, no cache)."""

    body: dict  # what goes upstream: ``model``, ``input``, ``dimensions``, ``user``
    model: str
    tags: frozenset[str]
    prompt_bytes: int
    encoding_format: str = "float"
    method = "embed"
    has_output = False
    charged = True
    stream = False
    include_usage = False
    max_tokens = None
    n = 1
    use_cache = False
    has_tools = False
    metadata = None

    @staticmethod
    def logged_answer(answer: dict) -> dict:
        return without_vectors(answer)

    @property
    def messages(self) -> list[dict]:
        """Each input as a user message, for the log's prompt summary."""
        return [{"role": "user", "content": text if isinstance(text, str) else ""}
                for text in embedding_inputs(self.body)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(token) and token >= 0 for token in value)


def _check_input(value) -> None:
    if isinstance(value, str):
        if not value:
            raise invalid_request("input must not be an empty string", param="input")
        return
    if _is_tokens(value):
        return
    if not isinstance(value, list) or not value:
        raise invalid_request("input must be a string, a list of strings or a list of token arrays", param="input")
    if len(value) > MAX_INPUTS:
        raise invalid_request(f"input may hold at most {MAX_INPUTS} items", param="input")
    strings = all(isinstance(item, str) and item for item in value)
    if not strings and not all(_is_tokens(item) for item in value):
        raise invalid_request("input must be non-empty strings, or non-empty token arrays, all of one kind",
                              param="input")


def parse_embedding_request(raw: bytes, *, tags_header: str | None) -> EmbeddingRequest:
    body = json_object(raw)
    unknown = sorted(name for name in body if name not in FIELDS)
    if unknown:
        raise invalid_request(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model is required", param="model")
    if body.get("input") is None:
        raise invalid_request("input is required", param="input")
    _check_input(body["input"])
    dimensions = body.get("dimensions")
    if dimensions is not None and not (_is_int(dimensions) and 1 <= dimensions <= MAX_DIMENSIONS):
        raise invalid_request(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}", param="dimensions")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid_request("encoding_format must be 'float' or 'base64'", param="encoding_format")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise invalid_request("user must be a string", param="user")
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, str) or (isinstance(tags, list)
                                                          and all(isinstance(t, str) for t in tags))):
        raise invalid_request("tags must be a string or a list of strings", param="tags")
    return EmbeddingRequest(
        body={k: v for k, v in body.items() if k not in NEMO_FIELDS},
        model=model,
        tags=_tag_set(tags, tags_header),
        # As for chat: no tokenizer makes more tokens than the input has bytes.
        prompt_bytes=len(raw),
        encoding_format=encoding_format,
    )


def without_vectors(answer: dict) -> dict:
    """The answer as the request log keeps it: each vector's size, not its values (a list of
    inputs at 3072 dimensions would be megabytes a row)."""
    data = [{"object": "embedding", "index": item["index"], "dimensions": len(item["embedding"])}
            for item in answer["data"]]
    return {**answer, "data": data}


def encoded(answer: dict, encoding_format: str) -> dict:
    """The providers' answer (floats) in the encoding the client asked for."""
    if encoding_format == "float":
        return answer
    data = [{**item, "embedding": base64.b64encode(struct.pack(f"<{len(item['embedding'])}f",
                                                               *item["embedding"])).decode()}
            for item in answer["data"]]
    return {**answer, "data": data}


class Embeddings:
    endpoint = "embeddings"

    def parse(self, raw: bytes, scope) -> EmbeddingRequest:
        return parse_embedding_request(raw, tags_header=header(scope, b"x-nemo-tags"))

    async def answer(self, send, request: EmbeddingRequest, completion: dict, headers: dict[str, str]) -> None:
        await send_json(send, 200, encoded(completion, request.encoding_format), headers)

    async def refuse(self, send, error: GatewayError, headers: dict[str, str]) -> None:
        await send_json(send, error.status, error.body(), headers)
