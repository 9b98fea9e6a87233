"""How the end of a run reads, for people and for programs: the summary table, the pace
and relay lines, the final line with the command that continues the job, and the same
as JSON events (--log-format json)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from txsend import logs
from txsend.app import requests
from txsend.cli.console import local_time, stderr_line
from txsend.errors import ExitCode
from txsend.job.schedule import describe_instant
from txsend.models import State
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary, schedule_note, seeds_json, state_counts

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# exit codes of a run that ended as it should, with work left or rows refused
SOFT_EXITS = (ExitCode.SOME_FAILED, ExitCode.TEMPFAIL, ExitCode.SIGINT, ExitCode.SIGTERM)

# exit codes after which the same job continues: `continue with: ...`
_CONTINUABLE = (ExitCode.TEMPFAIL, ExitCode.UNAVAILABLE, 130, 143)

_RELAY_COLUMNS = ("relay", "sent", "failed", "deferred", "p95 ms", "errors", "connects ok/failed")


def print_summary(console: Console, summary: Summary) -> None:
    """The summary table (this run's outcomes beside the journal's totals), then the pace,
    the relays and what the run left to look at."""
    console.print(_state_table(summary))
    if summary.feedback and summary.feedback.get("events"):
        console.print(feedback_line(summary.feedback), markup=False)
    stats = summary.stats
    if stats is None:
        return
    console.print(pace(stats))
    if stats.relays:
        console.print(_relay_table(stats))
    for name, relay in stats.relays.items():
        if relay.last_error and (relay.connect_failures or not relay.connections):
            console.print(f"relay {name}: {relay.last_error}")
    if stats.abandoned:
        console.print(
            f"{stats.abandoned} messages were abandoned after DATA began: now 'unknown' "
            "(resume resends them unless delivery.on_unknown: skip)"
        )
    if summary.dry_run:
        console.print(f"dry run: {stats.queued} messages rendered, nothing sent")


def feedback_line(feedback: dict[str, int]) -> str:
    """What `txsend bounces` recorded so far, in one line."""
    return (
        f"after acceptance: {feedback.get('late_bounced', 0)} bounced (counted in bounced), "
        f"{feedback.get('complaints', 0)} complaints, {feedback.get('delayed', 0)} delays, "
        f"{feedback.get('unmatched', 0)} reports matched no row"
    )


def _state_table(summary: Summary) -> Table:
    from rich.table import Table  # loads when a summary prints, not for --help

    table = Table(title=f"txsend: {summary.job}", title_justify="left")
    table.add_column("state")
    table.add_column("outcomes this run", justify="right")
    table.add_column("journal total", justify="right")
    seeds = summary.seeds if summary.seeds and any(summary.seeds.values()) else None
    if seeds is not None:
        table.add_column("of which seeds", justify="right")
    stats = summary.stats
    for state in State:
        now = stats.outcomes[state] if stats is not None else 0
        total = summary.counts.get(state, 0)
        if now or total:
            cells = [state.value, str(now) if stats is not None else "-", str(total)]
            if seeds is not None:
                cells.append(str(seeds.get(state, 0)))
            table.add_row(*cells)
    return table


def _relay_table(stats: RunStats) -> Table:
    from rich.table import Table

    relays = Table(title_justify="left", box=None, pad_edge=False)
    for column in _RELAY_COLUMNS:
        relays.add_column(column, justify="left" if column == "relay" else "right")
    relays.add_column("circuit")
    for row in relay_rows(stats):
        p95, rate = row["p95"], row["error_rate"]
        relays.add_row(
            row["relay"],
            str(row["sent"]),
            str(row["failed"]),
            str(row["deferred"]),
            f"{p95 * 1000:.1f}" if p95 is not None else "-",
            f"{rate:.1%}" if rate is not None else "-",
            f"{row['connections']}/{row['connect_failures']}",
            row["circuit"],
        )
    return relays


def pace(stats: RunStats) -> str:
    """`2.50 s, 400.0 messages/s, SMTP transaction p50 1.2 ms, p95 3.4 ms`."""
    p50, p95 = stats.latency.percentile(50), stats.latency.percentile(95)
    latency = (
        f", SMTP transaction p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
        if p50 is not None and p95 is not None
        else ""
    )
    return f"{stats.elapsed:.2f} s, {stats.rate:.1f} messages/s{latency}"


def relay_rows(stats: RunStats) -> list[dict[str, Any]]:
    """Each relay's line of the summary: outcomes, p95 (seconds), error rate, connections,
    circuit; unrounded."""
    rows = []
    for name, relay in stats.relays.items():
        o = relay.outcomes
        errors = sum(relay.errors.values())
        rows.append(
            {
                "relay": name,
                "sent": o[State.SENT],
                "failed": o[State.BOUNCED] + o[State.FAILED] + o[State.UNKNOWN],
                "deferred": o[State.DEFERRED],
                "p95": relay.latency.percentile(95),
                "error_rate": errors / relay.attempts if relay.attempts else None,
                "connections": relay.connections,
                "connect_failures": relay.connect_failures,
                "circuit": relay.circuit,
                "last_error": relay.last_error,
            }
        )
    return rows


def log_summary(summary: Summary, final: str, next_command: str | None, quiet: bool) -> None:
    """The end of a run as JSON events: warnings, the summary (unless quiet), the verdict."""
    for warning in summary.warnings:
        logs.output_event(stderr_line, "warning", "warning", warning)
    stats = summary.stats
    if not quiet:
        message, fields = summary_event(summary)
        logs.output_event(stderr_line, "info", "summary", message, **fields)
    code = summary.exit_code
    logs.output_event(
        stderr_line,
        "info" if code == ExitCode.OK else "warning" if code in SOFT_EXITS else "error",
        "verdict",
        final,
        job=summary.job,
        run_id=summary.run_id,
        exit_code=code,
        stop_reason=stats.stop_reason if stats is not None else None,
        next_command=next_command,
        next_attempt_at=summary.next_attempt_at,
    )


def summary_event(summary: Summary) -> tuple[str, dict[str, Any]]:
    """What `print_summary` shows for a run, as the message and fields of one event."""
    stats = summary.stats
    fields: dict[str, Any] = {
        "job": summary.job,
        "run_id": summary.run_id,
        "outcomes": state_counts(stats.outcomes) if stats is not None else None,  # this run
        "counts": state_counts(summary.counts),  # the journal's totals
        **seeds_json(summary.seeds),  # of which seed copies
    }
    if stats is None:
        return f"txsend: {summary.job}", fields
    p50, p95 = stats.latency.percentile(50), stats.latency.percentile(95)
    fields.update(
        seconds=round(stats.elapsed, 3),
        messages_per_second=round(stats.rate, 1),
        latency_ms={"p50": _ms(p50), "p95": _ms(p95)},
        relays=[_relay_event(row) for row in relay_rows(stats)],
        abandoned=stats.abandoned,
        dry_run=summary.dry_run,
        rendered=stats.queued,
    )
    return f"{summary.job}: {pace(stats)}", fields


def _relay_event(row: dict[str, Any]) -> dict[str, Any]:
    """A relay's summary line for the JSON event: milliseconds and rates rounded."""
    rate = row["error_rate"]
    return {
        "relay": row["relay"],
        "sent": row["sent"],
        "failed": row["failed"],
        "deferred": row["deferred"],
        "p95_ms": _ms(row["p95"]),
        "error_rate": round(rate, 4) if rate is not None else None,
        "connections": row["connections"],
        "connect_failures": row["connect_failures"],
        "circuit": row["circuit"],
        "last_error": row["last_error"],
    }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def job_argument(request: requests.RunRequest) -> str:
    """How the follow-up commands name this job (a worker's job file is a temp copy)."""
    journal = request.overrides.journal
    if journal is None or not journal.shared:
        return str(request.target)
    if request.worker:
        return f"--journal {journal.display}"  # `txsend worker --journal URL` joins it again
    return f"{request.target} --journal {journal.display}"


def resume_argument(request: requests.RunRequest) -> str | None:
    """How `txsend resume` names a worker's job: its file, on the host that has it."""
    journal = request.overrides.journal
    if not request.worker or journal is None or not journal.shared:
        return None
    return f"{Path(request.target).name} --journal {journal.display}"


def final_line(
    summary: Summary, target: str | Path, command: str, resume_target: str | Path | None = None
) -> str:
    """The last line of a run: counts, exit code, why it stopped, what continues the job.

    `resume_target` names the job for `txsend resume` where that differs from `target`
    (a worker is named by its journal, but only `resume` resends `unknown` rows)."""
    return final_and_next(summary, target, command, resume_target)[0]


def final_and_next(
    summary: Summary, target: str | Path, command: str, resume_target: str | Path | None = None
) -> tuple[str, str | None]:
    """`final_line`'s text, and the (first) command it tells to run next, if any."""
    line = _outcome_line(summary) + _unknown_note(summary) + _expired_note(summary)
    note = schedule_note(summary)
    if note is not None:
        line += "\n" + note
    resume = f"txsend resume {resume_target or target}"
    if summary.exit_code in _CONTINUABLE:
        continuation, next_command = _continuation(summary, target, command, resume)
        return line + continuation, next_command
    if summary.exit_code == ExitCode.SOME_FAILED:
        next_command = f"txsend status {resume_target or target}"
        return line + f"\nsee the failed rows with: {next_command}", next_command
    return line, None


def _outcome_line(summary: Summary) -> str:
    """`job: 3 sent, 1 bounced (exit 1); seeds: 2 sent; stopped: ...`.

    Seed copies (job key seeds:) are counted apart from the recipients' rows."""
    seeds = summary.seeds or {}
    parts = []
    for state, n in summary.counts.items():
        n -= seeds.get(state, 0)
        if not n:
            continue
        if state is State.SKIPPED and summary.skipped_by_error:
            parts.append(f"{n} skipped ({summary.skipped_by_error} by an error)")
        else:
            parts.append(f"{n} {state.value}")
    line = f"{summary.job}: " + (", ".join(parts) or "no rows") + f" (exit {summary.exit_code})"
    if any(seeds.values()):
        line += "; seeds: " + ", ".join(f"{n} {s.value}" for s, n in seeds.items() if n)
    stats = summary.stats
    if stats is not None and stats.stop_reason:
        line += f"; {'gave up' if stats.unreachable else 'stopped'}: {stats.stop_reason}"
    return line


def _expired_note(summary: Summary) -> str:
    """Why rows are `expired`, when this run expired some."""
    stats = summary.stats
    schedule = stats.schedule if stats is not None else None
    if schedule is None or not schedule.expired:
        return ""
    return f"\n{schedule.expired} expired: not sent before schedule.not_after"


def _unknown_note(summary: Summary) -> str:
    """What becomes of the `unknown` rows, when there are any."""
    unknown = summary.counts.get(State.UNKNOWN, 0)
    if not unknown:
        return ""
    schedule = summary.stats.schedule if summary.stats is not None else None
    if (
        schedule is not None
        and schedule.not_after is not None
        and schedule.at is not None
        and schedule.at >= schedule.not_after
    ):
        return (
            f"\n{unknown} unknown: no reply was recorded after the message was sent; "
            "they are left as they are (schedule.not_after has passed: nothing is sent "
            "again): check them"
        )
    return f"\n{unknown} unknown: no reply was recorded after the message was sent; " + (
        "resume sends them again (delivery.on_unknown: resend)"
        if summary.resend_unknown
        else "they are left as they are (delivery.on_unknown: skip): check them "
        "before sending again"
    )


def _continuation(
    summary: Summary, target: str | Path, command: str, resume: str
) -> tuple[str, str]:
    """`continue with: ...` for a job with work left, and the command it names first.

    A worker continues as a worker, unless only `unknown` rows to resend are left: those
    only `txsend resume` sends."""
    c = summary.counts
    resends_unknown = bool(c.get(State.UNKNOWN, 0)) and summary.resend_unknown
    others = c.get(State.PENDING, 0) + c.get(State.DEFERRED, 0) + c.get(State.SENDING, 0)
    if command == "worker" and (others or not resends_unknown):
        next_command = f"txsend worker {target}"
        text = f"\ncontinue with: {next_command}"
        if resends_unknown:
            text += f"; the unknown rows with: {resume}"
    else:
        next_command = resume
        text = f"\ncontinue with: {next_command}"
    expiring = _retries_expire(summary)
    if expiring:
        text += expiring
    elif summary.next_attempt_at:
        text += f" (next retry due {local_time(summary.next_attempt_at)})"
    return text, next_command


def _retries_expire(summary: Summary) -> str:
    """' (...: they expire at not_after ...)' when every deferred row's next retry falls at
    or after schedule.not_after: none will be tried again, a retry time would mislead."""
    schedule = summary.stats.schedule if summary.stats is not None else None
    deferred = summary.counts.get(State.DEFERRED, 0)
    due = summary.next_attempt_at
    if schedule is None or schedule.not_after is None or not deferred or due is None:
        return ""
    if due < schedule.not_after:
        return ""
    rows = (
        "the deferred row's next retry falls"
        if deferred == 1
        else (f"the {deferred} deferred rows' next retries fall")
    )
    return (
        f" ({rows} after schedule.not_after: {'it' if deferred == 1 else 'they'} will expire "
        f"at {describe_instant(schedule.not_after, schedule.zone)})"
    )
