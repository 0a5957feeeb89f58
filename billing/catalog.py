"""The shipped model catalog (``billing/catalog.json``): prices, limits and capabilities."""

import json
from decimal import Decimal
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.json")


def catalog_entries() -> list[dict]:
    return json.loads(CATALOG_FILE.read_text())["models"]


def cache_write_price(entry: dict) -> Decimal | None:
    return Decimal(entry["cache_write_price"]) if entry.get("cache_write_price") else None


def catalog_sync(model_class=None) -> int:
    """Loads the shipped catalog into the database; returns how many entries it holds.

    ``model_class`` lets the data migration pass its historical model.
    """
    if model_class is None:
        from billing.models import CatalogModel as model_class
    # (The first catalog migration's model has no cache-write prices yet: migration 0005 adds them.)
    with_cache_writes = any(field.name == "cache_write_price" for field in model_class._meta.get_fields())
    for entry in catalog_entries():
        extra = {"cache_write_price": cache_write_price(entry)} if with_cache_writes else {}
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
                **extra,
            },
        )
    return model_class.objects.count()
