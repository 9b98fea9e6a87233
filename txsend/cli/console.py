"""Where the command line writes: its Rich consoles, raw stderr lines, and the live
progress view of a run on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from txsend.models import State
from txsend.reporting.stats import DomainStats, RunStats

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console, RenderableType
    from rich.progress import TaskID


def stderr_line(line: str) -> None:
    """Write one line to stderr as it is (a JSON event, or a log line), at once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Printer(Protocol):
    """Where a command's messages go: a Rich console, or `PlainLines`."""

    def print(self, *objects: Any, markup: bool | None = None) -> None: ...


class PlainLines:
    """Messages to stderr as plain lines, without loading Rich: what a run prints when it
    shows no table and no bar (--quiet, or JSON logs)."""

    def print(self, *objects: Any, markup: bool | None = None) -> None:
        """Write the objects as one line (markup is not interpreted)."""
        stderr_line(" ".join(str(o) for o in objects))


def stderr_console() -> Console:
    """The console for messages, warnings and summaries: stderr, no highlighting."""
    from rich.console import Console  # Rich loads when a command prints, not for --help

    # soft_wrap: never break a message at 80 columns when stderr is a file or a pipe
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """The console for what a command was asked to show (status, report): stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def local_time(timestamp: float) -> str:
    """A Unix time as this host's local `YYYY-MM-DD HH:MM:SS`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


class ProgressView:
    """Rich progress on a terminal: counts per outcome, rate, ETA."""

    def __init__(self, console: Console) -> None:
        # Rich's live view loads only for a run on a terminal, not for every command.
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.text import Text

        lines = self._domain_lines = list[str]()

        class WithDomains(Progress):
            """The bar, and under it a few lines of per-domain figures."""

            def get_renderables(self) -> Iterator[RenderableType]:
                yield self.make_tasks_table(self.tasks)
                for line in lines:
                    yield Text(line, no_wrap=True, overflow="ellipsis")

        self._progress = WithDomains(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[health]}"),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        """Show the bar, for `total` rows due."""
        self._progress.start()
        self._task = self._progress.add_task("sending", total=total, counts="", rate="", health="")

    def update(self, stats: RunStats) -> None:
        """Redraw from the run's statistics so far (a no-op before `start`)."""
        if self._task is None:
            return
        self._progress.update(
            self._task,
            completed=stats.attempted,
            counts=_counts(stats),
            rate=f"{stats.timeline.recent_rate(time.monotonic()):.0f} msg/s (avg {stats.rate:.0f})",
            health=_health(stats),
        )
        self._domain_lines[:] = domain_lines(stats)

    def stop(self) -> None:
        """Take the bar off the screen (it is transient)."""
        self._progress.stop()


def _counts(stats: RunStats) -> str:
    o = stats.outcomes
    return (
        f"sent {o[State.SENT]}  bounced {o[State.BOUNCED]}  deferred {o[State.DEFERRED]}"
        + (f"  unknown {o[State.UNKNOWN]}" if o[State.UNKNOWN] else "")
        + (f"  skipped {o[State.SKIPPED]}" if o[State.SKIPPED] else "")
    )


def _health(stats: RunStats) -> str:
    if stats.waiting:  # what the run waits for, and when it gives up
        return f"waiting: {stats.waiting}"
    p95 = stats.latency.percentile(95)
    attempts = sum(r.attempts for r in stats.relays.values())
    errors = sum(stats.errors.values())
    return (
        (f"p95 {p95 * 1000:.0f} ms  " if p95 is not None else "")
        + (f"errors {errors / attempts:.1%}  " if attempts else "")
        + f"queue {stats.queue_depth}"
    )


DOMAINS_SHOWN = 5  # the busiest domains in the live view, and every slowed one


def domain_lines(stats: RunStats) -> list[str]:
    """The live view's domains: the busiest few (in flight, then attempts) and every one a
    throttling reply slowed or that holds messages back; nothing while there is only one."""
    domains = stats.domains
    if len(domains) < 2:
        return []
    ranked = sorted(domains.items(), key=lambda p: (-p[1].in_flight, -p[1].attempts, p[0]))
    shown = ranked[:DOMAINS_SHOWN]
    shown += [(n, d) for n, d in ranked[DOMAINS_SHOWN:] if d.slowed][:DOMAINS_SHOWN]
    return [_domain_text(name, d) for name, d in shown]


def _domain_text(name: str, domain: DomainStats) -> str:
    text = f"  {name}: sent {domain.outcomes[State.SENT]}, {domain.in_flight} in flight"
    if domain.pace is not None:
        text += f", pace {domain.pace:.3g}/s" + (" (slowed down)" if domain.slowed else "")
    waiting = domain.waiting + domain.skipped
    if waiting:
        text += f", {waiting} waiting"
    return text
