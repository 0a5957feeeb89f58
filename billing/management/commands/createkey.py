"""createkey: a key, and with ``--budget`` its budget in the same transaction; budgets are
billing's, so the command is billing's."""

from argparse import ArgumentTypeError

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing.management.commands.createorg import _money
from billing.models import Budget
from billing.services import budget_set
from keys.audit import Actor
from keys.models import Team
from keys.selectors import organization_by_slug
from keys.services import team_create, virtual_key_create


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if number <= 0:
        raise ArgumentTypeError(f"must be positive: {value!r}")
    return number


class Command(BaseCommand):
    help = "Creates a virtual key and prints its secret, alone, once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", required=True, help="The org's slug.")
        parser.add_argument("--name", required=True, help="The agent this key is for.")
        parser.add_argument("--team", help="Team name (created if missing).")
        parser.add_argument("--budget", type=_money)
        parser.add_argument("--budget-period", choices=Budget.Period.values, default=Budget.Period.NONE)
        parser.add_argument("--rpm", type=_positive_int)
        parser.add_argument("--tpm", type=_positive_int)
        parser.add_argument("--parallel", type=_positive_int)
        parser.add_argument("--default-max-tokens", type=_positive_int,
                            help="The output limit a call that names none is sent at most (default: the org's).")
        parser.add_argument("--run-budget", type=_money, help="The most one run (X-Nemo-Run) may spend, USD.")
        parser.add_argument("--run-max-steps", type=_positive_int, help="The most calls one run may make.")
        parser.add_argument("--loop-limit", type=_positive_int, default=0,
                            help="Stop a run once its answers asked for the same tool call this many times.")
        parser.add_argument("--models", help="Comma-separated model names this key may use.")

    def handle(self, *args, **opts) -> None:
        org = organization_by_slug(opts["org"])
        if org is None:
            raise CommandError(f"no organization with slug {opts['org']!r}")
        actor = Actor.system("command:createkey")
        models = [m.strip() for m in (opts["models"] or "").split(",") if m.strip()]
        with transaction.atomic():
            team = None
            if opts["team"]:
                team = Team.objects.filter(org=org, name=opts["team"]).first() or team_create(
                    org=org, name=opts["team"], actor=actor
                )
            key, secret = virtual_key_create(
                org=org, name=opts["name"], team=team, allowed_models=models, actor=actor,
                rpm_limit=opts["rpm"], tpm_limit=opts["tpm"], max_parallel=opts["parallel"],
                default_max_tokens=opts["default_max_tokens"], run_budget=opts["run_budget"],
                run_max_steps=opts["run_max_steps"], loop_limit=opts["loop_limit"],
            )
            if opts["budget"] is not None:
                budget_set(org=org, key=key, amount=opts["budget"], period=opts["budget_period"], actor=actor)
        self.stdout.write(secret)
