"""Model fields the request log needs that Django does not ship."""

import json

from django.db import models


class OrderedJSONField(models.JSONField):
    """JSON that reads back as it was written, its keys in their order.

    PostgreSQL's ``jsonb`` (Django's JSONField) reorders keys (shortest first) and drops
    duplicates, so a stored request body would come back in an order its client never sent;
    this column is ``json``, the text as given (checked to be JSON). ``json`` has no equality
    nor containment operators (no ``@>``, no DISTINCT): use it only for a column that is read
    back whole or through ``->``/``->>``, never filtered on. Other databases store JSON as text
    already."""

    def db_type(self, connection) -> str:
        return "json" if connection.vendor == "postgresql" else super().db_type(connection)

    def get_db_prep_value(self, value, connection, prepared=False):
        if connection.vendor != "postgresql":
            return super().get_db_prep_value(value, connection, prepared)
        from psycopg.types.json import Json

        if not prepared:
            value = self.get_prep_value(value)
        # Json, not Django's Jsonb: a jsonb parameter would be reordered before it reached the column.
        return Json(value, dumps=lambda data: json.dumps(data, cls=self.encoder))

    def from_db_value(self, value, expression, connection):
        # psycopg decodes json itself (Django has it leave jsonb as text for JSONField to decode).
        if value is not None and not isinstance(value, str):
            return value
        return super().from_db_value(value, expression, connection)
