import base64
import struct

import orjson
import pytest

from gateway.dialects.embeddings import encoded, parse_embedding_request
from gateway.errors import GatewayError


def _parse(body: dict, tags_header: str | None = None):
    return parse_embedding_request(orjson.dumps(body), tags_header=tags_header)


def test_the_internal_call_keeps_the_body_without_nemos_fields_and_reserves_its_bytes():
    body = {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "tags": ["eu"], "dimensions": 3}
    request = _parse(body, tags_header="fast")

    assert request.body == {"model": "m", "input": ["a", "b"], "dimensions": 3}
    assert (request.method, request.stream, request.use_cache, request.encoding_format) == (
        "embed", False, False, "base64")
    assert request.tags == {"eu", "fast"}
    assert request.prompt_bytes == len(orjson.dumps(body))
    assert request.messages == [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2], [[1, 2], [3]]])
def test_the_input_kinds_openai_takes_are_accepted(value):
    assert _parse({"model": "m", "input": value}).body["input"] == value


@pytest.mark.parametrize("value", [5, "", [], ["a", ""], ["a", [1]], [[1], []], [-1], [True], {"text": "a"},
                                   ["a"] * 2049])
def test_other_inputs_are_a_400_naming_input(value):
    with pytest.raises(GatewayError) as caught:
        _parse({"model": "m", "input": value})

    assert (caught.value.status, caught.value.param) == (400, "input")


def test_base64_is_float32_little_endian():
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0, -2.5]}]}

    data = encoded(answer, "base64")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(data)) == (1.0, -2.5)
    assert encoded(answer, "float") is answer
