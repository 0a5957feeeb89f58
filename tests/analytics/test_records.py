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
