"""A stored request body keeps its client's key order: a json column on PostgreSQL, not jsonb.

A plain AlterField (a table rewrite on PostgreSQL). Rows stored before it keep the order jsonb
gave them; rows stored after it read back as their client sent them.
"""

import analytics.fields
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0011_spend_rollup'),
    ]

    operations = [
        migrations.AlterField(
            model_name='requestlog',
            name='request_body',
            field=analytics.fields.OrderedJSONField(blank=True, null=True),
        ),
    ]
