"""Tool definitions the end-to-end tests offer the model, in OpenAI's shape."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "local_time",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
