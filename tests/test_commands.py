"""The management commands of CONTRACT.md ("Running it"), as scripts and users run them."""

import os
import re
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.models import Budget
from dashboard.management.commands.demo import DEMO_EMAIL
from dashboard.selectors import credit_balance
from keys.models import Membership, Organization, Team, VirtualKey
from keys.selectors import key_authenticate, org_token_authenticate

pytestmark = pytest.mark.django_db

PROJECT_DIR = Path(__file__).resolve().parent.parent
SECRET_LINE = re.compile(r"sk-nemo-[A-Za-z0-9_-]+\n")
TOKEN_LINE = re.compile(r"nm-[A-Za-z0-9_-]+\n")


def run(*args: str) -> str:
    """Runs a command the way a script does and returns what it printed on stdout."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_createorg_prints_the_new_orgs_slug_alone():
    assert run("createorg", "Acme Robotics") == "acme-robotics\n"
    assert Organization.objects.get(slug="acme-robotics").name == "Acme Robotics"


def test_createorg_gives_five_dollars_of_credits_by_default():
    slug = run("createorg", "Acme").strip()
    assert credit_balance(org=Organization.objects.get(slug=slug)) == Decimal("5.00")


def test_createorg_credits_override_the_default():
    slug = run("createorg", "Acme", "--credits", "12.50").strip()
    assert credit_balance(org=Organization.objects.get(slug=slug)) == Decimal("12.50")


@pytest.mark.parametrize("amount", ["abc", "-1", "nan", "1e20"])
def test_createorg_refuses_an_amount_that_is_not_credits(amount):
    with pytest.raises(CommandError, match="not an amount in USD"):
        run("createorg", "Acme", "--credits", amount)
    assert not Organization.objects.exists()


def test_createkey_prints_the_secret_alone_and_it_authenticates(org):
    printed = run("createkey", "--org", org.slug, "--name", "researcher")
    assert SECRET_LINE.fullmatch(printed)
    key = key_authenticate(printed.strip())
    assert (key.org, key.name, key.is_active()) == (org, "researcher", True)


def test_createkey_options_land_on_the_key(org):
    secret = run(
        "createkey", "--org", org.slug, "--name", "researcher", "--rpm", "60", "--tpm", "100000",
        "--models", "gemini-2.5-flash, gpt-4o-mini",
    ).strip()
    key = key_authenticate(secret)
    assert (key.rpm_limit, key.tpm_limit, key.allowed_models) == (60, 100000, ["gemini-2.5-flash", "gpt-4o-mini"])


def test_createkey_sets_the_keys_default_output_limit(org):
    secret = run("createkey", "--org", org.slug, "--name", "writer", "--default-max-tokens", "1024").strip()

    assert key_authenticate(secret).default_max_tokens == 1024


def test_createkey_sets_the_keys_run_limits(org):
    secret = run("createkey", "--org", org.slug, "--name", "agent", "--run-budget", "0.50", "--run-max-steps", "40",
                 "--loop-limit", "3").strip()

    key = key_authenticate(secret)
    assert (key.run_budget, key.run_max_steps, key.loop_limit) == (Decimal("0.50"), 40, 3)


def test_createkey_without_models_allows_every_model(org):
    key = key_authenticate(run("createkey", "--org", org.slug, "--name", "researcher").strip())
    assert key.allowed_models == []


def test_createkey_budget_lands_on_the_key(org):
    secret = run(
        "createkey", "--org", org.slug, "--name", "researcher", "--budget", "5.00", "--budget-period", "daily"
    ).strip()
    key = key_authenticate(secret)
    assert list(Budget.objects.filter(org=org).values_list("scope", "key", "amount", "period")) == [
        ("key", key.pk, Decimal("5.00"), "daily")
    ]


def test_createkey_budget_without_a_period_never_resets(org):
    key = key_authenticate(run("createkey", "--org", org.slug, "--name", "researcher", "--budget", "2").strip())
    assert key.budgets.get().period == Budget.Period.NONE


def test_createkey_creates_a_missing_team(org):
    key = key_authenticate(run("createkey", "--org", org.slug, "--name", "researcher", "--team", "science").strip())
    assert (key.team.name, key.team.org) == ("science", org)


def test_createkey_reuses_an_existing_team(org):
    run("createkey", "--org", org.slug, "--name", "one", "--team", "science")
    run("createkey", "--org", org.slug, "--name", "two", "--team", "science")
    team = Team.objects.get(org=org, name="science")
    assert sorted(team.keys.values_list("name", flat=True)) == ["one", "two"]


def test_createkey_refuses_an_unknown_org():
    with pytest.raises(CommandError, match="no organization with slug 'nobody'"):
        run("createkey", "--org", "nobody", "--name", "researcher")


def test_createkey_does_not_use_another_orgs_team_of_the_same_name(org, other_org):
    run("createkey", "--org", other_org.slug, "--name", "theirs", "--team", "science")
    key = key_authenticate(run("createkey", "--org", org.slug, "--name", "ours", "--team", "science").strip())
    assert key.team.org == org


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--budget", "five", "not an amount in USD"),
        ("--budget", "-5", "not an amount in USD"),
        ("--budget-period", "hourly", "invalid choice"),
        ("--rpm", "0", "must be positive"),
        ("--tpm", "lots", "not a whole number"),
    ],
)
def test_createkey_refuses_a_bad_option_and_creates_nothing(org, option, value, message):
    with pytest.raises(CommandError, match=message):
        run("createkey", "--org", org.slug, "--name", "researcher", option, value)
    assert not VirtualKey.objects.exists()


def test_createtoken_prints_a_token_alone_and_it_authenticates(org):
    printed = run("createtoken", "--org", org.slug, "--name", "ci")
    assert TOKEN_LINE.fullmatch(printed)
    token = org_token_authenticate(printed.strip())
    assert (token.org, token.name) == (org, "ci")


def test_createtoken_refuses_an_unknown_org():
    with pytest.raises(CommandError, match="no organization with slug 'nobody'"):
        run("createtoken", "--org", "nobody")


def test_demo_prints_a_working_key_for_the_demo_org():
    printed = run("demo")
    secret = re.search(r"Demo key: (sk-nemo-\S+)", printed).group(1)
    key = key_authenticate(secret)
    assert Membership.objects.get(org=key.org, user__username=DEMO_EMAIL).role == Membership.Role.OWNER


def test_demo_run_twice_reuses_the_demo_org():
    run("demo")
    run("demo")
    assert (Organization.objects.count(), VirtualKey.objects.count()) == (1, 2)


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": database_url,
               "SECRET_KEY": os.environ["SECRET_KEY"]}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=environ, capture_output=True, text=True,
        timeout=120,
    )


def test_a_user_creates_an_org_and_a_key_from_the_shell(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'nemo.sqlite3'}"
    migrated = manage("migrate", "--noinput", "-v0", database_url=database_url)
    assert migrated.returncode == 0, migrated.stderr

    created_org = manage("createorg", "Shell Co", "--credits", "7.50", database_url=database_url)
    assert (created_org.returncode, created_org.stdout) == (0, "shell-co\n"), created_org.stderr

    created_key = manage(
        "createkey", "--org", "shell-co", "--name", "agent", "--budget", "1.25", database_url=database_url
    )
    assert created_key.returncode == 0, created_key.stderr
    assert SECRET_LINE.fullmatch(created_key.stdout)

    check = (
        "from keys.selectors import key_authenticate; from dashboard.selectors import credit_balance; "
        f"key = key_authenticate({created_key.stdout.strip()!r}); "
        "print(key.org.slug, key.name, key.budgets.get().amount, credit_balance(org=key.org))"
    )
    checked = manage("shell", "-v", "0", "-c", check, database_url=database_url)
    assert checked.stdout == "shell-co agent 1.250000 7.500000\n", checked.stderr


def test_a_bad_amount_from_the_shell_is_a_usage_error_not_a_traceback(tmp_path):
    refused = manage("createorg", "Shell Co", "--credits", "lots", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert refused.returncode == 2
    assert last_line(refused.stderr) == "manage.py createorg: error: argument --credits: not an amount in USD: 'lots'"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]
