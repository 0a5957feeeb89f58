"""The tag filter's index: GIN over (org, tags) of the tagged rows, org by btree_gin (a trusted
extension since PostgreSQL 13: the database's owner may create it). Built concurrently, so the
gateway's inserts go on meanwhile. Other databases have no GIN: there it is only in the state."""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently, BtreeGinExtension
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('analytics', '0013_request_log_tags'),
    ]

    operations = [
        BtreeGinExtension(),
        AddIndexConcurrentlyOnPostgres(
            model_name='requestlog',
            index=django.contrib.postgres.indexes.GinIndex(condition=models.Q(('tags__isnull', False)), fields=['org', 'tags'], name='log_org_tags', opclasses=['int8_ops', 'jsonb_path_ops']),
        ),
    ]
