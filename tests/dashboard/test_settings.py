import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import ExportSink
from analytics.services import sink_create
from keys.models import Organization, OrgToken
from keys.secrets import matches
from keys.services import org_token_create
from tests.analytics.factories import make_key, make_log
from webhooks.alerts import alerts_scan
from webhooks.models import DeliveryAttempt, Webhook, WebhookDelivery
from webhooks.selectors import alerts_of
from webhooks.services import webhook_create

pytestmark = pytest.mark.django_db

LANGFUSE = {"type": "langfuse", "url": "https://langfuse.example.com", "public_key": "pk-lf-1",
            "secret_key": "sk-lf-very-secret"}


def test_an_admin_turns_on_the_cache_and_prompt_storage(admin_client, org):
    response = admin_client.post("/settings/org/", {"cache_enabled": "on", "store_prompts": "on"})

    assert response.status_code == 302
    org.refresh_from_db()
    assert (org.cache_enabled, org.store_prompts) == (True, True)


def test_an_admin_sets_the_orgs_default_output_limit(admin_client, org):
    response = admin_client.post("/settings/org/", {"default_max_tokens": "4096"})
    unchanged = admin_client.post("/settings/org/", {"cache_enabled": "on"})

    assert (response.status_code, unchanged.status_code) == (302, 302)
    org.refresh_from_db()
    assert org.default_max_tokens == 4096


def test_unticking_turns_them_off(owner_client, org):
    Organization.objects.filter(pk=org.pk).update(cache_enabled=True, store_prompts=True)

    owner_client.post("/settings/org/", {})

    org.refresh_from_db()
    assert (org.cache_enabled, org.store_prompts) == (False, False)


def test_a_member_cannot_change_the_settings(member_client, org):
    response = member_client.post("/settings/org/", {"cache_enabled": "on"})

    assert response.status_code == 403
    org.refresh_from_db()
    assert org.cache_enabled is False


def test_a_member_sees_the_settings_without_forms(member_client):
    page = member_client.get("/settings/").content.decode()

    assert "off by default" in page
    assert 'action="/settings/org/"' not in page
    assert 'action="/settings/tokens/new/"' not in page


def test_sinks_show_their_health(owner_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "dd-key-1234"}, actor=system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(consecutive_failures=3, last_error="403 Forbidden from Datadog",
                                                 last_success=timezone.now() - timedelta(hours=2))

    page = owner_client.get("/settings/").content.decode()

    assert "3 failures in a row" in page
    assert "403 Forbidden from Datadog" in page


def test_a_new_sink_has_delivered_nothing_yet_and_is_not_called_healthy(owner_client, org, system_actor):
    sink_create(org=org, type="datadog", config={"api_key": "dd-key-1234"}, actor=system_actor)

    page = owner_client.get("/settings/").content.decode()

    assert "no delivery yet" in page and ">healthy<" not in page


def test_a_sink_that_delivered_is_healthy(owner_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "dd-key-1234"}, actor=system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(last_success=timezone.now())

    page = owner_client.get("/settings/").content.decode()

    assert ">healthy<" in page and "no delivery yet" not in page


def test_a_sinks_secrets_are_never_shown(owner_client, org, system_actor):
    sink_create(org=org, type="langfuse", config={k: v for k, v in LANGFUSE.items() if k != "type"},
                actor=system_actor)

    page = owner_client.get("/settings/").content.decode()

    assert "langfuse.example.com" in page
    assert "sk-lf-very-secret" not in page


def test_an_admin_adds_a_sink(admin_client, org):
    response = admin_client.post("/settings/sinks/new/", LANGFUSE)

    assert response.status_code == 302
    sink = ExportSink.objects.get(org=org)
    assert (sink.type, sink.config["public_key"]) == ("langfuse", "pk-lf-1")


def test_a_sink_without_what_its_type_needs_is_refused(owner_client, org):
    response = owner_client.post("/settings/sinks/new/", {"type": "s3", "bucket": "logs"})

    assert response.status_code == 400
    assert "needs this" in response.content.decode()
    assert not ExportSink.objects.filter(org=org).exists()


def test_a_member_cannot_add_a_sink(member_client, org):
    assert member_client.post("/settings/sinks/new/", LANGFUSE).status_code == 403
    assert not ExportSink.objects.filter(org=org).exists()


def test_removing_a_sink_asks_first(owner_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)

    response = owner_client.get(f"/settings/sinks/{sink.pk}/delete/")

    assert "Remove the datadog sink?" in response.content.decode()
    assert ExportSink.objects.filter(pk=sink.pk).exists()


def test_an_admin_removes_a_sink(admin_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)

    admin_client.post(f"/settings/sinks/{sink.pk}/delete/")

    assert not ExportSink.objects.filter(pk=sink.pk).exists()


def test_a_member_cannot_remove_a_sink(member_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)

    assert member_client.post(f"/settings/sinks/{sink.pk}/delete/").status_code == 403
    assert ExportSink.objects.filter(pk=sink.pk).exists()


def test_an_outsider_gets_404_for_another_orgs_sink(outsider_client, org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)

    assert outsider_client.post(f"/settings/sinks/{sink.pk}/delete/").status_code == 404
    assert ExportSink.objects.filter(pk=sink.pk).exists()


def test_a_new_org_token_is_shown_once(owner_client, org):
    response = owner_client.post("/settings/tokens/new/", {"name": "ci deploy"})

    secret = re.search(r"nm-[\w-]{30,}", response.content.decode()).group(0)
    token = OrgToken.objects.get(org=org, name="ci deploy")
    assert matches(secret, token.secret_hash)
    assert "no-store" in response["Cache-Control"]
    assert secret not in owner_client.get("/settings/").content.decode()


def test_a_member_cannot_create_a_token(member_client, org):
    assert member_client.post("/settings/tokens/new/", {"name": "mine"}).status_code == 403
    assert not OrgToken.objects.filter(org=org).exists()


def test_an_admin_revokes_a_token(admin_client, org, system_actor):
    token, _ = org_token_create(org=org, name="old script", actor=system_actor)

    admin_client.post(f"/settings/tokens/{token.pk}/revoke/")

    token.refresh_from_db()
    assert token.revoked is not None


def test_an_outsider_gets_404_for_another_orgs_token(outsider_client, org, system_actor):
    token, _ = org_token_create(org=org, name="theirs", actor=system_actor)

    assert outsider_client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked is None


def test_the_members_are_listed_with_their_roles(owner_client, admin_user):
    page = owner_client.get("/settings/").content.decode()

    assert "owner@example.com" in page
    assert "mate@example.com" in page
    assert re.search(r"admin@example.com</td><td data-label=\"Role\">admin", page)


def test_another_orgs_members_are_not_listed(owner_client, other_org):
    assert "outsider@example.com" not in owner_client.get("/settings/").content.decode()


# --- budget alerts ----------------------------------------------------------------------------

def test_an_admin_adds_a_webhook_and_sees_its_secret_once(admin_client, org):
    response = admin_client.post("/settings/webhooks/new/", {"url": "https://hooks.example.com/nemo",
                                                              "events": ["credits.low", "run.stopped"]})

    assert response.status_code == 200
    webhook = Webhook.objects.get(org=org)
    assert webhook.events == ["credits.low", "run.stopped"]
    assert webhook.secret in response.content.decode()
    assert webhook.secret not in admin_client.get("/settings/").content.decode()


def test_a_webhook_to_a_private_address_is_refused(owner_client, org):
    response = owner_client.post("/settings/webhooks/new/", {"url": "https://10.0.0.8/hook",
                                                              "events": ["run.stopped"]})

    assert response.status_code == 400
    assert "not a public address" in response.content.decode()
    assert not Webhook.objects.filter(org=org).exists()


def test_an_admin_removes_a_webhook(owner_client, org, system_actor):
    webhook = webhook_create(org=org, url="https://hooks.example.com/nemo", actor=system_actor)

    assert owner_client.post(f"/settings/webhooks/{webhook.pk}/delete/").status_code == 302
    assert not Webhook.objects.filter(pk=webhook.pk).exists()


def test_another_orgs_webhook_cannot_be_removed(owner_client, other_org, system_actor):
    webhook = webhook_create(org=other_org, url="https://hooks.example.com/nemo", actor=system_actor)

    assert owner_client.post(f"/settings/webhooks/{webhook.pk}/delete/").status_code == 404
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_a_member_cannot_add_a_webhook(member_client, org):
    response = member_client.post("/settings/webhooks/new/", {"url": "https://hooks.example.com/nemo",
                                                               "events": ["run.stopped"]})

    assert response.status_code == 403
    assert not Webhook.objects.filter(org=org).exists()


def test_an_admin_sets_the_credits_low_threshold(admin_client, org):
    assert alerts_of(org=org).credits_low_below == Decimal("1.00")

    assert admin_client.post("/settings/alerts/", {"credits_low_below": "2.50"}).status_code == 302

    assert alerts_of(org=org).credits_low_below == Decimal("2.50")
    assert owner_page_has(admin_client, 'value="2.500000"')


def test_recent_deliveries_show_their_state_attempts_and_failure(owner_client, org, system_actor, settings):
    key = make_key(org, "planner")
    settings.NEMO_EXPORT_SAFETY_LAG = timedelta(0)
    webhook = webhook_create(org=org, url="https://hooks.example.com/nemo", actor=system_actor)
    make_log(org, key, run_id="looping-run", status=429, error_code="run_loop_detected")
    (delivery_id,) = alerts_scan(org=org)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    WebhookDelivery.objects.filter(pk=delivery_id).update(attempts=2, last_error="the receiver answered 503")
    DeliveryAttempt.objects.create(delivery=delivery, status=503, error="the receiver answered 503")

    page = owner_client.get("/settings/").content.decode()

    assert delivery.event.event_id in page
    assert webhook.url in page
    assert "the receiver answered 503" in page
    assert "pending, retry" in page
    assert webhook.secret not in page


def owner_page_has(client, text: str) -> bool:
    return text in client.get("/settings/").content.decode()


# --- export sinks -----------------------------------------------------------------------------

def test_an_admin_adds_an_otlp_sink_with_headers_that_are_never_shown(admin_client, org):
    response = admin_client.post("/settings/sinks/new/", {
        "type": "otlp", "url": "https://otlp.example.com/api/public/otel",
        "headers": "Authorization=Basic c2VjcmV0LXZhbHVl\r\ndd-otlp-source=llmobs\r\n"})

    assert response.status_code == 302
    sink = ExportSink.objects.get(org=org)
    assert sink.config["headers"] == {"Authorization": "Basic c2VjcmV0LXZhbHVl", "dd-otlp-source": "llmobs"}
    page = admin_client.get("/settings/").content.decode()
    assert "otlp.example.com" in page
    assert "c2VjcmV0LXZhbHVl" not in page


def test_an_otlp_sink_with_a_malformed_header_is_refused(admin_client, org):
    response = admin_client.post("/settings/sinks/new/", {"type": "otlp", "url": "https://otlp.example.com",
                                                          "headers": "no equals sign"})

    assert response.status_code == 400
    assert "NAME=VALUE" in response.content.decode()
    assert not ExportSink.objects.filter(org=org).exists()
