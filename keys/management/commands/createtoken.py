from django.core.management.base import BaseCommand, CommandError

from keys.audit import Actor
from keys.selectors import organization_by_slug
from keys.services import org_token_create


class Command(BaseCommand):
    help = "Creates a management-API token for an org and prints it, alone, once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", required=True, help="The org's slug.")
        parser.add_argument("--name", default="script")

    def handle(self, *args, **opts) -> None:
        org = organization_by_slug(opts["org"])
        if org is None:
            raise CommandError(f"no organization with slug {opts['org']!r}")
        _, secret = org_token_create(org=org, name=opts["name"], actor=Actor.system("command:createtoken"))
        self.stdout.write(secret)
