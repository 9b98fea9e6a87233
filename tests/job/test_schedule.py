"""schedule: parsing, and the calculator on an injected clock (every time is a parameter)."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from txsend.errors import JobError
from txsend.job.loading import load_job
from txsend.job.schedule import (
    Schedule,
    SpanCache,
    describe_instant,
    describe_wait,
    load_zone,
    parse_instant,
    parse_window,
    schedule_status,
    status_lines,
)
from txsend.job.zonestatus import zone_lines, zones_status

PARIS, NEW_YORK, TOKYO = "Europe/Paris", "America/New_York", "Asia/Tokyo"


def at(zone: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> float:
    """The instant of a local wall time."""
    return datetime.datetime(y, mo, d, h, mi, tzinfo=load_zone(zone), fold=fold).timestamp()


def local(zone: str, epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, load_zone(zone)).strftime("%a %m-%d %H:%M %Z")


def sched(zone: str, *windows: str, **kw: float) -> Schedule:
    return Schedule(zone, windows=tuple(parse_window(w) for w in windows), **kw)  # type: ignore[arg-type]


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("Mon-Fri 08:00-18:00", {0, 1, 2, 3, 4}, 480, 1080),
        ("sat 10:00-12:00", {5}, 600, 720),
        ("Monday,Wednesday,FRI 9:30-10:00", {0, 2, 4}, 570, 600),
        ("Fri-Mon 22:00-02:00", {4, 5, 6, 0}, 1320, 120),
        ("00:00-24:00", set(range(7)), 0, 1440),
        ("Sun 18:00 - 24:00", {6}, 1080, 1440),
    ],
)
def test_windows_parse(text: str, days: set[int], start: int, end: int) -> None:
    window = parse_window(text)
    assert (set(window.days), window.start, window.end) == (days, start, end)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Mon-Fri", "not a window"),
        ("Moonday 08:00-09:00", "unknown day 'Moonday'"),
        ("Mon 25:00-26:00", "25:00 is not a time of day"),
        ("Mon 24:00-02:00", "24:00 is not a time of day"),
        ("Mon 08:60-09:00", "08:60 is not a time of day"),
        ("Mon,,Tue 08:00-09:00", "empty day"),
    ],
)
def test_bad_windows_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_window(text)


def test_instants_with_and_without_offsets() -> None:
    assert parse_instant("2026-12-07T08:00", PARIS) == at(PARIS, 2026, 12, 7, 8)
    assert parse_instant("2026-12-07T08:00+00:00", PARIS) == at("UTC", 2026, 12, 7, 8)
    assert parse_instant("2026-12-07T08:00Z", PARIS) == at("UTC", 2026, 12, 7, 8)
    # YAML gives datetime (naive: UTC by YAML's reading, or as written) and date objects
    assert parse_instant(datetime.date(2026, 12, 7), TOKYO) == at(TOKYO, 2026, 12, 7)
    naive = datetime.datetime(2026, 12, 7, 8, 0)
    assert parse_instant(naive, NEW_YORK) == at(NEW_YORK, 2026, 12, 7, 8)
    # in the spring-forward gap: the first instant after it; in the fold: the first one
    assert parse_instant("2026-03-29T02:30", PARIS) == at(PARIS, 2026, 3, 29, 3)
    assert parse_instant("2026-10-25T02:30", PARIS) == at(PARIS, 2026, 10, 25, 2, 30, fold=0)
    with pytest.raises(ValueError, match="not a date and time"):
        parse_instant("next monday", PARIS)


def test_a_date_alone_is_its_whole_day() -> None:
    # not_before: the day's first instant; not_after: the instant it ends (next midnight)
    assert parse_instant("2026-12-20", PARIS) == at(PARIS, 2026, 12, 20)
    assert parse_instant("2026-12-20", PARIS, end_of_day=True) == at(PARIS, 2026, 12, 21)
    day = datetime.date(2026, 12, 20)  # as YAML reads an unquoted date
    assert parse_instant(day, TOKYO, end_of_day=True) == at(TOKYO, 2026, 12, 21)
    # a day with a DST change: 23 h (spring) and 25 h (autumn) long, still whole
    spring = parse_instant("2026-03-29", PARIS, end_of_day=True)
    assert spring - parse_instant("2026-03-29", PARIS) == 23 * 3600
    autumn = datetime.date(2026, 10, 25)
    assert parse_instant(autumn, PARIS, end_of_day=True) - parse_instant(autumn, PARIS) == 25 * 3600
    # a zone whose midnight falls in the gap (Santiago springs forward at 00:00)
    santiago = "America/Santiago"
    end = parse_instant("2026-09-05", santiago, end_of_day=True)
    assert local(santiago, end) == "Sun 09-06 01:00 -03"
    with pytest.raises(ValueError, match="not a date"):
        parse_instant("2026-02-30", PARIS)


def test_a_date_alone_in_the_job_file_includes_the_day(tmp_path: Path) -> None:
    job = load_job(
        job_with(
            tmp_path,
            "schedule:\n  timezone: Europe/Paris\n  not_before: 2026-10-25\n"
            "  not_after: '2026-10-25'\n",
        )
    )
    assert job.schedule is not None
    assert job.schedule.not_before == at(PARIS, 2026, 10, 25)
    assert job.schedule.not_after == at(PARIS, 2026, 10, 26)
    # the same day's evening is inside, the next day's first minute is not
    assert job.schedule.is_open(None, at(PARIS, 2026, 10, 25, 23, 59))
    assert not job.schedule.is_open(None, at(PARIS, 2026, 10, 26, 0, 0))


def job_with(tmp_path: Path, schedule: str) -> Path:
    relays = "relays: [{url: 'smtp://127.0.0.1:1'}]\n"
    return write_job(tmp_path, rows=1, extra_yaml=relays + schedule)


@pytest.mark.parametrize(
    ("yaml", "line", "words"),
    [
        ("schedule:\n  timezone: Europe/Pariss\n", 15, "unknown time zone 'Europe/Pariss'"),
        ("schedule:\n  windows: ['Mon-Fri 8-18']\n", 15, "not a window"),
        (
            "schedule:\n  windows:\n    - Mon 08:00-09:00\n    - Xyz 10:00-11:00\n",
            17,
            "unknown day",
        ),
        (
            "schedule:\n  not_before: 2026-12-09T18:00\n  not_after: 2026-12-07T08:00\n",
            16,
            "must be after not_before",
        ),
        ("schedule:\n  not_after: soon\n", 15, "not a date and time"),
        ("schedule:\n  window: ['Mon 08:00-09:00']\n", 15, "did you mean 'windows'"),
    ],
)
def test_bad_schedules_name_the_line(tmp_path: Path, yaml: str, line: int, words: str) -> None:
    job = job_with(tmp_path, yaml)
    with pytest.raises(JobError, match=words) as caught:
        load_job(job)
    assert caught.value.line == line, job.read_text()


def test_a_bad_zone_exits_65_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_with(tmp_path, "schedule:\n  timezone: Mars/Olympus\n")
    result = cli(capsys, "validate", job)
    assert result.code == 65
    assert "job.yaml:15" in result.err and "Mars/Olympus" in result.err


def test_a_job_schedule_loads(tmp_path: Path) -> None:
    job = load_job(
        job_with(
            tmp_path,
            "schedule:\n  timezone: Europe/Paris\n  not_before: 2026-12-07T08:00\n"
            "  not_after: 2026-12-09T18:00+01:00\n  windows: ['Mon-Fri 08:00-18:00']\n",
        )
    )
    assert job.schedule is not None
    assert job.schedule.not_before == at(PARIS, 2026, 12, 7, 8)
    assert job.schedule.not_after == at(PARIS, 2026, 12, 9, 18)
    assert [w.text for w in job.schedule.windows] == ["Mon-Fri 08:00-18:00"]


# --- the calculator ---------------------------------------------------------------------


def test_weekday_window_opens_on_monday_after_a_weekend() -> None:
    s = sched(PARIS, "Mon-Fri 08:00-18:00")
    saturday = at(PARIS, 2026, 12, 5, 12)
    assert not s.is_open(None, saturday)
    opens = s.next_open(None, saturday)
    assert opens is not None and local(PARIS, opens) == "Mon 12-07 08:00 CET"
    assert s.open_until(None, opens) == at(PARIS, 2026, 12, 7, 18)
    assert s.is_open(None, opens) and not s.is_open(None, opens - 1)
    assert not s.is_open(None, at(PARIS, 2026, 12, 7, 18))  # the end is excluded


@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [(PARIS, (2026, 3, 29), (2026, 10, 25)), (NEW_YORK, (2026, 3, 8), (2026, 11, 1))],
)
def test_windows_follow_wall_time_across_both_transitions(
    zone: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
) -> None:
    s = sched(zone, "00:00-12:00")  # spans the change on both days
    start = at(zone, *spring)
    assert s.open_until(None, start) - start == 11 * 3600  # an hour fewer
    start = at(zone, *fall)
    assert s.open_until(None, start) - start == 13 * 3600  # an hour more
    # the day after each change, the window is 12 h again and opens at 00:00 local
    day_after = at(zone, fall[0], fall[1], fall[2] + 1, 0, 0)
    assert s.open_until(None, day_after) - day_after == 12 * 3600


def test_boundary_in_the_spring_gap_is_taken_at_the_end_of_the_gap() -> None:
    s = sched(PARIS, "02:30-04:00")
    before = at(PARIS, 2026, 3, 29, 1, 59)
    opens = s.next_open(None, before)
    assert opens is not None and local(PARIS, opens) == "Sun 03-29 03:00 CEST"
    assert s.open_until(None, opens) == at(PARIS, 2026, 3, 29, 4)
    s = sched(NEW_YORK, "Sun 01:00-02:30")  # the end in the gap: 03:00 EDT
    start = at(NEW_YORK, 2026, 3, 8, 1)
    assert local(NEW_YORK, s.open_until(None, start)) == "Sun 03-08 03:00 EDT"


def test_boundary_in_the_fall_fold_is_its_first_occurrence() -> None:
    s = sched(PARIS, "Sun 01:30-02:30")
    first = at(PARIS, 2026, 10, 25, 1, 30)
    closes = s.open_until(None, first)
    assert closes == at(PARIS, 2026, 10, 25, 2, 30, fold=0)  # 02:30 CEST
    assert closes - first == 3600
    assert not s.is_open(None, at(PARIS, 2026, 10, 25, 2, 30, fold=1))  # 02:30 CET
    s = sched(NEW_YORK, "Sun 01:30-03:00")  # starts at the first 01:30 (EDT)
    opens = s.next_open(None, at(NEW_YORK, 2026, 11, 1, 0))
    assert opens is not None and local(NEW_YORK, opens) == "Sun 11-01 01:30 EDT"
    assert s.open_until(None, opens) - opens == 2.5 * 3600


def test_midnight_crossing_windows_including_on_a_transition_night() -> None:
    s = sched(PARIS, "Sat 22:00-04:00")
    night = at(PARIS, 2026, 3, 28, 22)  # runs into Sunday, across the jump at 02:00
    assert s.is_open(None, night)
    assert s.open_until(None, night) - night == 5 * 3600
    assert s.is_open(None, at(PARIS, 2026, 3, 29, 3, 30))  # Sunday morning: still Saturday's
    assert not s.is_open(None, at(PARIS, 2026, 3, 29, 22, 30))  # Sunday night: not a window
    fall = at(PARIS, 2026, 10, 24, 22)
    assert s.open_until(None, fall) - fall == 7 * 3600
    # Fri 22:00-24:00 and Sat 00:00-02:00 are one open period
    s = sched(NEW_YORK, "Fri 22:00-24:00", "Sat 00:00-02:00")
    friday = at(NEW_YORK, 2026, 12, 4, 23)
    assert s.open_until(None, friday) == at(NEW_YORK, 2026, 12, 5, 2)


def test_a_zone_without_dst_and_per_zone_answers() -> None:
    s = sched(PARIS, "Mon-Fri 09:00-17:00")
    moment = at(TOKYO, 2026, 3, 9, 10)  # Monday 10:00 in Tokyo, Monday 02:00 in Paris
    assert s.is_open(TOKYO, moment) and not s.is_open(None, moment)
    assert s.open_until(TOKYO, moment) - moment == 7 * 3600
    assert s.is_open("America/Los_Angeles", moment) is False


def test_far_future_next_open_with_one_weekday() -> None:
    s = sched(TOKYO, "Wed 10:00-10:30")
    thursday = at(TOKYO, 2026, 12, 10, 11)
    opens = s.next_open(None, thursday)
    assert opens == at(TOKYO, 2026, 12, 16, 10)


def test_not_before_and_not_after_bound_the_windows() -> None:
    nb, na = at(PARIS, 2026, 12, 7, 9), at(PARIS, 2026, 12, 8, 12)
    s = sched(PARIS, "Mon-Fri 08:00-18:00", not_before=nb, not_after=na)
    assert s.next_open(None, at(PARIS, 2026, 12, 6)) == nb
    assert s.open_until(None, at(PARIS, 2026, 12, 8, 9)) == na
    assert s.next_open(None, na) is None and s.expired(na) and not s.expired(na - 1)
    plain = Schedule(PARIS, not_before=nb, not_after=na)  # no windows: open between the two
    assert plain.is_open(None, nb) and not plain.is_open(None, nb - 1)
    assert plain.open_until(None, nb) == na
    assert plain.next_open(None, na + 5) is None
    always = Schedule()
    assert always.open_until(None, 0.0) == math.inf


def test_span_cache_answers_until_the_span_ends() -> None:
    s = sched(PARIS, "Mon-Fri 08:00-18:00")
    cache = SpanCache(s)
    monday = at(PARIS, 2026, 12, 7, 8)
    assert cache.is_open(None, monday)
    assert cache.is_open(None, monday + 3600)
    assert not cache.is_open(None, at(PARIS, 2026, 12, 7, 18))
    assert cache.is_open(None, at(PARIS, 2026, 12, 8, 8))


def test_words() -> None:
    assert describe_instant(at(PARIS, 2026, 12, 7, 8), PARIS) == "Mon 2026-12-07 08:00 CET"
    assert describe_wait(9 * 3600 + 12 * 60) == "9 h 12 min"
    assert describe_wait(2 * 86400 + 3600) == "2 d 1 h"
    assert describe_wait(30) == "1 min"


def test_zones_work_without_the_system_database() -> None:
    # a slim machine without /usr/share/zoneinfo: zoneinfo falls back on the tzdata package
    # (a dependency), and a bad name is still reported, not raised
    code = (
        "import zoneinfo; assert zoneinfo.TZPATH == ();"
        "from txsend.job.schedule import zone_problem, Schedule, Window;"
        "assert zone_problem('Europe/Paris') is None;"
        "assert 'unknown time zone' in zone_problem('Mars/Olympus');"
        "assert 'unknown time zone' in zone_problem('../../etc/passwd');"
        "s = Schedule('America/New_York', windows=(Window(frozenset(range(7)), 540, 1020, ''),));"
        "print(s.next_open(None, 1796083200.0))"  # 2026-12-01T00:00Z: 09:00 EST that day
    )
    env = {**os.environ, "PYTHONTZPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 1796083200.0 + 14 * 3600


def test_the_system_database_comes_first() -> None:
    # zoneinfo's documented order: the TZPATH directories, then the tzdata package
    if not Path("/usr/share/zoneinfo/Europe/Paris").exists():
        pytest.skip("no system time zone database here")
    assert "/usr/share/zoneinfo" in zoneinfo.TZPATH
    assert load_zone("Europe/Paris").key == "Europe/Paris"


def zone_job(tmp_path: Path, zones: list[str], schedule: str) -> Path:
    records = [
        {"email": f"u{i}@example.com", "first_name": f"U{i}", "plan": "p", "tz": zone}
        for i, zone in enumerate(zones)
    ]
    job = write_job(tmp_path, records=records, extra_yaml=schedule)
    job.write_text(
        job.read_text().replace("  file: people.csv\n", "  file: people.csv\n  timezone: TZ\n")
    )
    return job


def test_validate_lists_rows_with_an_unknown_zone_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = zone_job(
        tmp_path,
        ["Europe/Paris", "Mars/Olympus", "", " America/New_York ", "Europe/paris"],
        "schedule:\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    result = cli(capsys, "validate", job)
    assert result.code == 65, result.out + result.err
    text = result.out + result.err
    assert "row 2: key 'u1@example.com': TZ: unknown time zone 'Mars/Olympus'" in text
    assert "row 5: key 'u4@example.com': TZ: unknown time zone 'Europe/paris'" in text
    assert "u0@example.com" not in text and "u2@example.com" not in text
    assert "u3@example.com" not in text
    assert "5 rows, 2 problems" in text
    listed = cli(capsys, "validate", job, "--json")
    assert listed.code == 65
    assert len(json.loads(listed.out)["problems"]) == 2


def test_validate_warns_of_a_zone_column_without_a_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = zone_job(tmp_path, ["Mars/Olympus"], "")
    result = cli(capsys, "validate", job)
    assert result.code == 0, result.out + result.err
    assert "recipients.timezone ('TZ') has no effect without schedule:" in result.out + result.err


# --- windows that never close -------------------------------------------------------------


@pytest.mark.parametrize(
    "windows",
    [
        ("00:00-00:00",),
        ("00:00-24:00",),
        ("08:00-24:00", "00:00-08:00"),
        ("Mon-Fri 00:00-24:00", "Sat,Sun 00:00-24:00"),
        ("Mon-Sun 22:00-22:00",),
    ],
)
def test_windows_covering_the_week_never_close(windows: tuple[str, ...]) -> None:
    schedule = sched(PARIS, *windows)
    now = at(PARIS, 2026, 12, 7, 12)
    assert schedule.always_open
    assert schedule.span(None, now).open and math.isinf(schedule.span(None, now).until)
    status = schedule_status(schedule, now)
    assert status["closes_at"] is None
    assert (
        status_lines(status, now)[0] == "send window: open now (the windows cover the whole week)"
    )
    # with not_after, it closes then
    bounded = sched(PARIS, *windows, not_after=now + 3600)
    assert bounded.span(None, now).until == now + 3600


def test_windows_with_a_gap_still_close() -> None:
    schedule = sched(PARIS, "08:00-24:00", "00:00-07:59")
    assert not schedule.always_open
    now = at(PARIS, 2026, 12, 7, 12)
    assert schedule.span(None, now).until == at(PARIS, 2026, 12, 8, 7, 59)
    assert not sched(PARIS, "Mon-Sat 00:00-24:00").always_open


# --- status with rows in their own zones -----------------------------------------------


def test_zones_status_counts_rows_in_open_zones_and_the_first_opening() -> None:
    s = sched(PARIS, "Mon-Fri 09:00-17:00")
    now = at(TOKYO, 2026, 12, 7, 10)  # Mon 10:00 in Tokyo, 02:00 in Paris, Sun 20:00 NY
    due = [(TOKYO, 5), (None, 3), (NEW_YORK, 2), ("Mars/Olympus", 1)]
    zones = zones_status(s, "tz", due, 12, now)
    assert zones["zones_open"] == 1 and zones["rows_open"] == 5
    assert zones["rows_closed"] == 5 and zones["rows_unknown_zone"] == 1
    assert zones["rows_not_listed"] == 1  # 12 due, 11 listed
    assert zones["next_opens_zone"] == PARIS  # Mon 09:00 Paris before Mon 09:00 New York
    assert zones["next_opens_at"] == "2026-12-07T09:00:00+01:00"
    assert [z["timezone"] for z in zones["zones"]] == [TOKYO, PARIS, NEW_YORK]
    assert zones["zones"][0]["closes_at"] == "2026-12-07T17:00:00+09:00"
    lines = zone_lines(zones, now)
    assert lines[0] == (
        "rows' zones (tz): 1 of 3 open now (Asia/Tokyo); 5 of 12 rows due are in open zones"
    )
    assert lines[1] == (
        "next opening among closed zones: Europe/Paris, Mon 2026-12-07 09:00 CET (in 7 h)"
    )
    assert "1 rows due name no known time zone" in lines[2]
    # the job's own lines name its zone when rows have theirs
    status = schedule_status(s, now) | {"zones": zones}
    assert status_lines(status, now)[0].startswith("send window in Europe/Paris (the job's zone)")


# --- validate: a schedule that cannot send ----------------------------------------------


def test_validate_warns_when_not_after_has_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_with(tmp_path, "schedule:\n  not_after: 2020-01-01T00:00\n")
    result = cli(capsys, "validate", job)
    assert result.code == 0, result.out + result.err
    assert (
        "warning: schedule.not_after (Wed 2020-01-01 00:00 UTC) has passed: a run would "
        "expire every unsent row" in result.out + result.err
    )


def test_validate_warns_when_no_window_opens_before_not_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Mon 2030-01-07 to Tue 2030-01-08: a Saturday window never opens in between
    schedule = (
        "schedule:\n  timezone: Europe/Paris\n  not_before: 2030-01-07T08:00\n"
        "  not_after: 2030-01-08T18:00\n  windows: ['Sat 10:00-12:00']\n"
    )
    result = cli(capsys, "validate", job_with(tmp_path, schedule))
    assert result.code == 0, result.out + result.err
    assert (
        "no send window opens before schedule.not_after (Tue 2030-01-08 18:00 CET) from "
        "Mon 2030-01-07 08:00 CET: nothing would be sent" in result.out + result.err
    )
    fits = schedule.replace("Sat 10:00-12:00", "Tue 17:00-19:00")
    result = cli(capsys, "validate", job_with(tmp_path / "fits", fits))
    assert result.code == 0 and "no send window opens" not in result.out + result.err


def test_validate_judges_the_window_in_the_rows_zones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 18:00-19:00 on Mon 2030-01-07: in Paris only after not_after; in Tokyo (8 h ahead)
    # 18:00 is 10:00 Paris, inside the span
    schedule = (
        "schedule:\n  timezone: Europe/Paris\n  not_before: 2030-01-07T08:00\n"
        "  not_after: 2030-01-07T12:00\n  windows: ['18:00-19:00']\n"
    )
    paris = cli(capsys, "validate", zone_job(tmp_path / "paris", ["Europe/Paris", ""], schedule))
    assert "no send window opens" in paris.out + paris.err
    tokyo = cli(capsys, "validate", zone_job(tmp_path / "tokyo", ["", "Asia/Tokyo"], schedule))
    assert tokyo.code == 0 and "no send window opens" not in tokyo.out + tokyo.err


def test_run_and_status_help_mention_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "run", "--help")
    assert "inside its row's send window and before not_after" in " ".join(run.out.split())
    status = cli(capsys, "status", "--help")
    words = " ".join(status.out.split())
    assert "whether its send window is open now" in words
    assert "which zones of the rows still due are open" in words
