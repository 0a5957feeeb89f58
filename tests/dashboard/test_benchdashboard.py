"""``manage.py benchdashboard`` fills an org's log, times every page and removes the rows: run
small, it must still go through (its raw INSERT follows the log's columns)."""

import io

import pytest
from django.core.management import call_command

from analytics.models import DailySpend, RequestLog
from dashboard.management.commands.benchdashboard import PAGES

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_it_times_every_page_of_a_filled_org_and_removes_its_rows():
    out = io.StringIO()

    call_command("benchdashboard", rows=1500, days=2, repeat=1, stdout=out)

    printed = out.getvalue()
    assert "1,500 log rows over 2 days" in printed
    timed = [line.split()[0] for line in printed.splitlines()[2:] if line.startswith("/")]
    assert len(timed) == len(PAGES)
    assert not RequestLog.objects.exists()
    # The rows were rolled up before the pages were timed, as the Celery beat does.
    assert DailySpend.objects.exists()
