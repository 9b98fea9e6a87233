"""The HTML page and the metrics text of fixed reports, compared byte for byte with the
files in tests/reporting/snapshots/: the example report, and the mangled reports of
tests/reporting/mangled.py. The snapshots were written by the renderers before they shared
`txsend.reporting.schema`; rewrite them only for an intended change of the output:

    .venv/bin/python -m tests.reporting.test_snapshots
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.reporting.mangled import REPORTS, example
from txsend.reporting.html import render_html_report
from txsend.reporting.prometheus import registry_for

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"

# The one sample that changes on every call: when the metrics were made.
_STAMP = re.compile(r"^(txsend_last_update_timestamp_seconds\{[^}]*\}) \S+$", re.MULTILINE)


def metrics_text(report: dict[str, Any]) -> str:
    text = generate_latest(registry_for(report)).decode()
    return _STAMP.sub(r"\1 NOW", text)


def outputs(name: str) -> dict[Path, str]:
    report = REPORTS[name]()
    return {
        SNAPSHOTS / f"{name}.html": render_html_report(report),
        SNAPSHOTS / f"{name}.prom": metrics_text(report),
    }


@pytest.mark.parametrize("name", REPORTS)
def test_outputs_equal_the_snapshots(name: str) -> None:
    for path, text in outputs(name).items():
        assert text == path.read_text(encoding="utf-8"), path.name


def test_the_snapshot_timestamp_is_the_only_one_replaced() -> None:
    assert metrics_text(example()).count(" NOW\n") == 1


if __name__ == "__main__":
    for report in REPORTS:
        for path, text in outputs(report).items():
            path.write_text(text, encoding="utf-8")
