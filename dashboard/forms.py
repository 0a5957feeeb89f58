"""Input of the dashboard's pages. Forms validate and convert; the services do the writing."""

from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.password_validation import validate_password
from django.utils import timezone

from analytics.exporters import EXPORTERS
from analytics.exporters.otlp import parse_headers
from analytics.models import ExportSink
from billing.models import Budget
from dashboard.logins import login_failure_record, login_paused, login_success_record
from gateway.config import load_config
from keys.models import MAX_KEY_LIMIT, Membership, Organization
from keys.selectors import key_list, team_list
from webhooks.models import EventType

EMAIL_TAKEN = "There is already an account with this email; sign in instead."
MONEY_FIELD = {"min_value": 0, "max_digits": 12, "decimal_places": 6}


class LocalDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


def _datetime_field(label: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label, required=False, widget=LocalDateTimeInput(),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )


def _limit_field(label: str) -> forms.IntegerField:
    return forms.IntegerField(label=label, required=False, min_value=1, max_value=MAX_KEY_LIMIT,
                              help_text="Empty: no limit.")


class EmailField(forms.EmailField):
    """Emails are usernames; compare them case-insensitively by storing them lower-cased."""

    def clean(self, value):
        return super().clean(value).lower()


class ThrottledLoginMixin:
    """Sign-in through an AuthenticationForm, refused while the throttle says so (dashboard.logins)."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not (username and password):
            return super().clean()
        if login_paused(request=self.request, username=username):
            minutes = max(1, settings.NEMO_LOGIN_WINDOW_S // 60)
            raise forms.ValidationError(
                f"Too many failed sign-in attempts: sign-in is paused for this account or address for up to "
                f"{minutes} minutes. Try again later.",
                code="throttled",
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_failure_record(request=self.request, username=username)
            raise
        login_success_record(request=self.request, username=username)
        return cleaned


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    username = forms.CharField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True,
                                                                           "autocomplete": "email"}))

    def clean(self):
        if self.cleaned_data.get("username"):
            self.cleaned_data["username"] = self.cleaned_data["username"].strip().lower()
        return super().clean()


class AccountForm(forms.Form):
    email = EmailField(widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean_email(self) -> str:
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(username__iexact=email).exists():
            raise forms.ValidationError(EMAIL_TAKEN)
        return email

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password"):
            user = get_user_model()(username=cleaned.get("email", ""), email=cleaned.get("email", ""))
            try:
                validate_password(cleaned["password"], user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class SignupForm(AccountForm):
    org_name = forms.CharField(label="Organization name", max_length=200)


class BudgetFields(forms.Form):
    budget = forms.DecimalField(label="Budget (USD)", required=False, help_text="Empty: no budget.",
                                **MONEY_FIELD)
    budget_period = forms.ChoiceField(label="Budget period", choices=Budget.Period.choices,
                                      initial=Budget.Period.MONTHLY)


def model_choices(current: list[str] = ()) -> list[tuple[str, str]]:
    """The model names clients may send: the routing file's (every catalog model without one),
    plus any a key already allows that the routing file has since dropped."""
    names = sorted(load_config(settings.NEMO_ROUTER_CONFIG).models)
    names += [name for name in current if name not in names]
    return [(name, name) for name in names]


class KeyForm(BudgetFields):
    name = forms.CharField(max_length=200, help_text="The agent that will use this key.")
    team = forms.ModelChoiceField(queryset=None, required=False, empty_label="(no team)")
    allowed_models = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked: every model."
    )
    rpm_limit = _limit_field("Requests per minute")
    tpm_limit = _limit_field("Tokens per minute")
    max_parallel = _limit_field("Parallel calls")
    default_max_tokens = forms.IntegerField(
        label="Default output limit (tokens)", required=False, min_value=1, max_value=MAX_KEY_LIMIT,
        help_text="Empty: the organization's default. Each such call is sent the smaller of this, the model's "
        "maximum and what its budget can still pay for.")
    run_budget = forms.DecimalField(
        label="Run envelope (USD)", required=False, help_text="The most one run (X-Nemo-Run) may spend. Empty: none "
        "(a call's X-Nemo-Run-Budget may still set one).", **MONEY_FIELD)
    run_max_steps = forms.IntegerField(label="Most steps of a run", required=False, min_value=1,
                                       max_value=MAX_KEY_LIMIT, help_text="Empty: no limit.")
    loop_limit = forms.IntegerField(
        label="Loop guard", required=False, min_value=0, max_value=MAX_KEY_LIMIT,
        help_text="Stop a run once its answers asked for the same tool call (same arguments) this many times. "
        "Empty or 0: off.")
    expires = _datetime_field("Expires (UTC)")

    field_order = ["name", "team", "allowed_models", "budget", "budget_period", "rpm_limit", "tpm_limit",
                   "max_parallel", "default_max_tokens", "run_budget", "run_max_steps", "loop_limit", "expires"]

    def clean_loop_limit(self) -> int:
        return self.cleaned_data.get("loop_limit") or 0

    def __init__(self, *args, org: Organization, current_models: list[str] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = team_list(org=org)
        self.fields["allowed_models"].choices = model_choices(current_models)

    def clean_expires(self):
        expires = self.cleaned_data.get("expires")
        if expires is not None and expires <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires


class TeamForm(BudgetFields):
    name = forms.CharField(max_length=200)

    field_order = ["name", "budget", "budget_period"]

    def __init__(self, *args, org: Organization, team_id: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.org = org
        self.team_id = team_id

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if team_list(org=self.org).filter(name=name).exclude(pk=self.team_id).exists():
            raise forms.ValidationError("There is already a team with this name.")
        return name


class OrgBudgetForm(BudgetFields):
    pass


class OrgSettingsForm(forms.Form):
    cache_enabled = forms.BooleanField(
        label="Answer identical requests from the response cache by default", required=False
    )
    store_prompts = forms.BooleanField(label="Keep prompt and response bodies in the request log", required=False)
    default_max_tokens = forms.IntegerField(
        label="Default output limit (tokens)", required=False, min_value=1, max_value=MAX_KEY_LIMIT,
        help_text="Each such call is sent the smaller of this, the model's maximum and what its budget can still "
        "pay for. Empty: unchanged.")


class WebhookForm(forms.Form):
    url = forms.URLField(label="URL", max_length=2000, assume_scheme="https",
                         help_text="Where the events are POSTed, signed with the secret.")
    events = forms.MultipleChoiceField(choices=EventType.choices, initial=EventType.values,
                                       widget=forms.CheckboxSelectMultiple)
    secret = forms.CharField(required=False, max_length=200, strip=False, widget=forms.PasswordInput,
                             help_text="16 characters or more. Empty: one is made and shown to you once.")


class AlertSettingsForm(forms.Form):
    credits_low_below = forms.DecimalField(
        label="Send credits.low below (USD)", min_value=0, max_digits=18, decimal_places=6,
        help_text="Sent once each time the credit balance falls below this amount.")


class InviteForm(forms.Form):
    email = EmailField()
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What the script that uses it does.")


class SinkForm(forms.Form):
    """One form for every sink type; what each type needs and takes is its exporter's to say."""

    type = forms.ChoiceField(choices=ExportSink.Type.choices)
    url = forms.URLField(label="URL", required=False, assume_scheme="https",
                         help_text="Overrides the service's endpoint (self-hosted Langfuse, a Datadog site, "
                                   "an S3-compatible store).")
    public_key = forms.CharField(required=False, help_text="Langfuse")
    secret_key = forms.CharField(required=False, widget=forms.PasswordInput, help_text="Langfuse")
    api_key = forms.CharField(label="API key", required=False, widget=forms.PasswordInput, help_text="Datadog")
    bucket = forms.CharField(required=False, help_text="S3")
    prefix = forms.CharField(required=False, help_text="S3")
    region = forms.CharField(required=False, help_text="S3")
    access_key_id = forms.CharField(label="Access key id", required=False, help_text="S3")
    secret_access_key = forms.CharField(label="Secret access key", required=False, widget=forms.PasswordInput,
                                        help_text="S3")
    headers = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                              help_text="OTLP: headers sent with every request, one NAME=VALUE a line")

    def clean_headers(self) -> dict:
        lines = [line for line in self.cleaned_data["headers"].splitlines() if line.strip()]
        try:
            return parse_headers(lines)
        except ValueError as exc:
            raise forms.ValidationError(str(exc).replace("--header takes", "A header line is")) from exc

    def clean(self):
        cleaned = super().clean()
        exporter = EXPORTERS.get(cleaned.get("type"))
        for name in exporter.required if exporter else ():
            if not cleaned.get(name):
                self.add_error(name, f"A {cleaned['type']} sink needs this.")
        return cleaned

    def fields_with_types(self) -> list[tuple[forms.BoundField, str]]:
        """Each field with the sink types that take it, so the page can show only those."""
        return [(self[name], " ".join(kind for kind, exporter in EXPORTERS.items()
                                      if name == "type" or name in (*exporter.required, *exporter.optional)))
                for name in self.fields]

    def config(self) -> dict:
        exporter = EXPORTERS[self.cleaned_data["type"]]
        return {name: self.cleaned_data[name] for name in (*exporter.required, *exporter.optional)
                if self.cleaned_data.get(name)}


# A status class: the [from, below) range of statuses it stands for.
STATUS_CLASSES = {"2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600),
                  "errors": (400, 600)}


class LogFilterForm(forms.Form):
    request_id = forms.CharField(required=False, max_length=40, label="Request id")
    key = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    run = forms.CharField(required=False, max_length=200, help_text="Starts with")
    model = forms.CharField(required=False, max_length=120, help_text="Starts with")
    deployment = forms.CharField(required=False, max_length=120)
    status_class = forms.ChoiceField(required=False, label="Statuses", choices=[
        ("", "any"), ("2xx", "2xx"), ("3xx", "3xx"), ("4xx", "4xx"), ("5xx", "5xx"),
        ("errors", "errors only (4xx, 5xx)")])
    status = forms.IntegerField(required=False, min_value=100, max_value=599, help_text="HTTP status")
    fallback_only = forms.BooleanField(required=False, label="Fell back only")
    cache = forms.ChoiceField(required=False, choices=[("", "any"), ("hit", "hit"), ("miss", "miss"),
                                                       ("skip", "skip")])
    tag = forms.CharField(required=False, max_length=200,
                          help_text="A routing tag (eu) or a metadata pair (customer:acme)")
    since = _datetime_field("Since (UTC)")
    until = _datetime_field("Until (UTC)")

    def __init__(self, *args, org: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["key"].choices = [("", "any key")] + [
            (key.pk, f"{key.name} · {key.prefix}") for key in key_list(org=org)
        ]

    def clean_request_id(self) -> str:
        # Pasted from a response header or a trace, often with the spaces around it.
        return self.cleaned_data["request_id"].strip()

    def filters(self) -> dict:
        """The arguments of the log query, leaving out empty fields: the model and the run match
        by prefix, a status class is a range of statuses."""
        names = {"key": "key_id", "model": "model_prefix", "run": "run_prefix"}
        found = {names.get(field, field): value for field, value in self.cleaned_data.items()
                 if value not in (None, "", False)}
        if "status_class" in found:
            found["status_from"], found["status_below"] = STATUS_CLASSES[found.pop("status_class")]
        return found


class RunFilterForm(forms.Form):
    key = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    run = forms.CharField(required=False, max_length=200, label="Run id", help_text="Starts with")
    # The next page: the runs last active before the last run of this one.
    before = forms.DateTimeField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, org: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["key"].choices = [("", "any key")] + [
            (key.pk, f"{key.name} · {key.prefix}") for key in key_list(org=org)
        ]


SPEND_DAYS = 30
GROUPS = ("day", "key", "team", "model")


class SpendForm(forms.Form):
    """A range of whole UTC days; the default is the last 30."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="Included.")
    group_by = forms.ChoiceField(required=False, choices=[(g, g) for g in GROUPS])

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "The end of the range is before its start.")
        return cleaned

    def range(self) -> tuple[datetime, datetime | None]:
        """[start, end) as UTC datetimes."""
        since = self.cleaned_data.get("since") if self.is_valid() else None
        until = self.cleaned_data.get("until") if self.is_valid() else None
        start = (datetime.combine(since, time.min, UTC) if since
                 else datetime.combine(timezone.now().date() - timedelta(days=SPEND_DAYS - 1), time.min, UTC))
        # Up to the calendar's last day is up to no end at all (there is no day after it).
        end = datetime.combine(until + timedelta(days=1), time.min, UTC) if until and until < date.max else None
        return start, end

    def group(self) -> str:
        return (self.cleaned_data.get("group_by") if self.is_valid() else None) or "day"
