"""The request log — which is also the ledger —, its daily rollup, and the export sinks that read it."""

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from analytics.fields import OrderedJSONField
from keys.models import Organization, Team, VirtualKey


class RequestLog(models.Model):
    """One row per call to the proxy, written (with its settled cost) before the call is done."""

    # Every call inserts a row here, so the table carries only what the product reads: no
    # foreign-key constraints (each would look up and lock the org, team and key row of every
    # insert; Django still applies on_delete) and no index the composites below already give.
    request_id = models.CharField(max_length=40)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="request_logs",
                            db_constraint=False, db_index=False)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False)
    # No index of its own: every read of a key's rows is scoped by org (log_org_key_created), and
    # a key is revoked, never deleted. A team is deleted (its rows' team set to NULL): team keeps one.
    key = models.ForeignKey(VirtualKey, null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False,
                            db_index=False)
    key_prefix = models.CharField(max_length=24)
    run_id = models.CharField(max_length=200, blank=True, default="")
    endpoint = models.CharField(max_length=24, default="chat.completions",
                                help_text="The client API that served the call: chat.completions, responses, messages, "
                                "embeddings.")
    model = models.CharField(max_length=120, help_text="The model the client asked for.")
    deployment = models.CharField(max_length=120, blank=True, default="")
    provider = models.CharField(max_length=120, blank=True, default="")
    status = models.PositiveSmallIntegerField(help_text="HTTP status returned to the client.")
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="",
                                  help_text="The code of the error answered (budget_exceeded, run_loop_detected…).")
    error_param = models.CharField(max_length=40, blank=True, default="",
                                   help_text="The param of the error answered: for a 402, the budget level that "
                                   "refused the call (key, team, org, run).")
    error_type = models.CharField(max_length=40, blank=True, default="",
                                  help_text="The type of the error answered, as its body says it.")
    run_budget = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True,
        help_text="The envelope the call's run was admitted under (X-Nemo-Run-Budget or the key's run_budget).")
    attempts = models.JSONField(default=list)
    stream = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    overshoot = models.DecimalField(
        max_digits=18, decimal_places=6, default=0,
        help_text="What the cost came to above the call's reservation (an upstream that ignored the output cap "
        "sent with it): charged all the same. Zero for every call the upstream kept within its cap.")
    finish_reason = models.CharField(max_length=40, blank=True, default="")
    tool_calls = models.JSONField(default=list, blank=True)
    tags = models.JSONField(
        null=True, blank=True,
        help_text="The call's own labels, to find it by: its routing tags (body tags, X-Nemo-Tags) as \"tag\" and "
        "its metadata as \"key:value\" (analytics.records.call_tags says how many and how long); null: none.")
    tools_offered = models.JSONField(default=list, blank=True)
    prompt_meta = models.JSONField(default=dict, blank=True)
    cache = models.CharField(max_length=4, default="skip")
    # The client's key order kept: a call's page, its curl and the API show the body as it was sent.
    request_body = OrderedJSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    inserted = models.DateTimeField(
        db_default=Now(),
        editable=False,
        help_text="Set by the database when the row is inserted, on the database's clock. The exporters' "
        "safety lag and the spend rollup's horizon are measured on it, never on the gateway machines' clocks; "
        "never set by hand outside tests (the rollup counts on it).",
    )

    class Meta:
        # Each index matches a filter the product runs; all are scoped by org first and end
        # in (created, id) so cursor pagination is an index range scan. (org, id) is the outbox
        # the exporters read in id order.
        indexes = [
            models.Index(fields=["org", "created", "id"], name="log_org_created"),
            models.Index(fields=["org", "key", "created", "id"], name="log_org_key_created"),
            models.Index(fields=["org", "run_id", "created", "id"], name="log_org_run_created"),
            models.Index(fields=["org", "model", "created", "id"], name="log_org_model_created"),
            models.Index(fields=["org", "deployment", "created", "id"], name="log_org_deployment_created"),
            models.Index(fields=["org", "status", "created", "id"], name="log_org_status_created"),
            models.Index(fields=["org", "id"], name="log_org_id"),
            # The cache filter: most rows are "skip" (found fast by log_org_created); the few hits
            # and misses have their own small index.
            models.Index(fields=["org", "cache", "created", "id"], name="log_org_cache_created",
                         condition=~models.Q(cache="skip")),
            # The tag filter (``tags @> '["tag"]'`` within an org): GIN over (org, tags), org by
            # btree_gin, of the tagged rows only, so an untagged call's insert (most are) leaves
            # it alone. Null, not [], is "no tags": ``@>`` implies IS NOT NULL, so a query needs
            # no clause of its own to use the index (a second clause, correlated with the first,
            # would divide the planner's estimate of the matches by twenty). PostgreSQL only
            # (migration 0014); elsewhere the filter reads the org's rows.
            GinIndex(fields=["org", "tags"], opclasses=["int8_ops", "jsonb_path_ops"], name="log_org_tags",
                     condition=models.Q(tags__isnull=False)),
        ]
        # A constraint rather than unique=True, which would add a second (LIKE) index. On
        # PostgreSQL the table is partitioned by month of ``created`` (analytics.partitions), and
        # a unique index there must hold the partition key: so must this one (the primary key is
        # (id, created) there). A call's row and the one the reaper writes for it share both.
        constraints = [models.UniqueConstraint(fields=["request_id", "created"], name="log_request_id_unique")]

    def __str__(self) -> str:
        return self.request_id


class ExportSink(models.Model):
    """Where an org's request log is exported (Langfuse, Datadog, S3, an OTLP collector).

    ``last_exported_id`` is the outbox cursor: every log row of the org with a larger id is still
    to be sent. It only moves forward after a batch was accepted, so nothing is sent twice or
    skipped. ``pending_last_id`` pins the range of a batch that failed, so its retry sends exactly
    the same rows (and S3 overwrites the same object). ``lease_until`` is held by the worker that
    is sending a batch, so two workers never send the same batch at once.
    """

    class Type(models.TextChoices):
        LANGFUSE = "langfuse"
        DATADOG = "datadog"
        S3 = "s3"
        OTLP = "otlp", "OTLP"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="export_sinks")
    type = models.CharField(max_length=10, choices=Type.choices)
    config = models.JSONField(default=dict, help_text="url, credentials, bucket/prefix/region, headers (otlp)")
    enabled = models.BooleanField(default=True)
    last_exported_id = models.BigIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_success = models.DateTimeField(null=True, blank=True)
    next_attempt = models.DateTimeField(null=True, blank=True)
    pending_last_id = models.BigIntegerField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.type} sink of {self.org}"

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0


class DailySpend(models.Model):
    """The daily ledger: the request log rolled up by UTC day, one day's settled spend per org,
    team, key and model.

    Kept current from the log (the source of truth) by analytics.services.spend_rollup, every
    minute: it holds exactly the log rows behind the rollup's horizon (``SpendRollup``), and the
    reads of spend add the rows past it. ``daily_spend_settle`` replaces a day's rows whole from
    the log again (a repair). Once a day is pruned from the log, its rows here are all that is
    left of it. Its table kept billing's name when the model moved here.
    """

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="daily_spend")
    day = models.DateField()
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL)
    key = models.ForeignKey(VirtualKey, null=True, blank=True, on_delete=models.SET_NULL)
    model = models.CharField(max_length=120)
    cost = models.DecimalField(max_digits=18, decimal_places=6)
    calls = models.PositiveIntegerField()
    # Of the calls, those answered with a status of 400 or above: a key's error rate over its
    # budget period is read from here (migration 0016 counted the days rolled up before it).
    errors = models.PositiveIntegerField(default=0, db_default=0)
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()

    class Meta:
        db_table = "billing_dailyspend"
        indexes = [models.Index(fields=["org", "day"], name="billing_dai_org_id_25ed9d_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.model}: ${self.cost}"


class SpendRollup(models.Model):
    """How far the request log is rolled up into DailySpend: one row (``pk`` 1).

    Every log row with ``inserted`` before ``horizon`` is in DailySpend; every row at or after it
    has an id above ``floor_id``. So spend = DailySpend + the rows with ``id > floor_id`` and
    ``inserted >= horizon`` (the tail, read through the (org, id) index), exactly, at any
    snapshot that sees this row and DailySpend together. ``last_seq`` and ``last_read``: the id
    sequence's value read just before the database's clock said ``last_read``, by the latest
    rollup; the next rollup's floor (analytics.services.spend_rollup).
    """

    horizon = models.DateTimeField()
    floor_id = models.BigIntegerField(default=0)
    last_seq = models.BigIntegerField(default=0)
    last_read = models.DateTimeField()

    def __str__(self) -> str:
        return f"rolled up to {self.horizon}"


class StoredResponse(models.Model):
    """A Responses API response kept for its org (``store``, the default): what
    ``GET /v1/responses/{id}`` answers and ``previous_response_id`` continues. Kept no longer
    than the request log (``stored_responses_prune``, with the log's retention)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="stored_responses",
                            db_constraint=False, db_index=False)
    response_id = models.CharField(max_length=64)
    response = models.JSONField(help_text="The Response object as it was answered.")
    input_items = models.JSONField(default=list, help_text="The request's own input items.")
    conversation = models.JSONField(
        default=list, help_text="The whole conversation up to and with this answer, as Chat Completions messages "
        "(the instructions left out): what a later previous_response_id sends again.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "response_id"], name="stored_response_org_id")]
        indexes = [models.Index(fields=["created"], name="stored_response_created")]

    def __str__(self) -> str:
        return self.response_id
