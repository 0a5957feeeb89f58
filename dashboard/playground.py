"""What the playground and a key's test call need from the server: the chat models each key
may use, and a stored call's request when it can be sent again from the playground.

The calls themselves never pass through here. A key's secret is stored only as a hash, so the
dashboard cannot call the gateway as a key: the browser does, with the secret its user pasted
(or the one the Key issued page shows once), straight to ``/v1/chat/completions``. The call is
any client's call, with the same authentication, limits, budgets, routing and log.
"""

from analytics.models import RequestLog
from billing.selectors import catalog_list
from dashboard.forms import model_choices
from keys.models import VirtualKey

# What the playground speaks: a stored call of another client API is not opened in it.
PLAYGROUND_ENDPOINT = "chat.completions"
# The model a key's snippets and its test call name, when the key may use it.
SNIPPET_MODEL = "gemini-2.5-flash"


def chat_models(keys: list[VirtualKey]) -> dict[int, list[str]]:
    """Each key's chat models: the names the routing file serves that the key may use, without
    the embedding models (the playground and a key's test make chat calls)."""
    embedding = {model.name for model in catalog_list() if "embeddings" in model.capabilities}
    served = [name for name, _ in model_choices() if name not in embedding]
    return {key.pk: [name for name in served if not key.allowed_models or name in key.allowed_models]
            for key in keys}


def key_test_model(key: VirtualKey) -> str | None:
    """The model a key's test call and its snippets use: SNIPPET_MODEL if the key may use it, else
    the first chat model it may use."""
    models = chat_models([key])[key.pk]
    return SNIPPET_MODEL if SNIPPET_MODEL in models else next(iter(models), None)


def playground_request(row: RequestLog) -> dict | None:
    """The stored request of a chat call, to load into the playground; None for a call of
    another API or one whose body was not stored."""
    body = row.request_body
    if row.endpoint != PLAYGROUND_ENDPOINT or not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    return body
