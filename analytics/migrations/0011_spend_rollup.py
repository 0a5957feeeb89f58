"""The spend rollup (SpendRollup) and the cache filter's index.

DailySpend now holds exactly the log rows behind the rollup's horizon. There is no horizon yet,
so every day the log still holds leaves DailySpend (the first rollup puts it back); the days only
DailySpend holds (pruned from the log) stay.
"""

from datetime import UTC, datetime, time, timedelta

import django.db.models.functions.datetime
from django.db import migrations, models


def forget_days_the_log_holds(apps, schema_editor) -> None:
    DailySpend = apps.get_model("analytics", "DailySpend")
    RequestLog = apps.get_model("analytics", "RequestLog")
    for org_id, day in list(DailySpend.objects.values_list("org_id", "day").distinct()):
        start = datetime.combine(day, time(0), tzinfo=UTC)
        if RequestLog.objects.filter(org_id=org_id, created__gte=start, created__lt=start + timedelta(days=1)).exists():
            DailySpend.objects.filter(org_id=org_id, day=day).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0010_request_log_error_type_and_run_budget'),
    ]

    operations = [
        migrations.RunPython(forget_days_the_log_holds, migrations.RunPython.noop),
        migrations.CreateModel(
            name='SpendRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('horizon', models.DateTimeField()),
                ('floor_id', models.BigIntegerField(default=0)),
                ('last_seq', models.BigIntegerField(default=0)),
                ('last_read', models.DateTimeField()),
            ],
        ),
        migrations.AlterField(
            model_name='requestlog',
            name='inserted',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False, help_text="Set by the database when the row is inserted, on the database's clock. The exporters' safety lag and the spend rollup's horizon are measured on it, never on the gateway machines' clocks; never set by hand outside tests (the rollup counts on it)."),
        ),
        migrations.AddIndex(
            model_name='requestlog',
            index=models.Index(condition=models.Q(('cache', 'skip'), _negated=True), fields=['org', 'cache', 'created', 'id'], name='log_org_cache_created'),
        ),
    ]
