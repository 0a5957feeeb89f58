"""The catalog's embedding models (issue 25), into a database the first catalog migration has
already run on. Only what is missing is added: prices an operator changed since stay as they are."""

from decimal import Decimal

from django.db import migrations


def load(apps, schema_editor):
    from billing.catalog import catalog_entries

    model_class = apps.get_model("billing", "CatalogModel")
    for entry in catalog_entries():
        if "embeddings" not in entry["capabilities"]:
            continue
        model_class.objects.get_or_create(
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


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_daily_spend_to_analytics")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
