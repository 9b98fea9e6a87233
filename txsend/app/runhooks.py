"""A run's alerts and commands: the job's `alerts:` judged on every tick of the run, each
change logged (event `alert`) and given to `alerts.command`; `on_finish_command` once the
run has ended and its journal record and report files are final.

`on_finish_command` runs after every run that started sending, whatever its exit code:
done, some rows failed, deferred rows left, interrupted (130/143), aborted, or an error
during the run (e.g. 65 when the template fails the first rows, 70 for a bug). It does not
run when txsend stops before the run starts (a bad job file, a missing secret, another run
holding the journal), nor for --dry-run, which sends nothing and notifies no one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from txsend.app.hooks import AlertCommands, run_command
from txsend.errors import TxsendError
from txsend.job.spec import Job
from txsend.journal.api import JournalBackend
from txsend.logs import event
from txsend.models import State
from txsend.reporting.alerts import AlertChange, AlertMonitor, describe_value, describe_window
from txsend.reporting.outputs import OutputOptions
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary

__all__ = ["RunHooks"]


class RunHooks:
    """What one run watches and runs; inert for a job without alerts or on_finish_command."""

    def __init__(
        self,
        job: Job,
        run_id: int,
        command: str,
        outputs: OutputOptions,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._job = job
        self._run_id = run_id
        self._command = command
        self._outputs = outputs
        self._clock = clock
        hooks = job.hooks
        self._on_finish = None if dry_run else hooks.on_finish_command
        self._timeout = hooks.timeout
        alerts = None if dry_run else hooks.alerts
        now = clock()
        self.monitor = (
            AlertMonitor(alerts, now, wall_offset=time.time() - now) if alerts is not None else None
        )
        self._commands = (
            AlertCommands(alerts.command, hooks.timeout)
            if alerts is not None and alerts.command is not None
            else None
        )

    def watch(self, stats: RunStats) -> None:
        """Have the engine feed its outcomes to the alerts."""
        stats.watcher = self.monitor

    def tick(self) -> None:
        """Judge the alerts now; log and hand on each change."""
        if self.monitor is None:
            return
        for change in self.monitor.evaluate(self._clock()):
            self._announce(change)

    def report(self) -> tuple[dict[str, Any], ...] | None:
        """The report's `alerts`, or None for a job without alerts."""
        return tuple(self.monitor.to_json()) if self.monitor is not None else None

    def finish(
        self,
        exit_code: int,
        journal: JournalBackend,
        summary: Summary | None = None,
        error: BaseException | None = None,
    ) -> None:
        """At the run's end: let the alert commands finish (bounded), then run
        on_finish_command. Never raises for a command's sake."""
        if self._commands is not None:
            self._commands.finish()
        if self._on_finish is None:
            return
        if error is not None and not isinstance(error, Exception):
            return  # a second interrupt, an exit: leave at once
        try:
            variables = self._finish_variables(exit_code, journal, summary, error)
        except Exception as exc:  # a broken journal: say so, run the command all the same
            variables = self._base_variables()
            variables["TXSEND_EXIT_CODE"] = str(exit_code)
            variables["TXSEND_ERROR"] = str(exc)
        run_command("on_finish", self._on_finish, variables, self._timeout)

    # --- alerts -----------------------------------------------------------------------

    def _announce(self, change: AlertChange) -> None:
        rule = change.rule
        event(
            logging.WARNING,
            "alert",
            f"{self._job.name}: {change.text}",
            name=rule.name,
            state=change.state,
            value=round(change.value, 6),
            threshold=round(rule.threshold, 6),
            condition=rule.condition,
            unit=rule.unit,
            window=rule.window,
            messages=change.messages,
            job=self._job.name,
            run_id=self._run_id,
        )
        if self._commands is not None:
            self._commands.submit(f"{rule.name} {change.state}", self._alert_variables(change))

    def _alert_variables(self, change: AlertChange) -> dict[str, str]:
        rule = change.rule
        text = f"txsend {self._job.name}: {change.text}"
        variables = self._base_variables()
        variables.update(
            {
                "TXSEND_ALERT": rule.name,
                "TXSEND_ALERT_STATE": change.state,
                "TXSEND_ALERT_VALUE": _number(change.value),
                "TXSEND_ALERT_THRESHOLD": _number(rule.threshold),
                "TXSEND_ALERT_CONDITION": rule.condition,
                "TXSEND_ALERT_UNIT": rule.unit,
                "TXSEND_ALERT_WINDOW": _number(rule.window),
                "TXSEND_ALERT_WINDOW_TEXT": describe_window(rule.window),
                "TXSEND_ALERT_VALUE_TEXT": describe_value(change.value, rule.unit),
                "TXSEND_ALERT_MESSAGES": str(change.messages),
                "TXSEND_ALERT_AT": change.to_json()["at"],
                "TXSEND_ALERT_TEXT": text,
            }
        )
        variables["TXSEND_ALERT_JSON"] = json.dumps(
            {
                "text": text,
                "alert": rule.name,
                "state": change.state,
                "value": round(change.value, 6),
                "threshold": round(rule.threshold, 6),
                "condition": rule.condition,
                "unit": rule.unit,
                "window_seconds": rule.window,
                "messages": change.messages,
                "at": variables["TXSEND_ALERT_AT"],
                "job": self._job.name,
                "run_id": self._run_id,
            },
            ensure_ascii=False,
        )
        return variables

    # --- the end ----------------------------------------------------------------------

    def _base_variables(self) -> dict[str, str]:
        return {
            "TXSEND_JOB": self._job.name,
            "TXSEND_RUN_ID": str(self._run_id),
            "TXSEND_COMMAND": self._command,
        }

    def _finish_variables(
        self,
        exit_code: int,
        journal: JournalBackend,
        summary: Summary | None,
        error: BaseException | None,
    ) -> dict[str, str]:
        counts: Mapping[State, int] = summary.counts if summary is not None else journal.counts()
        variables = self._base_variables()
        variables["TXSEND_EXIT_CODE"] = str(exit_code)
        for state in State:
            variables[f"TXSEND_COUNT_{state.name}"] = str(counts.get(state, 0))
        stats = summary.stats if summary is not None else None
        if stats is not None:
            variables["TXSEND_SECONDS"] = _number(round(stats.elapsed, 3))
            variables["TXSEND_STOP_REASON"] = stats.stop_reason or ""
        outputs = self._outputs
        for name, path in (
            ("TXSEND_REPORT", outputs.report),
            ("TXSEND_REPORT_HTML", outputs.report_html),
            ("TXSEND_METRICS_FILE", outputs.metrics_file),
        ):
            # only files this run wrote: an error before the end writes no report
            if path is not None and (summary is not None or name == "TXSEND_METRICS_FILE"):
                variables[name] = str(path)
        variables["TXSEND_JOURNAL"] = str(journal.location)
        if self.monitor is not None:
            variables["TXSEND_ALERTS_FIRED"] = " ".join(self.monitor.fired)
            variables["TXSEND_ALERTS_FIRING"] = " ".join(self.monitor.firing)
        if error is not None:
            variables["TXSEND_ERROR"] = (
                error.message if isinstance(error, TxsendError) else type(error).__name__
            )
        sent = counts.get(State.SENT, 0)
        problems = sum(counts.get(s, 0) for s in (State.BOUNCED, State.FAILED, State.UNKNOWN))
        variables["TXSEND_TEXT"] = (
            f"txsend {self._command} {self._job.name}: exit {exit_code}; {sent} sent, "
            f"{problems} bounced, failed or unknown, {counts.get(State.DEFERRED, 0)} deferred, "
            f"{counts.get(State.PENDING, 0)} pending"
            # schedule.not_after passed: rows never sent (only when there are some)
            + (f", {expired} expired" if (expired := counts.get(State.EXPIRED, 0)) else "")
            + (f"; {variables['TXSEND_ERROR']}" if error is not None else "")
        )
        return variables


def _number(value: float) -> str:
    """A number for an environment variable: 0.125, 2, 20.5 (no exponent, no noise)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
