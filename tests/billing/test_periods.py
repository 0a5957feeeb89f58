"""Budget periods start and end on UTC calendar boundaries, whatever the caller's time zone."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.periods import period_end, period_name, period_start

BERLIN_WINTER = timezone(timedelta(hours=1))
LOS_ANGELES_WINTER = timezone(timedelta(hours=-8))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end", "name"),
    [
        pytest.param("daily", utc(2026, 11, 25, 15, 30), utc(2026, 11, 25), utc(2026, 11, 26), "2026-11-25",
                     id="daily"),
        pytest.param("daily", utc(2026, 11, 25), utc(2026, 11, 25), utc(2026, 11, 26), "2026-11-25",
                     id="daily-at-midnight"),
        pytest.param("daily", utc(2026, 11, 25, 23, 59, 59, 999999), utc(2026, 11, 25), utc(2026, 11, 26),
                     "2026-11-25", id="daily-last-microsecond"),
        pytest.param("weekly", utc(2026, 11, 25, 15, 30), utc(2026, 11, 23), utc(2026, 11, 30), "2026-W48",
                     id="weekly-starts-on-monday"),
        pytest.param("weekly", utc(2026, 11, 29, 23, 59), utc(2026, 11, 23), utc(2026, 11, 30), "2026-W48",
                     id="weekly-sunday-night"),
        pytest.param("monthly", utc(2026, 11, 25, 15, 30), utc(2026, 11, 1), utc(2026, 12, 1), "2026-11",
                     id="monthly"),
        pytest.param("monthly", utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1), "2028-02",
                     id="monthly-leap-february"),
        pytest.param("monthly", utc(2026, 1, 31, 12), utc(2026, 1, 1), utc(2026, 2, 1), "2026-01",
                     id="monthly-31-day-month"),
    ],
)
def test_a_period_has_its_calendar_start_end_and_name(period, now, start, end, name):
    assert (period_start(period, now), period_end(period, now), period_name(period, now)) == (start, end, name)


@pytest.mark.parametrize(
    ("period", "now", "start", "end", "name"),
    [
        pytest.param("daily", utc(2026, 12, 31, 23, 59), utc(2026, 12, 31), utc(2027, 1, 1), "2026-12-31",
                     id="daily"),
        pytest.param("monthly", utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1), "2026-12",
                     id="monthly"),
        # 1 January 2027 is a Friday: its ISO week began on Monday 28 December and belongs to 2026.
        pytest.param("weekly", utc(2027, 1, 1, 9), utc(2026, 12, 28), utc(2027, 1, 4), "2026-W53",
                     id="weekly-in-the-old-years-week"),
        # Monday 29 December 2025 starts ISO week 1 of 2026.
        pytest.param("weekly", utc(2025, 12, 31, 9), utc(2025, 12, 29), utc(2026, 1, 5), "2026-W01",
                     id="weekly-in-the-new-years-week"),
    ],
)
def test_periods_roll_over_the_year(period, now, start, end, name):
    assert (period_start(period, now), period_end(period, now), period_name(period, now)) == (start, end, name)


@pytest.mark.parametrize(
    ("period", "now", "start", "name"),
    [
        # 00:30 on 1 January in Berlin is still 31 December in UTC.
        pytest.param("daily", datetime(2027, 1, 1, 0, 30, tzinfo=BERLIN_WINTER), utc(2026, 12, 31), "2026-12-31",
                     id="daily-ahead-of-utc"),
        pytest.param("monthly", datetime(2027, 1, 1, 0, 30, tzinfo=BERLIN_WINTER), utc(2026, 12, 1), "2026-12",
                     id="monthly-ahead-of-utc"),
        # 20:00 on 30 November in Los Angeles is already 1 December in UTC.
        pytest.param("monthly", datetime(2026, 11, 30, 20, tzinfo=LOS_ANGELES_WINTER), utc(2026, 12, 1), "2026-12",
                     id="monthly-behind-utc"),
        # 20:00 on Sunday in Los Angeles is already Monday in UTC: a new week.
        pytest.param("weekly", datetime(2026, 11, 29, 20, tzinfo=LOS_ANGELES_WINTER), utc(2026, 11, 30), "2026-W49",
                     id="weekly-behind-utc"),
    ],
)
def test_a_non_utc_time_falls_in_the_period_of_its_utc_instant(period, now, start, name):
    assert (period_start(period, now), period_name(period, now)) == (start, name)


def test_period_starts_are_in_utc():
    start = period_start("daily", datetime(2026, 11, 25, 12, tzinfo=BERLIN_WINTER))
    assert start.utcoffset() == timedelta(0)


def test_a_budget_without_a_period_has_no_start_or_end():
    now = utc(2026, 11, 25, 15, 30)
    assert (period_start("none", now), period_end("none", now), period_name("none", now)) == (None, None, "all")


@pytest.mark.parametrize("period_of", [period_start, period_end, period_name])
def test_an_unknown_period_is_refused(period_of):
    with pytest.raises(ValueError, match="unknown budget period 'hourly'"):
        period_of("hourly", utc(2026, 11, 25))


def test_consecutive_periods_meet_without_a_gap():
    end_of_november = period_end("monthly", utc(2026, 11, 25))
    assert period_start("monthly", end_of_november) == end_of_november
    assert period_start("monthly", end_of_november - timedelta(microseconds=1)) == utc(2026, 11, 1)
