"""Cache-write prices (Claude's ``cache_creation_input_tokens``, issue 26): a column, empty for
the models that have none (a write is then at the input price), and the catalog's prices for the
Claude models already in the database."""

from decimal import Decimal

from django.db import migrations, models


def load(apps, schema_editor):
    from billing.catalog import catalog_entries

    model_class = apps.get_model("billing", "CatalogModel")
    for entry in catalog_entries():
        if entry.get("cache_write_price"):
            model_class.objects.filter(name=entry["name"]).update(cache_write_price=Decimal(entry["cache_write_price"]))


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_load_embedding_models")]

    operations = [
        migrations.AddField(
            model_name="catalogmodel",
            name="cache_write_price",
            field=models.DecimalField(
                blank=True, decimal_places=4, max_digits=12, null=True,
                help_text="USD per million input tokens written to the prompt cache (Claude's cache writes); "
                          "empty: the input price",
            ),
        ),
        migrations.RunPython(load, migrations.RunPython.noop),
    ]
