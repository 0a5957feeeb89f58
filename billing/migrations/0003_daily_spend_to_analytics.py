"""DailySpend, the request log's daily rollup, moved to analytics (its 0005): the table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("billing", "0002_load_catalog")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="DailySpend")]),
    ]
