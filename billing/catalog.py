"""The shipped model catalog (``billing/catalog.json``): prices, limits and capabilities."""

import json
from decimal import Decimal
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.json")


def catalog_entries() -> list[dict]:
    return json.loads(CATALOG_FILE.read_text())["models"]


def catalog_sync(model_class=None) -> int:
    """Loads the shipped catalog into the database; returns how many entries it holds.

    ``model_class`` lets the data migration pass its historical model.
    """
    if model_class is None:
        from billing.models import CatalogModel as model_class
    for entry in catalog_entries():
        model_class.objects.update_or_create(
            name=entry["name"],
            defaults={
                "vendor": entry["vendor"],
                "input_price": Decimal(entry["input_price"]),
                "cached_input_price": Decimal(entry["cached_input_price"]),
                "output_price": Decimal(entry["output_price"]),
                "context_window": entry["context_window"],
                "max_output_tokens": entry["max_output_tokens"],
                "capabilities": entry["capabilities"],
            },
        )
    return model_class.objects.count()
