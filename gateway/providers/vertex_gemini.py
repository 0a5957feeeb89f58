"""Gemini on Vertex AI: ``generateContent`` and ``streamGenerateContent?alt=sse``.

Gemini has no tool call ids and signs its function calls (``thoughtSignature``); the signature
must come back on the next turn. OpenAI clients only echo the assistant message, so the
signature travels inside the tool call id we mint: ``call_<24 alphanumerics>_sig_<signature>``,
base64url so the id stays within the characters every wire format accepts.

A call that asks to see the thinking (``thinking_budget``, an Anthropic client's) gets Gemini's
thought summaries as ``reasoning_content`` and the answer's first signature beside them
(``reasoning_signature``, gateway/providers/thinking.py); an assistant turn that brings that
signature back has it on its first function call, or else on its first text, where it came.

Over 400 lines: the request, Gemini's JSON Schema subset and the answer (whole and streamed) are
one translation, read together.
"""

from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import dataclass
from typing import Any

from gateway.providers.base import StreamDecoder, UpstreamError, UpstreamRequest
from gateway.providers.fields import (
    gemini_logprobs,
    gemini_thinking_config,
    openai_logprobs,
    reasoning_effort,
    refuse,
    refuse_uncarried,
)
from gateway.providers.shapes import (
    ChunkMaker,
    append_turn,
    arguments_json,
    choice,
    completion,
    image_url,
    load_upstream_json,
    max_output_tokens,
    message_texts,
    new_completion_id,
    new_tool_call_id,
    parse_arguments,
    parse_data_uri,
    request_functions,
    stop_sequences,
    tool_call,
    untranslatable,
    usage,
)
from gateway.providers.sse import JSONEventDecoder
from gateway.providers.thinking import THINKING_BUDGET, gemini_signature, gemini_signed
from gateway.providers.vertex import google_error, google_stream_error
from gateway.providers.vertex_embeddings import VertexGoogleProvider

_SIGNED_ID = re.compile(r"^call_[A-Za-z0-9]{24}_sig_(?P<signature>[A-Za-z0-9_-]+)$")
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
    # Not OpenAI's, but what some clients send; Gemini takes it.
    "top_k": "topK",
}
# What translate_request carries to Gemini; any other field that asks for something is refused
# (gateway/providers/fields.py).
CARRIED = frozenset({
    *_GENERATION_FIELDS, "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
    "max_tokens", "max_completion_tokens", "stop", "logprobs", "top_logprobs", "reasoning_effort",
    THINKING_BUDGET,
})
# The OpenAPI subset of JSON Schema that Gemini takes as is; anything else is dropped.
_SCHEMA_FIELDS = {
    "description", "title", "nullable", "default", "example", "pattern", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "propertyOrdering",
}  # fmt: skip
# Tuples, not sets: a client's format may be a list, which no set can be asked about.
_SCHEMA_FORMATS = {"STRING": ("enum", "date-time"), "INTEGER": ("int32", "int64"), "NUMBER": ("float", "double")}
# How deep a converted schema may nest, and how many schemas it may inline to: each definition
# naming the next one twice would double a small schema at every level.
MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_NODES = 10_000


class VertexGeminiProvider(VertexGoogleProvider):
    """Gemini's own calls; a deployment of an embedding model embeds (vertex_embeddings.py)."""

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        payload = translate_request(body, output_cap=output_cap, model=model)
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return UpstreamRequest(
            url=self.model_url(model, method),
            headers=await self.auth_headers(),
            body=json.dumps(payload).encode(),
        )

    def parse_response(self, *, body: bytes, model: str) -> dict:
        data = load_upstream_json(body)
        if error := google_error(data):
            raise google_stream_error(error)
        return translate_response(data, model=model)

    def stream_decoder(self, *, model: str, body: dict) -> StreamDecoder:
        return GeminiStreamDecoder(model=model, thoughts=bool(body.get(THINKING_BUDGET)))


# --- thought signatures in tool call ids ----------------------------------------------------


def signed_tool_call_id(signature: str | None) -> str:
    call_id = new_tool_call_id()
    if not signature:
        return call_id
    return f"{call_id}_sig_{signature.replace('+', '-').replace('/', '_').rstrip('=')}"


def signature_from_tool_call_id(call_id: str) -> str | None:
    match = _SIGNED_ID.match(call_id)
    if not match:
        return None
    signature = match["signature"].replace("-", "+").replace("_", "/")
    return signature + "=" * (-len(signature) % 4)


# --- OpenAI request -> Gemini request --------------------------------------------------------


def translate_request(body: dict, *, output_cap: int | None = None, model: str = "") -> dict:
    """``model``: the link's model id, which says how the model thinks (``reasoning_effort``)."""
    refuse_uncarried(body, wire="Gemini", carried=CARRIED)
    system_parts, contents = _contents(body.get("messages") or [])
    payload: dict[str, Any] = {"contents": contents}
    if system_parts:
        payload["systemInstruction"] = {"role": "user", "parts": system_parts}
    if generation_config := _generation_config(body, output_cap, model):
        payload["generationConfig"] = generation_config
    if functions := request_functions(body):
        if body.get("parallel_tool_calls") is False and body.get("tool_choice") != "none":
            # Gemini may call several functions in a turn, and no setting of it says otherwise.
            raise refuse("parallel_tool_calls", "Gemini cannot be told to call one function at a time")
        payload["tools"] = [{"functionDeclarations": [_function_declaration(f) for f in functions]}]
        if body.get("tool_choice") is not None:
            payload["toolConfig"] = {"functionCallingConfig": _function_calling_config(body["tool_choice"])}
    return payload


def _contents(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    system_parts: list[dict] = []
    contents: list[dict] = []
    # Gemini answers a call by function name; OpenAI by call id.
    call_names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system_parts += _text_parts(message_texts(content))
        elif role == "user":
            append_turn(contents, "user", _user_parts(content), key="parts")
        elif role == "assistant":
            parts = _text_parts(message_texts(content))
            for call in message.get("tool_calls") or []:
                call_names[call.get("id", "")] = call["function"]["name"]
                parts.append(_function_call_part(call))
            if parts and (signature := gemini_signature(message.get("reasoning_signature"))):
                signed = next((part for part in parts if "functionCall" in part), parts[0])
                signed["thoughtSignature"] = signature
            append_turn(contents, "model", parts, key="parts")
        elif role == "tool":
            name = call_names.get(message.get("tool_call_id", "")) or message.get("name")
            if not name:
                raise untranslatable(f"tool message answers unknown tool call {message.get('tool_call_id')!r}")
            result = "".join(message_texts(content))
            response = {"functionResponse": {"name": name, "response": {"result": result}}}
            append_turn(contents, "user", [response], key="parts")
        else:
            raise untranslatable(f"unsupported message role {role!r}")
    return system_parts, contents


def _text_parts(texts: list[str]) -> list[dict]:
    # Vertex refuses empty text parts, which OpenAI clients do send (content "" beside tool calls).
    return [{"text": text} for text in texts if text]


def _user_parts(content: str | list | None) -> list[dict]:
    if content is None or isinstance(content, str):
        return _text_parts(message_texts(content))
    return [part for item in content if (part := _user_part(item))]


def _user_part(part: dict) -> dict | None:
    kind = part.get("type")
    if kind == "text":
        return {"text": part["text"]} if part["text"] else None
    if kind == "image_url":
        url = image_url(part)
        if inline := parse_data_uri(url):
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        mime = mimetypes.guess_type(url)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    if kind == "input_audio":
        audio = part["input_audio"]
        return {"inlineData": {"mimeType": f"audio/{audio['format']}", "data": audio["data"]}}
    if kind == "file" and (inline := parse_data_uri(part["file"].get("file_data", ""))):
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    raise untranslatable(f"unsupported content part {kind!r}")


def _function_call_part(call: dict) -> dict:
    function = call["function"]
    part: dict[str, Any] = {
        "functionCall": {"name": function["name"], "args": parse_arguments(function.get("arguments"))}
    }
    if signature := signature_from_tool_call_id(call.get("id", "")):
        part["thoughtSignature"] = signature
    return part


def _generation_config(body: dict, output_cap: int | None, model: str) -> dict:
    config = {gemini: body[openai] for openai, gemini in _GENERATION_FIELDS.items() if body.get(openai) is not None}
    config.update(gemini_logprobs(body))
    budget = body.get(THINKING_BUDGET)
    if effort := reasoning_effort(body):
        config["thinkingConfig"] = gemini_thinking_config(effort, model, budget=budget)
        if budget:
            config["thinkingConfig"]["includeThoughts"] = True
    if max_tokens := max_output_tokens(body) or output_cap:
        config["maxOutputTokens"] = max_tokens
    if stop := stop_sequences(body):
        config["stopSequences"] = stop
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if schema := (response_format.get("json_schema") or {}).get("schema"):
        config["responseSchema"] = gemini_schema(schema)
    return config


def _function_declaration(function: dict) -> dict:
    declaration = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters") or {}
    # Gemini refuses an object schema without properties: a function without parameters has none.
    if parameters.get("properties"):
        declaration["parameters"] = gemini_schema(parameters)
    return declaration


def _function_calling_config(tool_choice: str | dict) -> dict:
    if isinstance(tool_choice, str):
        return {"mode": _TOOL_CHOICE_MODES.get(tool_choice, "AUTO")}
    return {"mode": "ANY", "allowedFunctionNames": [tool_choice["function"]["name"]]}


def gemini_schema(schema: dict) -> dict:
    """JSON Schema as Gemini takes it: upper-case types, ``nullable`` instead of a null type,
    ``anyOf`` for unions, ``$ref`` inlined, string enums, unknown keywords dropped."""
    return _SchemaConversion(schema).convert(schema, frozenset(), 0)


class _SchemaConversion:
    """The conversion of one client's schema, which may hold anything: what it cannot read, or
    what would not end (``$ref`` chains, definitions that multiply), is the client's 400."""

    def __init__(self, root: dict) -> None:
        definitions = root.get("$defs") or root.get("definitions") or {}
        if not isinstance(definitions, dict):
            raise _malformed("$defs must be an object of schemas")
        self.definitions = definitions
        self.converted = 0

    def convert(self, schema, expanding: frozenset[str], depth: int) -> dict:
        self.converted += 1
        if depth > MAX_SCHEMA_DEPTH or self.converted > MAX_SCHEMA_NODES:
            raise _malformed(f"it nests more than {MAX_SCHEMA_DEPTH} levels or inlines to more than "
                             f"{MAX_SCHEMA_NODES} schemas")
        if not isinstance(schema, dict):
            raise _malformed("a schema must be an object")
        if "$ref" in schema:
            return self._inline(schema, expanding, depth)

        converted = {key: schema[key] for key in _SCHEMA_FIELDS if key in schema}
        types = _type_names(schema)
        if "null" in types:
            types.remove("null")
            converted["nullable"] = True
        if len(types) == 1:
            converted["type"] = types[0].upper()
        elif types:
            converted["anyOf"] = [{"type": kind.upper()} for kind in types]

        variants = _schema_list(schema, "anyOf") or _schema_list(schema, "oneOf")
        non_null = [variant for variant in variants if not _is_null_schema(variant)]
        if len(non_null) < len(variants):
            converted["nullable"] = True
        every = _schema_list(schema, "allOf")
        if len(non_null) == 1 or len(every) == 1:
            only = non_null[0] if len(non_null) == 1 else every[0]
            converted = {**self.convert(only, expanding, depth + 1), **converted}
        elif non_null:
            converted["anyOf"] = [self.convert(variant, expanding, depth + 1) for variant in non_null]

        # Gemini only enumerates strings.
        values = [schema["const"]] if "const" in schema else _schema_list(schema, "enum")
        if values and all(isinstance(value, str) for value in values):
            converted["enum"] = values
        if schema.get("format") in _SCHEMA_FORMATS.get(converted.get("type", ""), ()):
            converted["format"] = schema["format"]
        properties = schema.get("properties")
        if isinstance(properties, dict):
            converted["properties"] = {
                name: self.convert(sub, expanding, depth + 1) for name, sub in properties.items()
            }
            required = _schema_list(schema, "required")
            converted["required"] = [name for name in required if isinstance(name, str) and name in properties]
            if not converted["required"]:
                del converted["required"]
        if "properties" in converted and "type" not in converted:
            converted["type"] = "OBJECT"
        if isinstance(schema.get("items"), dict):
            converted["items"] = self.convert(schema["items"], expanding, depth + 1)
        return converted

    def _inline(self, schema: dict, expanding: frozenset[str], depth: int) -> dict:
        reference = schema["$ref"]
        if not isinstance(reference, str):
            raise _malformed("$ref must be a string")
        name = reference.rsplit("/", 1)[-1]
        # A recursive definition cannot be inlined; its inner level becomes a free object.
        if name in expanding:
            return {"type": "OBJECT"}
        definition = self.definitions.get(name, {})
        if not isinstance(definition, dict):
            raise _malformed(f"the definition {name!r} must be a schema")
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        return self.convert({**definition, **siblings}, expanding | {name}, depth + 1)


def _malformed(reason: str) -> UpstreamError:
    return untranslatable(f"the JSON schema is not one that can be sent to Gemini: {reason}")


def _is_null_schema(schema) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _type_names(schema: dict) -> list[str]:
    types = schema.get("type") or []
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not all(isinstance(kind, str) for kind in types):
        raise _malformed("type must be a type name or a list of them")
    return list(types)


def _schema_list(schema: dict, keyword: str) -> list:
    value = schema.get(keyword) or []
    if not isinstance(value, list):
        raise _malformed(f"{keyword} must be a list")
    return value


# --- Gemini answer -> OpenAI answer -----------------------------------------------------------


def translate_response(data: dict, *, model: str) -> dict:
    candidates = _candidates(data)
    if not candidates:
        raise UpstreamError("server", "answer without candidates")
    choices = []
    for position, candidate in enumerate(candidates):
        output = _candidate_output(candidate)
        reason = _finish_reason(candidate.get("finishReason"), called_tools=bool(output.tool_calls))
        answer = choice(index=candidate.get("index", position), text=output.text, tool_calls=output.tool_calls,
                        finish_reason=reason, logprobs=openai_logprobs(candidate.get("logprobsResult")))
        if output.thoughts:
            answer["message"]["reasoning_content"] = output.thoughts
            if output.signature:
                answer["message"]["reasoning_signature"] = gemini_signed(output.signature)
        choices.append(answer)
    return completion(
        id=_completion_id(data),
        model=data.get("modelVersion") or model,
        choices=choices,
        usage=_usage(data.get("usageMetadata") or {}),
    )


def _candidates(data: dict) -> list[dict]:
    """The candidates; a blocked prompt has none and stands for one filtered answer."""
    if (data.get("promptFeedback") or {}).get("blockReason") and not data.get("candidates"):
        return [{"finishReason": "PROHIBITED_CONTENT"}]
    return data.get("candidates") or []


@dataclass(slots=True)
class _Output:
    """What a candidate (or a stream's piece of one) said: its text and tool calls, the thought
    summaries apart from them, and the first thought signature on any of its parts."""

    text: str
    tool_calls: list[dict]
    thoughts: str
    signature: str | None


def _candidate_output(candidate: dict) -> _Output:
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[dict] = []
    signature = None
    for part in (candidate.get("content") or {}).get("parts") or []:
        signature = signature or part.get("thoughtSignature")
        # Thought summaries are the model's reasoning, not its answer.
        if part.get("thought"):
            thoughts.append(part.get("text") or "")
        elif "text" in part:
            texts.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            call_id = signed_tool_call_id(part.get("thoughtSignature"))
            arguments = arguments_json(call.get("args") or {})
            tool_calls.append(tool_call(id=call_id, name=call["name"], arguments=arguments))
    return _Output("".join(texts), tool_calls, "".join(thoughts), signature)


def _finish_reason(reason: str | None, *, called_tools: bool) -> str:
    # Gemini says STOP after calling a tool; OpenAI clients look for tool_calls.
    if called_tools and reason in ("STOP", None):
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"


def _usage(metadata: dict) -> dict:
    # Thinking is billed as output, so it counts as completion tokens.
    thoughts = metadata.get("thoughtsTokenCount", 0)
    return usage(
        prompt_tokens=metadata.get("promptTokenCount", 0) + metadata.get("toolUsePromptTokenCount", 0),
        completion_tokens=metadata.get("candidatesTokenCount", 0) + thoughts,
        cached_tokens=metadata.get("cachedContentTokenCount", 0),
        reasoning_tokens=thoughts,
    )


def _completion_id(data: dict) -> str:
    return f"chatcmpl-{data['responseId']}" if data.get("responseId") else new_completion_id()


class GeminiStreamDecoder(JSONEventDecoder):
    """Gemini streams whole answers-so-far per candidate: text pieces, whole function calls,
    and the usage on the event that carries the finish reason."""

    def __init__(self, *, model: str, thoughts: bool = False) -> None:
        """``thoughts``: the call asked to see the thinking, whose signature then follows it."""
        super().__init__()
        self.model = model
        self._chunks: ChunkMaker | None = None
        self._tool_calls_so_far: dict[int, int] = {}
        self._unfinished: set[int] = set()
        # The candidates whose thinking was streamed, and those whose thinking is over: signed,
        # or its answer begun.
        self._thinking: set[int] | None = set() if thoughts else None
        self._thought_over: set[int] = set()

    def _translate(self, data: dict) -> list[dict]:
        if error := google_error(data):
            raise google_stream_error(error)
        if self._chunks is None:
            self._chunks = ChunkMaker(id=_completion_id(data), model=data.get("modelVersion") or self.model)
        maker = self._chunks
        chunks = []
        for position, candidate in enumerate(_candidates(data)):
            index = candidate.get("index", position)
            if index not in self._tool_calls_so_far:
                self._tool_calls_so_far[index] = 0
                self._unfinished.add(index)
                chunks.append(maker.role(index=index))
            output = _candidate_output(candidate)
            text, tool_calls = output.text, output.tool_calls
            if self._thinking is not None:
                chunks += self._thought(output, index)
            if text:
                logprobs = openai_logprobs(candidate.get("logprobsResult"))
                chunks.append(maker.delta({"content": text}, index=index, logprobs=logprobs))
            if tool_calls:
                first = self._tool_calls_so_far[index]
                numbered = [{"index": first + offset, **call} for offset, call in enumerate(tool_calls)]
                chunks.append(maker.delta({"tool_calls": numbered}, index=index))
                self._tool_calls_so_far[index] += len(tool_calls)
            if reason := candidate.get("finishReason"):
                called = self._tool_calls_so_far[index] > 0
                chunks.append(maker.finish(_finish_reason(reason, called_tools=called), index=index))
                self._unfinished.discard(index)
        if self._tool_calls_so_far and not self._unfinished:
            self._finished = True
            chunks.append(maker.usage(_usage(data.get("usageMetadata") or {})))
        return chunks

    def _thought(self, output: _Output, index: int) -> list[dict]:
        """A piece of the thinking, and its signature if it comes before the answer begins (a
        function call's comes with it; a text's may come at its end, too late to precede it: that
        thinking goes unsigned, as Gemini does not need a text's signature back). Thinking comes
        before the answer, as in Anthropic's stream: none is shown once the answer began."""
        chunks = []
        if output.thoughts and index not in self._thought_over:
            self._thinking.add(index)
            chunks.append(self._chunks.delta({"reasoning_content": output.thoughts}, index=index))
        if index in self._thinking and index not in self._thought_over:
            if output.signature:
                chunks.append(self._chunks.delta({"reasoning_signature": gemini_signed(output.signature)},
                                                 index=index))
            if output.signature or output.text or output.tool_calls:
                self._thought_over.add(index)
        return chunks
