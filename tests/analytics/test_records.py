import pytest

from analytics.records import prompt_meta, tool_calls_of

ASSISTANT = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "tides"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "fetch", "arguments": '{"url": "x"}'}},
    ],
}


def test_tool_calls_of_an_assistant_message_are_names_and_arguments():
    assert tool_calls_of(ASSISTANT) == [
        {"name": "search", "arguments": '{"q": "tides"}'},
        {"name": "fetch", "arguments": '{"url": "x"}'},
    ]


def test_a_message_without_tool_calls_has_none():
    assert tool_calls_of({"role": "assistant", "content": "Hello"}) == []


def test_prompt_meta_counts_messages_roles_and_characters():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "u"}}]},
        ASSISTANT,
        {"role": "tool", "tool_call_id": "call_1", "content": "high at noon"},
    ]

    assert prompt_meta(messages) == {
        "messages": 4,
        "roles": ["system", "user", "assistant", "tool"],
        "sizes": [9, 2, len("search") + 14 + len("fetch") + 12, 12],
    }


ODD_MESSAGES = [
    {"role": "user", "content": [{"type": "text", "text": 5}]},
    {"role": "user", "content": [{"type": "text", "text": ["a"]}, "part", None]},
    {"role": "user", "content": 5},
    {"role": "assistant", "tool_calls": [{"function": {"name": "search", "arguments": 5}}]},
    {"role": "assistant", "tool_calls": [{"function": {"name": 5, "arguments": {"q": 1}}}, "call", {"function": 5}]},
    {"role": "assistant", "tool_calls": "calls", "function_call": {"name": None, "arguments": []}},
    {"role": 5, "content": "x"},
    "not a message",
]


@pytest.mark.parametrize("message", ODD_MESSAGES)
def test_prompt_meta_never_fails_whatever_a_message_holds(message):
    meta = prompt_meta([message])

    assert meta["messages"] == 1 and len(meta["roles"]) == len(meta["sizes"]) == 1


def test_what_is_not_text_counts_for_nothing():
    messages = [{"role": "user", "content": [{"type": "text", "text": 5}, {"type": "text", "text": "Hi"}]},
                {"role": "assistant", "tool_calls": [{"function": {"name": "search", "arguments": 5}}]}]

    assert prompt_meta(messages)["sizes"] == [2, len("search")]


def test_tool_calls_of_keeps_only_string_names_and_arguments():
    message = {"role": "assistant", "tool_calls": [{"function": {"name": 5, "arguments": {"q": 1}}}, "call"]}

    assert tool_calls_of(message) == [{"name": "", "arguments": ""}]
