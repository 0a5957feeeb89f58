from django.core.management.base import BaseCommand

from billing.catalog import catalog_sync


class Command(BaseCommand):
    help = "Loads the shipped model catalog (prices, limits, capabilities) into the database."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{catalog_sync()} models in the catalog")
