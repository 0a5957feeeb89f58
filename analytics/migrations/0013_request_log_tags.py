from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0012_request_body_keeps_key_order'),
    ]

    operations = [
        migrations.AddField(
            model_name='requestlog',
            name='tags',
            field=models.JSONField(blank=True, null=True, help_text='The call\'s own labels, to find it by: its routing tags (body tags, X-Nemo-Tags) as "tag" and its metadata as "key:value" (analytics.records.call_tags says how many and how long); null: none.'),
        ),
    ]
