"""A request-log row on its way into the table: each value fitted to its column, as SQL.

The recorder (gateway/recorder.py) writes rows as plain dicts of the log's columns, through its
own prepared statements on PostgreSQL and one multi-row INSERT elsewhere: building model
instances and running the ORM's compiler would cost more than the rest of the insert.
"""

from __future__ import annotations

import functools

import orjson
from django.db import close_old_connections, connection

from analytics.ledger import POSITION_SQL, ROW_POSITION_SQL, commit_in_turn
from analytics.reaper import WORKER_LOST


def connection_params() -> dict:
    """Django's database settings as psycopg connection parameters."""
    settings_dict = connection.settings_dict
    params = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict["USER"] or None,
        "password": settings_dict["PASSWORD"] or None,
        "host": settings_dict["HOST"] or None,
        "port": settings_dict["PORT"] or None,
        **{k: v for k, v in settings_dict.get("OPTIONS", {}).items() if k not in ("pool", "server_side_binding")},
    }
    return {k: v for k, v in params.items() if v is not None}


@functools.cache
def _insert_fields() -> tuple:
    """The columns the gateway writes: all but the id and those the database fills in."""
    from analytics.models import RequestLog

    return tuple(
        field for field in RequestLog._meta.concrete_fields if not field.primary_key and not field.has_db_default()
    )


@functools.cache
def _columns() -> tuple[tuple[str, str, object, tuple | None], ...]:
    """(attribute, kind, field, bounds) of each column the gateway writes, in the INSERT's order:
    what ``fit`` needs to make any value of a call fit its column."""
    from django.db.models import BooleanField, CharField, DateTimeField, IntegerField, JSONField, TextField

    columns = []
    for field in _insert_fields():
        bounds = None
        if isinstance(field, JSONField):
            kind = "json"
        elif isinstance(field, BooleanField):
            kind = "bool"
        elif isinstance(field, IntegerField):
            kind, bounds = "int", connection.ops.integer_field_range(field.get_internal_type())
        elif isinstance(field, (CharField, TextField)):
            kind, bounds = "text", field.max_length
        elif isinstance(field, DateTimeField):
            kind = "datetime"
        else:
            kind = "other"
        columns.append((field.attname, kind, field, bounds))
    return tuple(columns)


def fit(value, kind: str, bounds):
    """A value as its column takes it. Text: no NUL (PostgreSQL's text cannot hold one) and no
    longer than the column (a client's model name can be any length); JSON: its text, without
    ``\\u0000`` (jsonb refuses it); integers: within the column's range (an upstream's usage can
    say anything). A call is logged whatever its client or upstream sent."""
    if value is None:
        return None
    if kind == "text":
        if not isinstance(value, str):
            value = str(value)  # an upstream's finish reason, say, may be a number
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return value if bounds is None or len(value) <= bounds else value[:bounds]
    if kind == "json":
        text = orjson.dumps(value)
        # find, not ``in`` (see gateway/providers/sse.py's _one_data_line).
        return orjson.dumps(_without_nul(value)) if text.find(b"\\u0000") >= 0 else text
    if kind == "int":
        low, high = bounds
        return value if low <= value <= high else max(low, min(high, value))
    return value


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


_KINDS = ("text", "other", "int", "json", "bool", "datetime")


@functools.cache
def _columns_by_kind() -> tuple[tuple[tuple[int, str, object, tuple | None], ...], ...]:
    """(position, attribute, field, bounds) of the columns of each kind: text, other (ids and
    Decimals), int, json, bool, datetime."""
    kinds: dict[str, list] = {kind: [] for kind in _KINDS}
    for position, (name, kind, field, bounds) in enumerate(_columns()):
        kinds[kind].append((position, name, field, bounds))
    return tuple(tuple(kinds[kind]) for kind in _KINDS)


def postgres_params(row: dict) -> list[bytes | None]:
    """A row's values as text parameters of the prepared INSERT: the gateway's values are of the
    columns' types already (int, str, bool, Decimal, aware datetime). Kind by kind (each column's
    value put at its place): this runs for every column of every row, and a loop of one kind's
    columns makes no choice of kind per column."""
    texts, others, ints, jsons, bools, datetimes = _columns_by_kind()
    params: list[bytes | None] = [None] * len(_columns())
    # The row's value or the column's default, as in _params.
    for position, name, field, bounds in texts:
        value = row[name] if name in row else field.get_default()
        if type(value) is str and (bounds is None or len(value) <= bounds) and "\x00" not in value:
            # The usual text, which ``fit`` would leave as it is (it fits, no NUL).
            params[position] = value.encode()
        elif (value := fit(value, "text", bounds)) is not None:
            params[position] = value.encode()
    for position, name, field, _ in others:
        # Ids and Decimals, which ``fit`` leaves as they are.
        value = row[name] if name in row else field.get_default()
        if value is not None:
            params[position] = str(value).encode()
    for position, name, field, (low, high) in ints:
        value = row[name] if name in row else field.get_default()
        if value is not None:
            params[position] = str(value if low <= value <= high else max(low, min(high, value))).encode()
    for position, name, field, _ in jsons:
        value = row[name] if name in row else field.get_default()
        if value is not None:
            # (Most rows' lists of tool calls and of tools offered are empty.)
            params[position] = b"[]" if value == [] else fit(value, "json", None)
    for position, name, field, _ in bools:
        value = row[name] if name in row else field.get_default()
        if value is not None:
            params[position] = b"t" if value else b"f"
    for position, name, field, _ in datetimes:
        value = row[name] if name in row else field.get_default()
        if value is not None:
            params[position] = value.isoformat().encode()
    return params


def _params(rows: list[dict]) -> list:
    params = []
    for row in rows:
        for name, kind, field, bounds in _columns():
            value = fit(row[name] if name in row else field.get_default(), kind, bounds)
            params.append(value.decode() if kind == "json" and value is not None else
                          field.get_db_prep_save(value, connection))
    return params


def commit_rows(rows: list[dict]) -> int:
    """One multi-row INSERT for the batch, in autocommit: a single statement is its own
    transaction, so the batch costs one round trip and one commit. Rows are plain dicts of the
    log's columns: building model instances and running the ORM's compiler would cost more than
    the rest of the insert. Returns the commit's position (analytics.ledger)."""
    close_old_connections()

    def insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute(insert_sql(len(rows)), _params(rows))

    return commit_in_turn(insert)


INSERT = b"nemo_log_insert"
INSERT_RETURNING_POSITION = b"nemo_log_insert_position"
POSITION = b"nemo_log_position"
LANDED = b"nemo_log_landed"
PING = b"nemo_log_ping"
REAPED = b"nemo_log_reaped"


def text_array(values: list[str]) -> bytes:
    """A PostgreSQL array literal of these strings."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return ("{" + ",".join(quoted) + "}").encode()


@functools.cache
def statements() -> dict[bytes, str]:
    """The recorder's prepared statements on PostgreSQL (placeholders ``$n``)."""
    from analytics.models import RequestLog

    insert = insert_sql(1, "${}")
    return {INSERT: insert, INSERT_RETURNING_POSITION: f"{insert} RETURNING {POSITION_SQL}",
            POSITION: f"SELECT {POSITION_SQL}",
            PING: "SELECT 1",
            LANDED: f"SELECT request_id, {ROW_POSITION_SQL} FROM {RequestLog._meta.db_table} "
                     f"WHERE request_id = ANY($1::text[]) AND {_CREATED_WITHIN}",
            REAPED: f"SELECT request_id, {ROW_POSITION_SQL} FROM {RequestLog._meta.db_table} "
                     f"WHERE request_id = ANY($1::text[]) AND {_CREATED_WITHIN} "
                     f"AND attempts @> '[{{\"outcome\": \"{WORKER_LOST}\"}}]'"}


# The rows looked up (``LANDED``, ``REAPED``) carry the ``created`` their call was logged with (the
# reaper's too: the call's arrival), so the lookup reads only the months between the first and the
# last of them: PostgreSQL prunes the log's other partitions when the statement starts.
_CREATED_WITHIN = "created >= $2::timestamptz AND created <= $3::timestamptz"


def created_bounds(rows: list[dict]) -> list[bytes]:
    """``$2`` and ``$3`` of ``LANDED`` and ``REAPED``: the earliest and the latest of the rows' ``created``."""
    times = [row["created"] for row in rows]
    return [min(times).isoformat().encode(), max(times).isoformat().encode()]


# The most rows one INSERT of the recorder takes (sizes are powers of two up to it, below).
ROWS_PER_INSERT = 64


def inserts_of(rows: list[dict]) -> list[tuple[bytes, str, list]]:
    """The prepared multi-row INSERTs that write these rows: (name, SQL, parameters) of each.

    PostgreSQL's cost of an INSERT is mostly per statement, not per row: the executor's set-up
    (each of the log's indexes opened, its CHECK constraints read from their text) was ~170 k of
    a row's ~390 k instructions written one statement each; ten rows in one statement cost ~240 k
    each (callgrind; bench/RESULTS.md, "Session 14: PostgreSQL's CPU per log row"). A batch goes
    in chunks of powers of two (13 rows: 8, 4 and 1), so a connection holds at most seven of these
    statements."""
    inserts = []
    start = 0
    while start < len(rows):
        size = min(ROWS_PER_INSERT, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start:start + size]
        start += size
        params: list[bytes | None] = []
        for row in chunk:
            params += postgres_params(row)
        inserts.append((INSERT if size == 1 else b"nemo_log_insert_%d" % size, insert_sql(size, "${}"), params))
    return inserts


@functools.cache
def insert_sql(row_count: int, placeholder: str = "%s") -> str:
    """``placeholder``: ``%s`` for a DB-API cursor, ``${}`` for PostgreSQL's numbered parameters."""
    from analytics.models import RequestLog

    quote = connection.ops.quote_name
    fields = _insert_fields()
    numbers = iter(range(1, row_count * len(fields) + 1))
    rows = ", ".join(
        "(" + ", ".join(placeholder.format(next(numbers)) for _ in fields) + ")" for _ in range(row_count)
    )
    return (
        f"INSERT INTO {quote(RequestLog._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {rows}"
    )
