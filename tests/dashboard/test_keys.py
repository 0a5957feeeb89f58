import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import DailySpend
from analytics.services import spend_rollup
from billing.models import Budget, CatalogModel
from billing.services import budget_set
from keys.models import VirtualKey
from keys.secrets import matches
from keys.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db

NEW_KEY = {
    "name": "support-bot",
    "allowed_models": ["gemini-2.5-flash"],
    "budget": "5.00",
    "budget_period": "monthly",
    "rpm_limit": "60",
    "tpm_limit": "100000",
    "max_parallel": "4",
    "expires": "",
}


def _secret_in(response) -> str:
    return re.search(r"sk-nemo-[\w-]{40,}", response.content.decode()).group(0)


def test_keys_page_lists_the_orgs_keys_with_their_spend_and_budget(owner_client, key, org, system_actor, make_log):
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="none", actor=system_actor)
    make_log(key, cost=Decimal("2.40"))

    page = owner_client.get("/keys/").content.decode()

    assert "researcher" in page
    assert f"sk-nemo-{key.prefix}" in page
    assert "$2.40" in page
    assert "$5.00" in page


def test_a_key_whose_budget_cannot_pay_for_its_smallest_call_shows_as_refusing_and_why(
        owner_client, key, org, system_actor, make_log):
    key.allowed_models = ["gemini-2.5-flash"]
    key.save()
    budget_set(org=org, key=key, amount=Decimal("0.01"), period="none", actor=system_actor)
    make_log(key, cost=Decimal("0.0098"))
    smallest = CatalogModel.objects.get(name="gemini-2.5-flash").output_price * 256 / 1_000_000

    page = owner_client.get("/keys/").content.decode()
    detail = owner_client.get(f"/keys/{key.pk}/").content.decode()

    assert smallest > Decimal("0.0002")
    assert ">over budget<" in page and ">active<" not in page
    assert "key budget: $0.0002 left; its smallest call costs $0.00064" in page
    assert 'data-meter="100"' in page
    assert "Every call gets a 402" in detail


def test_a_key_whose_org_budget_is_spent_shows_as_refusing(owner_client, key, org, system_actor, make_log):
    budget_set(org=org, amount=Decimal("1.00"), period="none", actor=system_actor)
    make_log(key, cost=Decimal("1.00"))

    page = owner_client.get("/keys/").content.decode()

    assert ">over budget<" in page and ">active<" not in page and "org budget: $0" in page


def test_a_key_whose_org_is_out_of_credits_shows_so(owner_client, key, org, make_log):
    make_log(key, cost=Decimal("5.00"))  # all of the sign-up credits

    page = owner_client.get(f"/keys/{key.pk}/").content.decode()

    assert ">out of credits<" in page and "Every call gets a 402" in page


def test_a_key_with_room_for_a_call_shows_as_active(owner_client, key, org, system_actor, make_log):
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="none", actor=system_actor)
    make_log(key, cost=Decimal("2.40"))

    page = owner_client.get("/keys/").content.decode()

    assert "over budget" not in page and ">active<" in page and 'data-meter="48"' in page


def test_keys_page_does_not_show_another_orgs_keys(owner_client, other_key):
    page = owner_client.get("/keys/").content.decode()

    assert "their-agent" not in page
    assert other_key.prefix not in page


def test_a_member_reads_the_keys_page_without_the_issue_button(member_client, key):
    response = member_client.get("/keys/")

    assert response.status_code == 200
    assert "researcher" in response.content.decode()
    assert "/keys/new/" not in response.content.decode()


def test_an_owner_issues_a_key_and_sees_its_secret_once(owner_client, org):
    response = owner_client.post("/keys/new/", NEW_KEY, follow=True)

    assert response.status_code == 200
    secret = _secret_in(response)
    key = VirtualKey.objects.get(org=org, name="support-bot")
    assert matches(secret, key.secret_hash)
    assert "no-store" in response["Cache-Control"]
    assert secret not in owner_client.get(f"/keys/{key.pk}/").content.decode()


def test_reloading_the_key_issued_page_makes_no_second_key_and_shows_the_secret_no_more(owner_client, org):
    posted = owner_client.post("/keys/new/", NEW_KEY)
    key = VirtualKey.objects.get(org=org, name="support-bot")
    assert posted.status_code == 302 and posted["Location"] == f"/keys/{key.pk}/secret/"
    first = owner_client.get(posted["Location"])

    reloaded = owner_client.get(posted["Location"])

    assert matches(_secret_in(first), key.secret_hash)
    assert "no-store" in first["Cache-Control"]
    assert reloaded.status_code == 200 and "sk-nemo-" + key.prefix not in reloaded.content.decode()
    assert re.search(r"sk-nemo-[\w-]{40,}", reloaded.content.decode()) is None
    assert "was already shown" in reloaded.content.decode()
    assert VirtualKey.objects.filter(org=org, name="support-bot").count() == 1


def test_reloading_the_rotated_page_rotates_no_second_time(owner_client, org, system_actor):
    key, _ = virtual_key_create(org=org, name="rotating", actor=system_actor)
    posted = owner_client.post(f"/keys/{key.pk}/rotate/")
    new_secret = _secret_in(owner_client.get(posted["Location"]))
    key.refresh_from_db()
    hash_after_rotation = key.secret_hash

    reloaded = owner_client.get(posted["Location"])

    key.refresh_from_db()
    assert key.secret_hash == hash_after_rotation and matches(new_secret, key.secret_hash)
    assert new_secret not in reloaded.content.decode()


def test_another_orgs_key_has_no_secret_page(owner_client, other_key):
    assert owner_client.get(f"/keys/{other_key.pk}/secret/").status_code == 404


def test_issuing_a_key_sets_its_limits_and_budget(owner_client, org):
    owner_client.post("/keys/new/", NEW_KEY)

    key = VirtualKey.objects.get(org=org, name="support-bot")
    assert (key.allowed_models, key.rpm_limit, key.tpm_limit, key.max_parallel) == (
        ["gemini-2.5-flash"], 60, 100000, 4)
    budget = Budget.objects.get(key=key)
    assert (budget.amount, budget.period) == (Decimal("5.00"), "monthly")


def test_issuing_a_key_sets_its_run_limits_and_the_key_page_shows_them(owner_client, org):
    owner_client.post("/keys/new/", {**NEW_KEY, "run_budget": "0.50", "run_max_steps": "40", "loop_limit": "3"})

    key = VirtualKey.objects.get(org=org, name="support-bot")
    assert (key.run_budget, key.run_max_steps, key.loop_limit) == (Decimal("0.50"), 40, 3)
    page = owner_client.get(f"/keys/{key.pk}/").content.decode()
    assert "$0.50 a run" in page and "asked for 3 times" in page


def test_a_key_issued_without_a_loop_guard_has_it_off(owner_client, org):
    owner_client.post("/keys/new/", NEW_KEY)

    key = VirtualKey.objects.get(org=org, name="support-bot")
    assert (key.run_budget, key.run_max_steps, key.loop_limit) == (None, None, 0)


def test_an_admin_issues_a_key(admin_client, org):
    response = admin_client.post("/keys/new/", NEW_KEY, follow=True)

    assert response.status_code == 200
    assert VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_a_member_cannot_issue_a_key(member_client, org):
    response = member_client.post("/keys/new/", NEW_KEY)

    assert response.status_code == 403
    assert not VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_a_key_cannot_be_put_in_another_orgs_team(owner_client, org, other_org, system_actor):
    their_team = team_create(org=other_org, name="theirs", actor=system_actor)

    response = owner_client.post("/keys/new/", {**NEW_KEY, "team": their_team.pk})

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_a_key_cannot_expire_in_the_past(owner_client, org):
    yesterday = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    response = owner_client.post("/keys/new/", {**NEW_KEY, "expires": yesterday})

    assert "must be in the future" in response.content.decode()
    assert not VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_a_negative_budget_is_refused(owner_client, org):
    response = owner_client.post("/keys/new/", {**NEW_KEY, "budget": "-1"})

    assert response.status_code == 200
    assert not VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_revoking_asks_first_and_a_get_changes_nothing(owner_client, key):
    response = owner_client.get(f"/keys/{key.pk}/revoke/")

    assert response.status_code == 200
    assert "Revoke researcher?" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked is None


def test_an_owner_revokes_a_key(owner_client, key):
    response = owner_client.post(f"/keys/{key.pk}/revoke/")

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked is not None
    assert "revoked" in owner_client.get("/keys/").content.decode()


def test_a_member_cannot_revoke_a_key(member_client, key):
    response = member_client.post(f"/keys/{key.pk}/revoke/")

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.revoked is None


def test_rotating_shows_a_new_secret_that_replaces_the_old_one(owner_client, org, system_actor):
    key, old_secret = virtual_key_create(org=org, name="rotating", actor=system_actor)

    response = owner_client.post(f"/keys/{key.pk}/rotate/", follow=True)

    new_secret = _secret_in(response)
    key.refresh_from_db()
    assert new_secret != old_secret
    assert matches(new_secret, key.secret_hash)
    assert not matches(old_secret, key.secret_hash)


def test_a_member_cannot_rotate_a_key(member_client, key):
    prefix = key.prefix

    response = member_client.post(f"/keys/{key.pk}/rotate/")

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.prefix == prefix


def test_a_revoked_key_cannot_be_rotated(owner_client, key):
    owner_client.post(f"/keys/{key.pk}/revoke/")
    prefix = VirtualKey.objects.get(pk=key.pk).prefix

    owner_client.post(f"/keys/{key.pk}/rotate/")

    assert VirtualKey.objects.get(pk=key.pk).prefix == prefix


def test_editing_a_key_changes_its_limits_team_and_budget(owner_client, key, org, system_actor):
    team = team_create(org=org, name="research", actor=system_actor)

    response = owner_client.post(f"/keys/{key.pk}/edit/", {
        "name": "researcher-2", "team": team.pk, "rpm_limit": "30", "budget": "2.50", "budget_period": "daily",
    })

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.team, key.rpm_limit, key.tpm_limit) == ("researcher-2", team, 30, None)
    assert Budget.objects.get(key=key).amount == Decimal("2.50")


def test_emptying_the_budget_of_a_key_removes_it(owner_client, key, org, system_actor):
    budget_set(org=org, key=key, amount=Decimal("1.00"), period="none", actor=system_actor)

    owner_client.post(f"/keys/{key.pk}/edit/", {"name": "researcher", "budget": "", "budget_period": "none"})

    assert not Budget.objects.filter(key=key).exists()


def test_the_edit_form_starts_from_the_keys_current_values(owner_client, key, org, system_actor):
    budget_set(org=org, key=key, amount=Decimal("3.25"), period="weekly", actor=system_actor)

    page = owner_client.get(f"/keys/{key.pk}/edit/").content.decode()

    assert 'value="researcher"' in page
    assert 'value="3.250000"' in page
    assert '<option value="weekly" selected>' in page


def test_a_member_cannot_edit_a_key(member_client, key):
    response = member_client.post(f"/keys/{key.pk}/edit/", {"name": "hijacked", "budget_period": "none"})

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.name == "researcher"


@pytest.mark.parametrize("path", ["/keys/{pk}/", "/keys/{pk}/edit/", "/keys/{pk}/revoke/", "/keys/{pk}/rotate/"])
def test_an_outsider_gets_404_for_another_orgs_key(outsider_client, key, path):
    assert outsider_client.get(path.format(pk=key.pk)).status_code == 404
    assert outsider_client.post(path.format(pk=key.pk)).status_code == 404


def test_an_outsider_cannot_revoke_another_orgs_key(outsider_client, key):
    outsider_client.post(f"/keys/{key.pk}/revoke/")

    key.refresh_from_db()
    assert key.revoked is None


def test_a_key_that_does_not_exist_is_404_like_another_orgs(owner_client):
    assert owner_client.get("/keys/999999/").status_code == 404


def test_the_key_page_links_to_its_calls_and_runs(owner_client, key):
    page = owner_client.get(f"/keys/{key.pk}/").content.decode()

    assert f"/log/?key={key.pk}" in page
    assert f"/runs/?key={key.pk}" in page


def test_team_choices_are_the_orgs_teams(owner_client, org, other_org, system_actor):
    team_create(org=org, name="ours", actor=system_actor)
    team_create(org=other_org, name="not-ours", actor=system_actor)

    page = owner_client.get("/keys/new/").content.decode()

    assert ">ours</option>" in page
    assert "not-ours" not in page


def test_the_model_choices_are_the_names_the_routing_file_serves(owner_client, settings, tmp_path):
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "providers: {local: {type: mock}}\n"
        "deployments: [{id: flash-local, provider: local, model: gemini-2.5-flash}]\n"
        "models: {support-default: {chain: [flash-local]}}\n"
    )
    settings.NEMO_ROUTER_CONFIG = str(routing)

    page = owner_client.get("/keys/new/").content.decode()

    assert 'value="support-default"' in page
    assert 'value="gemini-2.5-pro"' not in page


def test_a_key_id_beyond_any_row_is_404(owner_client):
    assert owner_client.get("/keys/99999999999999999999/").status_code == 404


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit", "max_parallel"])
def test_a_limit_beyond_what_a_key_can_hold_is_refused_with_the_form(owner_client, org, field):
    response = owner_client.post("/keys/new/", {**NEW_KEY, field: str(2**31)})

    assert response.status_code == 200
    assert not VirtualKey.objects.filter(org=org, name="support-bot").exists()


def test_the_keys_page_shows_each_keys_calls_failures_and_last_use(owner_client, org, key, system_actor, make_log):
    idle, _ = virtual_key_create(org=org, name="idle-agent", actor=system_actor)
    make_log(key, created=timezone.now() - timedelta(days=3))
    make_log(key, status=200)
    last = make_log(key, status=502)

    page = owner_client.get("/keys/").content.decode()
    detail = owner_client.get(f"/keys/{key.pk}/").content.decode()

    # No budget: its calls are all time, as its spend is.
    researcher = page.split(">researcher<")[1].split("</tr>")[0]
    assert re.search(r"data-calls>3 <span class=\"small muted\">33.3% failed", researcher)
    assert "data-calls-since>all time<" in researcher
    assert last.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in researcher
    assert "never" in page.split(">idle-agent<")[1].split("</tr>")[0]
    assert "Calls, all time</dt><dd data-calls>3 (1 failed, 33.3%)" in detail


def test_a_budgeted_keys_calls_and_error_rate_are_of_its_budget_period_like_its_spend(
        owner_client, org, key, system_actor, make_log):
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="daily", actor=system_actor)
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for status in (502, 502, 402):  # yesterday's calls count against yesterday's budget
        make_log(key, status=status, created=today - timedelta(minutes=1), cost=Decimal("1.00"))
    make_log(key, status=200, created=timezone.now(), cost=Decimal("0.25"))
    make_log(key, status=502, created=timezone.now(), cost=Decimal("0"))

    page = owner_client.get("/keys/").content.decode()
    detail = owner_client.get(f"/keys/{key.pk}/").content.decode()

    researcher = page.split(">researcher<")[1].split("</tr>")[0]
    assert "$0.25" in researcher
    assert re.search(r"data-calls>2 <span class=\"small muted\">50.0% failed", researcher)
    assert f"data-calls-since>since {today:%Y-%m-%d}<" in researcher
    assert f"Calls since {today:%Y-%m-%d}, the budget's period</dt><dd data-calls>2 (1 failed, 50.0%)" in detail


def test_the_keys_calls_and_failures_are_read_from_the_rollup_once_rolled_up(owner_client, key, make_log):
    for status in (200, 502, 402, 200):
        make_log(key, status=status)
    spend_rollup()
    # The ledger is what is read: the rows it holds could be pruned from the log.
    DailySpend.objects.filter(key=key).update(calls=40, errors=10)

    page = owner_client.get("/keys/").content.decode()

    researcher = page.split(">researcher<")[1].split("</tr>")[0]
    assert re.search(r"data-calls>40 <span class=\"small muted\">25.0% failed", researcher)


def test_the_key_issued_page_fills_the_new_key_into_each_snippet(owner_client, org):
    response = owner_client.post("/keys/new/", NEW_KEY, follow=True)
    page, secret = response.content.decode(), _secret_in(response)
    for snippet in ("python", "curl", "javascript", "claude-code"):
        block = re.search(rf'data-use="{snippet}">(.*?)</pre>', page, re.S).group(1)
        assert secret in block, snippet
    assert "ANTHROPIC_BASE_URL=http://testserver ANTHROPIC_AUTH_TOKEN=" + secret in page


def test_a_key_with_a_monthly_budget_says_when_it_resets(owner_client, org, key, system_actor):
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="monthly", actor=system_actor)
    now = timezone.now().astimezone(UTC)
    first_of_next = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)

    page = owner_client.get(f"/keys/{key.pk}/").content.decode()

    assert f"resets {first_of_next:%Y-%m-%d} 00:00:00 UTC" in page
