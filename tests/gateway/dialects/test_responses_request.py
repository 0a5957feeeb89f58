"""A Responses request's 400s that the Chat Completions check of its Chat body makes, under the
Responses field's name (the check skips only what the Responses parser built valid), and the bound
of its prompt."""

import json

import orjson
import pytest

from gateway.dialects.chat_completions_request import LINKED_IMAGE_TOKENS
from gateway.dialects.responses_request import parse_responses_request
from gateway.errors import GatewayError


def parse(**body):
    raw = json.dumps({"model": "m", "input": "hi", **body}).encode()
    return parse_responses_request(raw, tags_header=None)


@pytest.mark.parametrize("body, message", [
    ({"tools": [{"type": "function", "name": "f", "description": 5}]},
     "tools[0].function.description must be a string"),
    ({"max_output_tokens": 0}, "max_output_tokens must be an integer from 1 to 2147483647"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "description": 5}}},
     "text.format.json_schema.description must be a string"),
    ({"reasoning": {"effort": "bogus"}}, "reasoning.effort must be one of none, minimal, low, medium, high, xhigh"),
    ({"temperature": 3}, "temperature must be a number from 0 to 2"),
])
def test_a_field_chat_completions_refuses_is_a_400_naming_the_responses_field(body, message):
    with pytest.raises(GatewayError) as refused:
        parse(**body)
    assert (refused.value.status, refused.value.message) == (400, message)
    assert refused.value.param == message.split(" ")[0]


def test_every_kind_of_input_item_makes_a_chat_body_without_a_400():
    request = parse(instructions="Be brief.", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
                                     {"type": "input_file", "file_id": "file_1"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"}])

    assert [message["role"] for message in request.body["messages"]] == ["system", "user", "assistant", "tool"]
    assert request.body["messages"][2]["tool_calls"][0]["id"] == "call_1"


def test_a_string_input_is_bounded_by_its_chat_bodys_bytes_and_an_image_by_url_by_what_an_image_costs():
    text = parse(instructions="Be brief.", input="hi")
    image = parse(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}])

    assert text.prompt_bytes == len(orjson.dumps(text.body))
    assert image.prompt_bytes == len(orjson.dumps(image.body)) + LINKED_IMAGE_TOKENS
