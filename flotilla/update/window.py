"""The maintenance window: when a machine may reboot for an update (pure).

In locksmith's words from update.conf: REBOOT_WINDOW_START is `Thu 04:00` (weekly) or `04:00`
(every day), REBOOT_WINDOW_LENGTH a duration like `1h30m`. Times are the machine's local wall
clock, as an operator reads them; `now` is passed in (a naive local datetime), so a DST shift
moves the window with the wall clock, never by an hour of arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
START = re.compile(r"^(?:(?P<day>[A-Za-z]+)\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})$")
DURATION_PART = re.compile(r"(\d+)(h|m|s)")
DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class MaintenanceWindow:
    weekday: int | None  # 0 = Monday; None: every day
    start_minute: int  # minutes after local midnight
    length: timedelta

    @property
    def period(self) -> timedelta:
        return DAY if self.weekday is None else WEEK

    def __str__(self) -> str:
        day = "" if self.weekday is None else WEEKDAYS[self.weekday].capitalize() + " "
        hours, minutes = divmod(self.start_minute, 60)
        return f"{day}{hours:02d}:{minutes:02d} for {format_duration(self.length)}"


def parse_start(text: str) -> tuple[int | None, int]:
    """`Thu 04:00` or `04:00` -> (weekday or None, minute of the day); ValueError saying why."""
    match = START.match(text.strip())
    if not match:
        raise ValueError(f"expected `HH:MM` or `DAY HH:MM` (DAY: Mon..Sun), not {text!r}")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59)")
    day = match["day"]
    if day is None:
        return None, hour * 60 + minute
    weekday = day.lower()[:3]
    if weekday not in WEEKDAYS or not is_day_name(day.lower()):
        raise ValueError(f"{day!r} is not a day of the week (Mon, Tue, ... Sun)")
    return WEEKDAYS.index(weekday), hour * 60 + minute


def is_day_name(day: str) -> bool:
    """`thu`, `thursday` (and nothing between them but a prefix of the full name)."""
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    return any(len(day) >= 3 and name.startswith(day) for name in names)


def parse_duration(text: str) -> timedelta:
    """`1h30m`, `90m`, `45s`, `2h` -> a timedelta; ValueError for anything else or zero."""
    compact = text.strip()
    if not compact or DURATION_PART.sub("", compact):
        raise ValueError(f"expected a duration such as 1h30m, 90m or 45s, not {text!r}")
    seconds = sum(int(n) * DURATION_UNITS[unit] for n, unit in DURATION_PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, not {text!r}")
    return timedelta(seconds=seconds)


def format_duration(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{seconds}s" if seconds else ""]  # fmt: skip
    return "".join(parts) or "0s"


def window(start: str, length: str) -> MaintenanceWindow:
    weekday, minute = parse_start(start)
    duration = parse_duration(length)
    if duration > (WEEK if weekday is not None else DAY):
        period = "a week" if weekday is not None else "a day (the window opens every day)"
        raise ValueError(f"a window of {format_duration(duration)} is longer than {period}")
    return MaintenanceWindow(weekday, minute, duration)


def latest_opening(now: datetime, window: MaintenanceWindow) -> datetime:
    """The last time the window opened at or before `now`."""
    hours, minutes = divmod(window.start_minute, 60)
    opening = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if window.weekday is not None:
        opening -= timedelta(days=(now.weekday() - window.weekday) % 7)
    if opening > now:
        opening -= window.period
    return opening


def is_open(now: datetime, window: MaintenanceWindow | None) -> bool:
    """May the machine reboot at `now`? Always, without a window."""
    if window is None:
        return True
    return now < latest_opening(now, window) + window.length


def next_opening(now: datetime, window: MaintenanceWindow | None) -> datetime:
    """`now` when the window is open (or there is none), else when it opens next."""
    if is_open(now, window):
        return now
    assert window is not None
    return latest_opening(now, window) + window.period
