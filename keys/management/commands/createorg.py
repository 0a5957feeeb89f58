from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from keys.audit import Actor
from keys.services import organization_create


def _money(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise CommandError(f"not an amount in USD: {value!r}") from exc
    if amount < 0 or not amount.is_finite():
        raise CommandError(f"not an amount in USD: {value!r}")
    return amount


class Command(BaseCommand):
    help = "Creates an organization and prints its slug."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--credits", type=_money, default=None, help="Credits in USD (default 5.00).")

    def handle(self, *args, name: str, credits: Decimal | None, **options) -> None:
        org = organization_create(name=name, credits=credits, actor=Actor.system("command:createorg"))
        self.stdout.write(org.slug)
