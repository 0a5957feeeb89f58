"""createorg: an org and its sign-up credits, which are billing's (so the command is billing's)."""

from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand

from billing.services import organization_create_with_credits
from keys.audit import Actor

# Money columns hold 12 digits before the decimal point; a larger amount would fail in the database.
_MAX_AMOUNT = Decimal(10) ** 12


def _money(value: str) -> Decimal:
    """An argparse type. It raises ArgumentTypeError so a bad amount is reported as a usage error
    (a CommandError raised while parsing escapes as a traceback from the command line)."""
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ArgumentTypeError(f"not an amount in USD: {value!r}") from exc
    # is_finite first: comparing NaN with < raises InvalidOperation.
    if not amount.is_finite() or amount < 0 or amount >= _MAX_AMOUNT:
        raise ArgumentTypeError(f"not an amount in USD: {value!r}")
    return amount


class Command(BaseCommand):
    help = "Creates an organization and prints its slug."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--credits", type=_money, default=None, help="Credits in USD (default 5.00).")

    def handle(self, *args, name: str, credits: Decimal | None, **options) -> None:
        org = organization_create_with_credits(name=name, credits=credits, actor=Actor.system("command:createorg"))
        self.stdout.write(org.slug)
