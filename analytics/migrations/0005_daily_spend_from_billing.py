"""DailySpend, the request log's daily rollup, moved here from billing (its 0003).

Only Django's state moves: the table keeps its name (``billing_dailyspend``), its rows and its
index. The content type moves with the model, so staff permissions on it and the admin's
history of it follow.
"""

import django.db.models.deletion
from django.db import migrations, models


def content_type_to(app_label: str, from_label: str):
    def move(apps, schema_editor) -> None:
        content_types = apps.get_model("contenttypes", "ContentType").objects
        if not content_types.filter(app_label=app_label, model="dailyspend").exists():
            content_types.filter(app_label=from_label, model="dailyspend").update(app_label=app_label)

    return move


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0004_request_log_overshoot"),
        ("billing", "0003_daily_spend_to_analytics"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("keys", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name="DailySpend",
                fields=[
                    ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                    ("day", models.DateField()),
                    ("model", models.CharField(max_length=120)),
                    ("cost", models.DecimalField(decimal_places=6, max_digits=18)),
                    ("calls", models.PositiveIntegerField()),
                    ("prompt_tokens", models.BigIntegerField()),
                    ("completion_tokens", models.BigIntegerField()),
                    ("key", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                              to="keys.virtualkey")),
                    ("org", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="daily_spend",
                                              to="keys.organization")),
                    ("team", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                               to="keys.team")),
                ],
                options={
                    "db_table": "billing_dailyspend",
                    "indexes": [models.Index(fields=["org", "day"], name="billing_dai_org_id_25ed9d_idx")],
                },
            ),
        ]),
        migrations.RunPython(content_type_to("analytics", from_label="billing"),
                             content_type_to("billing", from_label="analytics")),
    ]
