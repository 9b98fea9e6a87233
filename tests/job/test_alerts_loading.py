"""The job's `alerts:`, `on_finish_command:` and `hook_timeout:` keys: values and units,
and every mistake reported with the file and line of its key (exit 65)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from txsend.errors import JobError
from txsend.job.alerts import DEFAULT_HOOK_TIMEOUT, AlertRule
from txsend.job.loading import load_job
from txsend.units import parse_share

FULL = """\
alerts:
  error_rate: {above: 5%, window: 5m}
  p95_transaction_time: {above: 1500ms, window: 5m}
  throughput: {below: 600/min, window: 10m}
  deferred_share: {above: 0.2}
  min_messages: 50
  command: curl -fsS -d "$TXSEND_ALERT_TEXT" https://hooks.example/x
on_finish_command: ./notify.sh
hook_timeout: 10s
"""


def test_every_key_is_read_with_its_unit(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, extra_yaml=FULL))
    hooks = job.hooks
    assert hooks.alerts is not None
    assert hooks.alerts.rules == (
        AlertRule("error_rate", 0.05, 300.0),
        AlertRule("p95_transaction_time", 1.5, 300.0),
        AlertRule("throughput", 10.0, 600.0, above=False),
        AlertRule("deferred_share", 0.2, 300.0),  # the window's default: 5m
    )
    assert hooks.alerts.min_messages == 50
    assert hooks.alerts.command == 'curl -fsS -d "$TXSEND_ALERT_TEXT" https://hooks.example/x'
    assert hooks.on_finish_command == "./notify.sh"
    assert hooks.timeout == 10.0


def test_a_job_without_them(tmp_path: Path) -> None:
    hooks = load_job(write_job(tmp_path)).hooks
    assert hooks.alerts is None and hooks.on_finish_command is None
    assert hooks.timeout == DEFAULT_HOOK_TIMEOUT and not hooks.any


def test_alerts_without_a_command_and_on_finish_alone(tmp_path: Path) -> None:
    extra = "alerts:\n  error_rate: {above: 10%}\non_finish_command: echo done\n"
    hooks = load_job(write_job(tmp_path, extra_yaml=extra)).hooks
    assert hooks.alerts is not None and hooks.alerts.command is None
    assert hooks.alerts.min_messages == 20


# write_job writes 12 lines: the extra YAML starts on line 13.
BASE = 13


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("alerts:\n  error_rate: {above: 5}\n", 1, "error_rate.above: a share is at most 1"),
        ("alerts:\n  error_rate: {above: 150%}\n", 1, "error_rate.above: a share must be"),
        ("alerts:\n  error_rate: {above: five}\n", 1, "error_rate.above: not a share: 'five'"),
        ("alerts:\n  error_rate: {above: 0}\n", 1, "error_rate.above: a share must be above 0"),
        ("alerts:\n  error_rate: {below: 5%}\n", 1, "error_rate.below: error_rate fires above"),
        ("alerts:\n  throughput: {above: 5/s}\n", 1, "throughput.above: throughput fires below"),
        ("alerts:\n  throughput: {below: 20}\n", 1, "throughput.below: expected a rate like"),
        ("alerts:\n  throughput: {below: 20/week}\n", 1, "throughput.below: expected a rate"),
        ("alerts:\n  p95_transaction_time: {above: fast}\n", 1, "not a duration: 'fast'"),
        ("alerts:\n  error_rate: {window: 5m}\n", 1, "missing required key 'alerts.error_rate"),
        ("alerts:\n  error_rate: {above: 5%, window: 0.5s}\n", 1, "window: must be at least 1s"),
        ("alerts:\n  error_rate: {above: 5%, window: soon}\n", 1, "window: not a duration"),
        ("alerts:\n  error_rate: {above: 5%, windw: 5m}\n", 1, "did you mean 'window'"),
        ("alerts:\n  error_rate: 5%\n", 1, "alerts.error_rate: expected a mapping"),
        ("alerts:\n  error_rat: {above: 5%}\n", 1, "alerts.error_rat: unknown key"),
        ("alerts:\n  error_rate: {above: 5%}\n  min_messages: 0\n", 2, "must be at least 1"),
        ("alerts:\n  error_rate: {above: 5%}\n  min_messages: lots\n", 2, "whole number"),
        ("alerts:\n  error_rate: {above: 5%}\n  command: ''\n", 2, "alerts.command: is empty"),
        ("alerts:\n  error_rate: {above: 5%}\n  command: [curl]\n", 2, "expected a string"),
        ("alerts:\n  command: curl x\n", 0, "alerts: no threshold set"),
        ("alerts: yes\n", 0, "alerts: expected a mapping"),
        ("on_finish_command: 42\n", 0, "on_finish_command: expected a string"),
        ("hook_timeout: forever\n", 0, "hook_timeout: not a duration"),
        # not finite: a NaN or endless window or limit broke the run (exit 70), an
        # infinite threshold made the JSON report invalid (Infinity)
        ("hook_timeout: .inf\n", 0, "hook_timeout: a duration must be a finite number"),
        ("hook_timeout: .nan\n", 0, "hook_timeout: a duration must be a finite number"),
        (
            "alerts:\n  p95_transaction_time: {above: .inf}\n",
            1,
            "alerts.p95_transaction_time.above: a duration must be a finite number",
        ),
        (
            "alerts:\n  error_rate: {above: 5%, window: .nan}\n",
            1,
            "alerts.error_rate.window: a duration must be a finite number",
        ),
        # the end of the run waits for the commands: past a day a timeout overflowed (70)
        ("hook_timeout: 1000000d\n", 0, "hook_timeout: at most 1d"),
        ("on_finish_comand: x\n", 0, "did you mean 'on_finish_command'"),
    ],
)
def test_mistakes_name_file_and_line(tmp_path: Path, extra: str, line: int, message: str) -> None:
    path = write_job(tmp_path, extra_yaml=extra)
    with pytest.raises(JobError) as caught:
        load_job(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:{BASE + line}: "), text
    assert message in text, text
    assert caught.value.exit_code == 65


def test_a_mistake_is_exit_65_with_file_and_line_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_job(tmp_path, extra_yaml="alerts:\n  deferred_share: {above: 20 percent}\n")
    result = cli(capsys, "validate", path)
    assert result.code == 65
    assert f"{path}:{BASE + 1}: alerts.deferred_share.above: not a share" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("text", "share"), [("5%", 0.05), ("12.5 %", 0.125), ("100%", 1.0), (0.2, 0.2), (1, 1.0)]
)
def test_parse_share(text: str | float, share: float) -> None:
    assert parse_share(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["", "%", "-5%", "5", "0%", 0, 1.5, True, None, "nan%"])
def test_parse_share_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_share(text)  # type: ignore[arg-type]
