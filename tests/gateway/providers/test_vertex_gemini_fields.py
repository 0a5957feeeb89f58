"""The Chat Completions fields besides messages and tools, to Gemini and back: mapped where Gemini
has an equivalent, refused with the field's name where it has none (gateway/providers/fields.py)."""

import pytest
from openai.types.chat import ChatCompletion

from gateway.providers.shapes import Untranslatable
from gateway.providers.vertex_gemini import GeminiStreamDecoder, translate_request, translate_response
from tests.gateway.providers.support import GEMINI, OPENAI, cassette, decode, sse

MODEL = "gemini-2.5-flash"


def _simple(**fields) -> dict:
    return {**cassette(OPENAI, "simple")[0].request, **fields}


def _recorded_request() -> dict:
    return cassette(GEMINI, "simple")[0].request


@pytest.mark.parametrize("effort, model, config", [
    ("minimal", "gemini-2.5-flash", {"thinkingBudget": 512}),
    ("low", "gemini-2.5-flash", {"thinkingBudget": 1024}),
    ("medium", "gemini-2.5-flash", {"thinkingBudget": 8192}),
    ("high", "gemini-2.5-flash", {"thinkingBudget": 24576}),
    ("none", "gemini-2.5-flash-lite", {"thinkingBudget": 0}),
    # Pro cannot stop thinking (its least is 128) and thinks up to 32 768.
    ("none", "gemini-2.5-pro", {"thinkingBudget": 128}),
    ("xhigh", "gemini-2.5-pro", {"thinkingBudget": 32768}),
    ("xhigh", "gemini-2.5-flash", {"thinkingBudget": 24576}),
    # Gemini 3 thinks at levels; Pro knows only LOW and HIGH.
    ("medium", "gemini-3-flash-preview", {"thinkingLevel": "MEDIUM"}),
    ("minimal", "gemini-3-pro-preview", {"thinkingLevel": "LOW"}),
    ("medium", "gemini-3-pro-preview", {"thinkingLevel": "HIGH"}),
])
def test_reasoning_effort_becomes_the_thinking_config_of_the_recorded_request(effort, model, config) -> None:
    recorded = _recorded_request()

    translated = translate_request(_simple(reasoning_effort=effort), model=model)

    expected = {**recorded, "generationConfig": {**recorded["generationConfig"], "thinkingConfig": config}}
    assert translated == expected


def test_a_model_that_does_not_think_refuses_reasoning_effort() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_simple(reasoning_effort="low"), model="gemini-2.0-flash-001")

    assert (refused.value.param, refused.value.status, refused.value.retryable) == ("reasoning_effort", 400, False)


def test_an_unknown_reasoning_effort_is_refused_by_name() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_simple(reasoning_effort="extreme"), model=MODEL)

    assert refused.value.param == "reasoning_effort"


@pytest.mark.parametrize("fields, config", [
    ({"logprobs": True}, {"responseLogprobs": True}),
    ({"logprobs": True, "top_logprobs": 3}, {"responseLogprobs": True, "logprobs": 3}),
    ({"logprobs": False}, {}),
])
def test_logprobs_become_response_logprobs(fields, config) -> None:
    recorded = _recorded_request()

    translated = translate_request(_simple(**fields), model=MODEL)

    assert translated["generationConfig"] == {**recorded["generationConfig"], **config}


def test_top_logprobs_without_logprobs_is_refused_as_openai_does() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_simple(top_logprobs=2), model=MODEL)

    assert refused.value.param == "top_logprobs"


LOGPROBS_RESULT = {
    "topCandidates": [
        {"candidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "Hello", "logProbability": -2.5}]},
        {"candidates": [{"token": "!", "logProbability": -0.01}, {"token": ".", "logProbability": -4.7}]},
    ],
    "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "!", "logProbability": -0.01}],
}
OPENAI_LOGPROBS = {
    "content": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                          {"token": "Hello", "logprob": -2.5, "bytes": list(b"Hello")}]},
        {"token": "!", "logprob": -0.01, "bytes": [33],
         "top_logprobs": [{"token": "!", "logprob": -0.01, "bytes": [33]},
                          {"token": ".", "logprob": -4.7, "bytes": [46]}]},
    ],
    "refusal": None,
}


def _answer_with_logprobs() -> dict:
    answer = cassette(GEMINI, "simple")[0].response
    (candidate,) = answer["candidates"]
    return {**answer, "candidates": [{**candidate, "logprobsResult": LOGPROBS_RESULT, "avgLogprobs": -0.05}]}


def test_the_answers_logprobs_come_back_as_openais() -> None:
    translated = translate_response(_answer_with_logprobs(), model=MODEL)

    assert translated["choices"][0]["logprobs"] == OPENAI_LOGPROBS
    parsed = ChatCompletion.model_validate(translated)
    assert [token.token for token in parsed.choices[0].logprobs.content] == ["Hi", "!"]


def test_an_answer_without_logprobs_has_none() -> None:
    assert translate_response(cassette(GEMINI, "simple")[0].response, model=MODEL)["choices"][0]["logprobs"] is None


def test_a_streamed_answers_logprobs_come_with_its_text() -> None:
    answer = _answer_with_logprobs()

    chunks = decode(GeminiStreamDecoder(model=MODEL), sse(answer))

    (with_text,) = [chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["delta"].get("content")]
    assert with_text["choices"][0]["logprobs"] == OPENAI_LOGPROBS


def _with_tools(**fields) -> dict:
    return {**cassette(OPENAI, "tool")[0].request, **fields}


def test_parallel_tool_calls_false_is_refused_for_gemini_cannot_be_told_so() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_with_tools(parallel_tool_calls=False), model=MODEL)

    assert refused.value.param == "parallel_tool_calls"


@pytest.mark.parametrize("fields", [
    {"parallel_tool_calls": True},
    {"parallel_tool_calls": False, "tool_choice": "none"},
])
def test_parallel_tool_calls_that_ask_nothing_of_gemini_pass(fields) -> None:
    translated = translate_request(_with_tools(**fields), model=MODEL)

    assert translated["tools"] == cassette(GEMINI, "tool")[0].request["tools"]


def test_parallel_tool_calls_false_without_tools_asks_nothing() -> None:
    assert translate_request(_simple(parallel_tool_calls=False), model=MODEL) == _recorded_request()


@pytest.mark.parametrize("field, value", [
    ("logit_bias", {"50256": -100}),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
    ("functions", [{"name": "weather", "parameters": {"type": "object"}}]),
    ("function_call", "auto"),
    ("web_search_options", {}),
    ("verbosity", "low"),
])
def test_a_field_gemini_has_no_equivalent_of_is_refused_by_name(field, value) -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_simple(**{field: value}), model=MODEL)

    assert (refused.value.param, refused.value.status) == (field, 400)
    assert field in refused.value.message


@pytest.mark.parametrize("field, value", [
    ("user", "user-1"), ("metadata", {"team": "a"}), ("store", True), ("service_tier", "auto"),
    ("prediction", {"type": "content", "content": "Hi"}), ("logit_bias", {}), ("modalities", ["text"]),
])
def test_a_field_that_changes_nothing_of_the_answer_is_left_behind(field, value) -> None:
    assert translate_request(_simple(**{field: value}), model=MODEL) == _recorded_request()


def test_the_sampling_fields_gemini_has_are_mapped() -> None:
    translated = translate_request(
        _simple(n=2, seed=7, presence_penalty=0.5, frequency_penalty=-0.5, top_k=20, stop=["END"]), model=MODEL)

    assert translated["generationConfig"] == {
        **_recorded_request()["generationConfig"], "candidateCount": 2, "seed": 7, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "topK": 20, "stopSequences": ["END"],
    }
