from django.db import migrations


def load(apps, schema_editor):
    from billing.catalog import catalog_sync

    catalog_sync(apps.get_model("billing", "CatalogModel"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
