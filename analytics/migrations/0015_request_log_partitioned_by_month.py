"""The request log partitioned by month (RANGE on ``created``), on PostgreSQL.

The table is moved over whole: renamed, a partitioned table made from its live definition (so
every column other migrations added comes along), a partition for each month its rows fall in and
for this month and the three next, a DEFAULT partition (an insert never fails for want of a
month's partition), its rows copied, the id sequence carried on, its indexes made again on the
new table (partitioned indexes) and the old one dropped. A unique index on a partitioned table
must hold the partition key: the primary key becomes (id, created) and the request id's unique
constraint (request_id, created). Ids still come from one sequence, so Django's pk stays ``id``.
The move holds the old table's lock until it commits: the gateway's inserts wait for it.

SQLite (the embedded default) keeps its plain table: only the unique constraint changes there.
Reversible: backwards, the rows go back into a plain table.
"""

from datetime import UTC, datetime

import django.db.models.deletion
from django.db import migrations, models

TABLE = "analytics_requestlog"
OLD = "analytics_requestlog_moving"
MONTHS_AHEAD = 3

REQUEST_ID_ONLY = models.UniqueConstraint(fields=["request_id"], name="log_request_id_unique")
REQUEST_ID_AND_CREATED = models.UniqueConstraint(fields=["request_id", "created"], name="log_request_id_unique")


def _one(cursor, sql, params=()):
    cursor.execute(sql, params)
    return cursor.fetchone()


def _indexes(cursor, table):
    """(name, definition, constraint type or None, its columns) of each index of ``table``."""
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid), c.contype, "
        "ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) "
        "      JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.n) "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
        "WHERE x.indrelid = to_regclass(%s) ORDER BY i.relname", [table])
    return cursor.fetchall()


def _columns(cursor, table):
    cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                   "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", [table])
    return ", ".join(f'"{name}"' for (name,) in cursor.fetchall())


def _month_start(moment, months_later=0):
    months = moment.year * 12 + moment.month - 1 + months_later
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def _set_aside(cursor):
    """Renames the table and its id sequence, drops its indexes (their names are the new
    table's) and returns what they were."""
    indexes = _indexes(cursor, TABLE)
    (sequence,) = _one(cursor, "SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {OLD}_id_seq")
    for name, _, constraint, _ in indexes:
        cursor.execute(f'ALTER TABLE {OLD} DROP CONSTRAINT "{name}"' if constraint else f'DROP INDEX "{name}"')
    return indexes


def _move_in(cursor, indexes, *, key_columns):
    """Copies the rows over, carries the sequence on, makes the indexes again (a unique one with
    ``key_columns`` added) and drops the old table."""
    columns = _columns(cursor, TABLE)
    cursor.execute(f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM {OLD}")
    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), last_value, is_called) "
                   f"FROM {OLD}_id_seq")
    for name, definition, constraint, index_columns in indexes:
        if constraint in ("p", "u"):
            kept = [column for column in index_columns if column not in key_columns]
            kind = "PRIMARY KEY" if constraint == "p" else "UNIQUE"
            cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {kind} '
                           f"({', '.join(kept + list(key_columns))})")
        else:
            cursor.execute(definition)
    cursor.execute(f"DROP TABLE {OLD}")


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        model = apps.get_model("analytics", "RequestLog")
        schema_editor.remove_constraint(model, REQUEST_ID_ONLY)
        schema_editor.add_constraint(model, REQUEST_ID_AND_CREATED)
        return
    with schema_editor.connection.cursor() as cursor:
        indexes = _set_aside(cursor)
        cursor.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY "
                       "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (created)")
        cursor.execute(f"SELECT DISTINCT date_trunc('month', created AT TIME ZONE 'UTC') FROM {OLD}")
        now = datetime.now(UTC)
        months = {month.replace(tzinfo=UTC) for (month,) in cursor.fetchall()}
        months.update(_month_start(now, n) for n in range(MONTHS_AHEAD + 1))
        for start in sorted(months):
            cursor.execute(f"CREATE TABLE {TABLE}_p{start.year:04d}_{start.month:02d} PARTITION OF {TABLE} "
                           "FOR VALUES FROM (%s) TO (%s)", [start, _month_start(start, 1)])
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
        _move_in(cursor, indexes, key_columns=["created"])


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        model = apps.get_model("analytics", "RequestLog")
        schema_editor.remove_constraint(model, REQUEST_ID_AND_CREATED)
        schema_editor.add_constraint(model, REQUEST_ID_ONLY)
        return
    with schema_editor.connection.cursor() as cursor:
        indexes = _set_aside(cursor)
        # The partitioned indexes' definitions name the table ONLY; a plain table takes them as they are.
        indexes = [(name, definition.replace(" ON ONLY ", " ON "), constraint, [c for c in columns if c != "created"])
                   for name, definition, constraint, columns in indexes]
        cursor.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY "
                       "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)")
        _move_in(cursor, indexes, key_columns=[])


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0014_request_log_tags_index'),
    ]

    operations = [
        migrations.AlterField(
            model_name='requestlog',
            name='key',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, to='keys.virtualkey'),
        ),
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.RemoveConstraint(model_name='requestlog', name='log_request_id_unique'),
            migrations.AddConstraint(model_name='requestlog', constraint=REQUEST_ID_AND_CREATED),
        ]),
        migrations.RunPython(partition, unpartition),
    ]
