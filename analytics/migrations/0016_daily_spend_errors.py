"""The daily ledger counts its failed calls (DailySpend.errors): the keys page reads a key's error
rate over its budget period from it, as it reads its spend.

The days rolled up before this migration are counted from the log rows behind the rollup's
horizon, with the rollup's row locked so no rollup runs meanwhile; a day pruned from the log has
nothing left to count and keeps zero. The column has a database default, so a rollup of the code
before this one still writes its rows.
"""

from datetime import UTC

from django.db import migrations, models
from django.db.models import Count, Q
from django.db.models.functions import TruncDate


def count_rolled_up_failures(apps, schema_editor) -> None:
    DailySpend = apps.get_model("analytics", "DailySpend")
    RequestLog = apps.get_model("analytics", "RequestLog")
    SpendRollup = apps.get_model("analytics", "SpendRollup")
    state = SpendRollup.objects.select_for_update().filter(pk=1).first()
    if state is None:
        return  # nothing rolled up yet: the first rollup counts every row
    failed = RequestLog.objects.filter(status__gte=400).exclude(Q(id__gt=state.floor_id, inserted__gte=state.horizon))
    groups = (failed.values("org_id", "team_id", "key_id", "model", day=TruncDate("created", tzinfo=UTC))
              .annotate(failures=Count("id")).order_by())
    for group in groups.iterator():
        failures = group.pop("failures")
        DailySpend.objects.filter(**group).update(errors=failures)


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0015_request_log_partitioned_by_month'),
    ]

    operations = [
        migrations.AddField(
            model_name='dailyspend',
            name='errors',
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(count_rolled_up_failures, migrations.RunPython.noop),
    ]
