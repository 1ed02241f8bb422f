"""Periods are UTC calendar days and months, whatever the caller's time zone."""

from __future__ import annotations

import datetime as dt

import pytest

from omnia.budgets import periods


@pytest.mark.parametrize(
    ("now", "day", "day_ends", "month", "month_ends"),
    [
        pytest.param(
            dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC),
            "2026-12-31", "2027-01-01T00:00:00+00:00", "2026-12", "2027-01-01T00:00:00+00:00",
            id="last-minute-of-the-year",
        ),
        pytest.param(
            dt.datetime(2028, 2, 29, 12, 0, tzinfo=dt.UTC),
            "2028-02-29", "2028-03-01T00:00:00+00:00", "2028-02", "2028-03-01T00:00:00+00:00",
            id="leap-day",
        ),
        pytest.param(
            dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2026-02-28", "2026-03-01T00:00:00+00:00", "2026-02", "2026-03-01T00:00:00+00:00",
            id="local-time-is-converted-to-utc",
        ),
    ],
)
def test_day_and_month_of_an_instant(now, day, day_ends, month, month_ends):
    got_day, got_month = periods(now)
    assert (got_day.kind, got_day.label, got_day.ends_at.isoformat()) == ("day", day, day_ends)
    assert (got_month.kind, got_month.label, got_month.ends_at.isoformat()) == ("month", month, month_ends)
