"""Input and output shapes of the management API.

Input serializers only check the shape of what a caller sent; lookups (does that team exist in
this org?) go through the org-scoped selectors in the views. Output serializers only format: money
always leaves as a decimal string in USD (``MoneyField``), never a float.
"""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from analytics.serializers import log_row_dict
from billing.models import Budget
from dashboard.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from keys.models import MAX_KEY_LIMIT
from webhooks.models import EventType, WebhookDelivery

# How deep a key's metadata may nest: far more than any label needs, far less than what the
# database's JSON encoder can take.
MAX_METADATA_DEPTH = 32


class MoneyField(serializers.DecimalField):
    """USD as a decimal string with six places (one micro-dollar)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_digits=18, decimal_places=6, **kwargs)


class PeriodField(serializers.ChoiceField):
    """A budget period, whatever the field is called (``period``, ``budget_period``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=Budget.Period.choices, **kwargs)


class PeriodFieldSchema(OpenApiSerializerFieldExtension):
    """One ``BudgetPeriod`` schema component for every period field. Left to itself,
    drf-spectacular names an enum after its field and so would give this one two names."""

    target_class = PeriodField

    def get_name(self) -> str:
        return "BudgetPeriod"

    def map_serializer_field(self, auto_schema, direction) -> dict:
        return {"type": "string", "enum": Budget.Period.values,
                "description": "A budget's period, on UTC calendar boundaries."}


def paged(serializer_class: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of a list answer: ``{"results": [...], "next": <cursor or null>}``."""
    return inline_serializer(
        name=name,
        fields={
            "results": serializer_class(many=True),
            "next": serializers.CharField(allow_null=True, help_text="Cursor of the next page; null on the last."),
        },
    )


class ErrorSerializer(serializers.Serializer):
    """Every error: OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`."""

    # Only documents the body; dashboard.api.errors writes it.
    error = inline_serializer(
        name="ErrorDetail",
        fields={
            "message": serializers.CharField(),
            "type": serializers.CharField(),
            "param": serializers.CharField(allow_null=True),
            "code": serializers.CharField(allow_null=True),
        },
    )


class PageParams(serializers.Serializer):
    cursor = serializers.CharField(required=False, help_text="The `next` of the previous page.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)


# --- budgets ----------------------------------------------------------------------------------

class BudgetFiguresSerializer(serializers.Serializer):
    """A budget as it stands: its amount, and what was spent of it in the current period."""

    amount = MoneyField()
    period = PeriodField()
    period_start = serializers.DateTimeField(allow_null=True, help_text="Null for a budget without a period.")
    spent = MoneyField(help_text="Spent in the current period.")
    remaining = MoneyField(help_text="What is left of the amount in the current period (never below zero).")


class BudgetOutputSerializer(BudgetFiguresSerializer):
    """The budget of a key, a team or the org, with what was spent of it in the current period."""

    id = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    key = serializers.IntegerField(allow_null=True, help_text="The key's id, for a key budget.")
    team = serializers.IntegerField(allow_null=True, help_text="The team's id, for a team budget.")
    created = serializers.DateTimeField()


class BudgetCreateInputSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    key = serializers.IntegerField(required=False, allow_null=True, help_text="The key's id (scope `key`).")
    team = serializers.IntegerField(required=False, allow_null=True, help_text="The team's id (scope `team`).")
    amount = MoneyField(min_value=0)
    period = PeriodField(default=Budget.Period.NONE)

    def validate(self, data: dict) -> dict:
        owner_of_scope = {Budget.Scope.KEY: "key", Budget.Scope.TEAM: "team", Budget.Scope.ORG: None}
        needed = owner_of_scope[data["scope"]]
        for owner in ("key", "team"):
            if owner == needed and data.get(owner) is None:
                raise serializers.ValidationError({owner: f"A {needed} budget needs the {needed}'s id."})
            if owner != needed and data.get(owner) is not None:
                raise serializers.ValidationError({owner: f"A {data['scope']} budget takes no {owner}."})
        return data


class BudgetUpdateInputSerializer(serializers.Serializer):
    amount = MoneyField(min_value=0, required=False)
    period = PeriodField(required=False)


# --- keys -------------------------------------------------------------------------------------

def _has_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escape can carry
        return False
    return True


def storable_json(value, depth: int = 0) -> None:
    """What PostgreSQL's jsonb holds: no NUL and no lone surrogate in any string, key or value,
    and a nesting its encoder can write."""
    if depth > MAX_METADATA_DEPTH:
        raise serializers.ValidationError(f"Nested more than {MAX_METADATA_DEPTH} levels deep.")
    if isinstance(value, str) and ("\x00" in value or not _has_utf8(value)):
        raise serializers.ValidationError("Strings may not hold NUL or lone surrogate characters.")
    if isinstance(value, dict):
        for key, item in value.items():
            storable_json(key, depth + 1)
            storable_json(item, depth + 1)
    if isinstance(value, list):
        for item in value:
            storable_json(item, depth + 1)


class KeyInputSerializer(serializers.Serializer):
    """A key to issue (or, in a PATCH, the fields to change)."""

    name = serializers.CharField(max_length=200)
    team = serializers.IntegerField(required=False, allow_null=True, help_text="The team's id, or null.")
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=120), required=False, help_text="Empty: every model."
    )
    rpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_KEY_LIMIT)
    tpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_KEY_LIMIT)
    max_parallel = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_KEY_LIMIT)
    default_max_tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_KEY_LIMIT,
        help_text="The most output a call that names no limit is sent (fitted to the budget left); null: the "
        "org's default (16,384 unless changed).")
    run_budget = MoneyField(required=False, allow_null=True, min_value=0,
                            help_text="The most one run (`X-Nemo-Run`) of this key may spend, USD; null: no envelope "
                            "(a call's `X-Nemo-Run-Budget` may still set one, never above this).")
    run_max_steps = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_KEY_LIMIT,
                                             help_text="The most calls one run may make; null: no limit.")
    loop_limit = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_KEY_LIMIT,
        help_text="Stop a run (429 `run_loop_detected`) once its answers asked for the same tool call this many "
        "times; 0: off.")
    expires = serializers.DateTimeField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False, validators=[storable_json])
    budget = MoneyField(required=False, allow_null=True, min_value=0,
                        help_text="The key's own budget in USD; null (on change) removes it.")
    budget_period = PeriodField(required=False,
                                            help_text="The budget's period; `none` if not given.")

    def validate(self, data: dict) -> dict:
        if not self.partial and "budget_period" in data and data.get("budget") is None:
            raise serializers.ValidationError({"budget_period": "A budget period needs a budget."})
        return data


class KeyOutputSerializer(serializers.Serializer):
    """A virtual key. Its secret is never shown again after it was issued or rotated."""

    # context: "budgets" (budget figures by key id) and "spend" (USD by key id).

    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The public start of the secret, after `sk-nemo-`.")
    team = serializers.IntegerField(source="team_id", allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField())
    rpm_limit = serializers.IntegerField(allow_null=True)
    tpm_limit = serializers.IntegerField(allow_null=True)
    max_parallel = serializers.IntegerField(allow_null=True)
    default_max_tokens = serializers.IntegerField(allow_null=True, help_text="null: the org's default.")
    run_budget = MoneyField(allow_null=True, help_text="The envelope of each run; null: none.")
    run_max_steps = serializers.IntegerField(allow_null=True, help_text="The most calls of a run; null: no limit.")
    loop_limit = serializers.IntegerField(help_text="Repeats of one tool call that stop a run; 0: off.")
    expires = serializers.DateTimeField(allow_null=True)
    revoked = serializers.DateTimeField(allow_null=True)
    metadata = serializers.DictField()
    created = serializers.DateTimeField()
    budget = serializers.SerializerMethodField()
    spend = serializers.SerializerMethodField()

    @extend_schema_field(BudgetFiguresSerializer(allow_null=True))
    def get_budget(self, key) -> dict | None:
        figures = self.context["budgets"].get(key.pk)
        return BudgetFiguresSerializer(figures).data if figures is not None else None

    @extend_schema_field(MoneyField(help_text="Spent in the current period of the key's budget; "
                                               "everything it spent if it has no budget."))
    def get_spend(self, key) -> str:
        return MoneyField().to_representation(self.context["spend"].get(key.pk, 0))


class KeyWithSecretSerializer(KeyOutputSerializer):
    """A virtual key with its secret, in the one answer that ever shows it."""

    # context also carries "secret", which no model field holds: only its hash is stored.
    secret = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(help_text="The whole key (`sk-nemo-…`). Shown in this answer only."))
    def get_secret(self, key) -> str:
        return self.context["secret"]


# --- teams ------------------------------------------------------------------------------------

class TeamInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class TeamOutputSerializer(serializers.Serializer):
    """A team of keys, with its budget."""

    # context: "budgets" (budget figures by team id).

    id = serializers.IntegerField()
    name = serializers.CharField()
    created = serializers.DateTimeField()
    budget = serializers.SerializerMethodField()

    @extend_schema_field(BudgetFiguresSerializer(allow_null=True))
    def get_budget(self, team) -> dict | None:
        figures = self.context["budgets"].get(team.pk)
        return BudgetFiguresSerializer(figures).data if figures is not None else None


# --- the request log --------------------------------------------------------------------------

class AttemptSerializer(serializers.Serializer):
    deployment = serializers.CharField()
    outcome = serializers.CharField(help_text="ok, timeout, error, …")
    latency_ms = serializers.IntegerField(allow_null=True)


class ToolCallSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(allow_blank=True, allow_null=True,
                                      help_text="The JSON string the model produced, as is.")


class LogRowSerializer(serializers.Serializer):
    """A call in the request log."""

    # The values are analytics.serializers.log_row_dict's, the shape the exporters send too;
    # the fields here only document it for the schema.

    request_id = serializers.CharField()
    run_id = serializers.CharField(allow_blank=True, help_text="`X-Nemo-Run`, or the session of a Claude Code "
                                                               "call that sent none, or empty.")
    endpoint = serializers.CharField(help_text="The client API that served the call: `chat.completions`, "
                                     "`responses`, `messages`, `messages.count_tokens` or `embeddings`.")
    key = serializers.CharField(help_text="The key's prefix.")
    model = serializers.CharField(help_text="The model the client asked for.")
    deployment = serializers.CharField(allow_blank=True, help_text="The deployment that answered.")
    provider = serializers.CharField(allow_blank=True)
    status = serializers.IntegerField(help_text="The HTTP status returned to the client.")
    error = serializers.CharField(allow_blank=True)
    error_type = serializers.CharField(allow_blank=True, help_text="The error's `type`, as its body said it.")
    error_code = serializers.CharField(allow_blank=True, help_text="The error's `code` (`run_loop_detected`, …).")
    error_param = serializers.CharField(allow_blank=True, help_text="The error's `param` (`run`: refused by its "
                                        "run's envelope or steps).")
    attempts = AttemptSerializer(many=True)
    stream = serializers.BooleanField()
    latency_ms = serializers.IntegerField()
    ttft_ms = serializers.IntegerField(allow_null=True, help_text="Time to the first token of a stream.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    cost = MoneyField()
    overshoot = MoneyField(help_text="What the cost came to above the call's reservation: an upstream that ignored "
                           "the output cap sent with the call. Charged all the same; 0 for nearly every call.")
    finish_reason = serializers.CharField(allow_blank=True)
    tool_calls = ToolCallSerializer(many=True)
    tools_offered = serializers.JSONField(help_text="The tools the request offered the model.")
    prompt_meta = serializers.JSONField(help_text="Message count, roles and sizes (kept even without bodies).")
    cache = serializers.ChoiceField(choices=["hit", "miss", "skip"])
    tags = serializers.ListField(child=serializers.CharField(), help_text="The call's routing tags (`tags`, "
                                 "`X-Nemo-Tags`) and its metadata as `key:value`.")
    created = serializers.DateTimeField()

    def to_representation(self, row) -> dict:
        return log_row_dict(row)


class LogDetailSerializer(LogRowSerializer):
    """One call; the bodies are null unless the org stores prompts."""

    request_body = serializers.JSONField(allow_null=True)
    response_body = serializers.JSONField(allow_null=True)

    def to_representation(self, row) -> dict:
        return log_row_dict(row, bodies=True)


class LogFilterSerializer(PageParams):
    key = serializers.CharField(required=False, help_text="A key's id, or its prefix (with or without `sk-nemo-`).")
    run = serializers.CharField(required=False, help_text="A run id (`X-Nemo-Run`).")
    model = serializers.CharField(required=False)
    deployment = serializers.CharField(required=False)
    status = serializers.IntegerField(required=False, min_value=100, max_value=599)
    cache = serializers.ChoiceField(required=False, choices=["hit", "miss", "skip"])
    tag = serializers.CharField(required=False, max_length=200,
                                help_text="Only the calls with this tag: a routing tag (`eu`) or a metadata pair "
                                "(`customer:acme`), exactly.")
    since = serializers.DateTimeField(required=False, help_text="From this time on (ISO 8601).")
    until = serializers.DateTimeField(required=False, help_text="Before this time (ISO 8601).")


# --- runs -------------------------------------------------------------------------------------

class RunFilterSerializer(serializers.Serializer):
    key = serializers.IntegerField(required=False, help_text="Only the runs of this key (its id).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)


class RunListItemSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    key = serializers.CharField(source="key_prefix", help_text="The prefix of the key of the run's first call.")
    steps_count = serializers.IntegerField()
    spend = MoneyField()
    status = serializers.ChoiceField(choices=["completed", "failed"], help_text="From the run's last call.")
    started = serializers.DateTimeField()
    ended = serializers.DateTimeField()


class RunSerializer(serializers.Serializer):
    """A run: the calls that shared an `X-Nemo-Run` header, as the run card shows it."""

    run_id = serializers.CharField()
    key = serializers.SerializerMethodField()
    key_id = serializers.SerializerMethodField()
    steps = LogRowSerializer(many=True, help_text="The run's calls, in the order they were made.")
    steps_count = serializers.IntegerField()
    fallback_steps = serializers.ListField(
        child=serializers.IntegerField(), help_text="Step numbers (from 1) where a fallback deployment was tried."
    )
    status = serializers.ChoiceField(choices=["completed", "failed"], help_text="From the run's last call.")
    spend = MoneyField()
    budget = MoneyField(allow_null=True, help_text="The key's budget, if it has one.")
    budget_period = PeriodField(allow_null=True)
    tool_calls_logged = serializers.IntegerField(help_text="How many of the steps logged tool calls.")
    run_budget = MoneyField(allow_null=True, help_text="The run's envelope (`X-Nemo-Run-Budget` or the key's "
                            "`run_budget`), spent against by `spend`; null: none.")
    stopped_by = serializers.ChoiceField(
        choices=["run_budget", "run_max_steps", "loop_guard"], allow_null=True,
        help_text="What stopped the run: its envelope, its most steps or the loop guard; null: nothing did.")
    stop_reason = serializers.CharField(help_text="The message of the refusal that stopped the run; empty if none.")
    started = serializers.DateTimeField(source="first")
    ended = serializers.DateTimeField(source="last")

    @extend_schema_field(serializers.CharField(help_text="The key's prefix."))
    def get_key(self, run) -> str:
        # The key's current prefix (a rotation changes it); its prefix at the time if it is gone.
        return run.key.prefix if run.key is not None else run.steps[0].key_prefix

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_key_id(self, run) -> int | None:
        return run.key.pk if run.key is not None else None


# --- spend, credits, catalog ------------------------------------------------------------------

class SpendFilterSerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=["day", "key", "team", "model"], default="day")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    format = serializers.ChoiceField(choices=["json", "csv"], required=False,
                                     help_text="`csv` answers text/csv (also chosen by `Accept: text/csv`).")


class SpendRowSerializer(serializers.Serializer):
    group = serializers.CharField(allow_null=True, help_text="The day, the key's prefix, the team or the model.")
    cost = MoneyField()
    calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()


class CreditGrantSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount = MoneyField()
    reason = serializers.CharField()
    granted_by = serializers.CharField(source="granted_by_label")
    created = serializers.DateTimeField()


class CreditsSerializer(serializers.Serializer):
    balance = MoneyField(help_text="Grants minus everything spent.")
    grants = CreditGrantSerializer(many=True)


class CatalogModelSerializer(serializers.Serializer):
    name = serializers.CharField()
    vendor = serializers.CharField()
    input_price = serializers.DecimalField(max_digits=12, decimal_places=4, help_text="USD per million input tokens.")
    cached_input_price = serializers.DecimalField(max_digits=12, decimal_places=4,
                                                  help_text="USD per million cached input tokens.")
    output_price = serializers.DecimalField(max_digits=12, decimal_places=4, help_text="USD per million output tokens.")
    context_window = serializers.IntegerField()
    max_output_tokens = serializers.IntegerField()
    capabilities = serializers.ListField(child=serializers.CharField())


# --- webhooks ---------------------------------------------------------------------------------

class WebhookInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="Where events are POSTed (https).")
    secret = serializers.CharField(required=False, allow_blank=True, max_length=200, trim_whitespace=False,
                                   help_text="The signing secret (16 to 200 characters); left out, one is made. "
                                             "Shown only in the answer to the POST (or to a PATCH that sets it).")
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices), required=False,
                                   help_text="The events it receives; every event when left out.")
    enabled = serializers.BooleanField(required=False)


class DeliveryAttemptSerializer(serializers.Serializer):
    created = serializers.DateTimeField()
    status = serializers.IntegerField(allow_null=True, help_text="The receiver's status; null: no answer.")
    error = serializers.CharField()


class WebhookDeliverySerializer(serializers.Serializer):
    event_id = serializers.CharField(source="event.event_id")
    type = serializers.CharField(source="event.type")
    state = serializers.ChoiceField(choices=WebhookDelivery.State.choices)
    attempts = serializers.IntegerField()
    last_error = serializers.CharField()
    delivered = serializers.DateTimeField(allow_null=True)
    next_attempt = serializers.DateTimeField()
    created = serializers.DateTimeField()


class WebhookOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    secret_hint = serializers.SerializerMethodField(help_text="The secret's last four characters.")
    created = serializers.DateTimeField()

    def get_secret_hint(self, webhook) -> str:
        return f"…{webhook.secret[-4:]}"


class WebhookWithSecretSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(help_text="The signing secret, shown only in this answer.")


class WebhookDetailSerializer(WebhookOutputSerializer):
    recent_deliveries = serializers.SerializerMethodField()

    @extend_schema_field(WebhookDeliverySerializer(many=True))
    def get_recent_deliveries(self, webhook) -> list:
        return WebhookDeliverySerializer(self.context["deliveries"], many=True).data
