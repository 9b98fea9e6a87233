"""docs/alerts.yml: Prometheus accepts the rules (promtool check rules), they pass their
unit tests (promtool test rules docs/alerts.test.yml), and every metric they name is one
txsend really writes (a real run into a ScriptedServer with --metrics-file).

promtool comes with Debian's prometheus package (bench/ensure-prometheus.sh); without it
the promtool tests skip, and with CI=true they fail, since a skip would hide a missing
install step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer

DOCS = Path(__file__).resolve().parents[2] / "docs"
RULES = DOCS / "alerts.yml"
RULE_TESTS = DOCS / "alerts.test.yml"
INSTALL_HINT = "install Debian's prometheus package (sh bench/ensure-prometheus.sh as root)"
NAME = re.compile(r"\btxsend_[a-z0-9_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"promtool is missing on CI; {INSTALL_HINT} in .ci/run")
        pytest.skip(f"promtool is missing; {INSTALL_HINT}")
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules() -> None:
    out = run_promtool("check", "rules", str(RULES))
    assert "SUCCESS: 7 rules found" in out


def test_the_rules_pass_their_unit_tests() -> None:
    out = run_promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out


def test_every_rule_has_a_unit_test() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert {rule["alert"] for rule in rules} == tested


def names_in_rules() -> set[str]:
    names: set[str] = set()
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        names.update(NAME.findall(rule["expr"]))
        for text in rule.get("annotations", {}).values():
            names.update(NAME.findall(text))
    return names


def test_every_metric_the_rules_name_is_one_txsend_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], smtp_server: ScriptedServer
) -> None:
    extra = "alerts:\n  error_rate: {above: 5%}\n  throughput: {below: 1/s}\n  min_messages: 2\n"
    job = write_job(tmp_path / "job", rows=6, extra_yaml=extra)
    smtp_server.rcpt_replies["user0@example.com"] = "550 5.1.1 no such user"
    metrics = tmp_path / "txsend.prom"
    result = cli(
        capsys,
        "run",
        job,
        "--relay",
        f"smtp://127.0.0.1:{smtp_server.port}?tls=none",
        "--metrics-file",
        metrics,
    )
    assert result.code == 1, result.err
    written = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in metrics.read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = names_in_rules()
    assert len(used) >= 8, used
    assert used <= written, sorted(used - written)
