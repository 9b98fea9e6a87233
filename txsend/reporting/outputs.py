"""The files and endpoint a run writes besides its summary: --report, --report-html,
--metrics-file (rewritten every few seconds) and --metrics-port.

Every file is written atomically (a temporary file in the same folder, then a rename),
so a reader such as node_exporter's textfile collector never sees half a file.
`txsend.reporting.prometheus` and `txsend.reporting.html` are imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from txsend.errors import UsageError
from txsend.logs import event

if TYPE_CHECKING:
    from txsend.reporting.prometheus import MetricsExporter

METRICS_INTERVAL = 5.0  # seconds between rewrites of --metrics-file during a run


@dataclass(frozen=True)
class OutputOptions:
    """What `--report`, `--report-html`, `--metrics-file` and `--metrics-port` asked for."""

    report: Path | None = None
    report_html: Path | None = None
    metrics_file: Path | None = None
    metrics_port: int | None = None


class RunOutputs:
    """Writes a run's report files and keeps its metrics current."""

    def __init__(self, options: OutputOptions, interval: float = METRICS_INTERVAL) -> None:
        self.options = options
        self._interval = interval
        self._last = 0.0
        self._metrics: MetricsExporter | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on, once started."""
        return self._metrics.port if self._metrics is not None else None

    def start(self) -> None:
        """Check the output folders and start serving /metrics (UsageError if impossible)."""
        for path in (self.options.report, self.options.report_html, self.options.metrics_file):
            if path is not None and not path.parent.is_dir():
                raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
        if self.options.metrics_file is not None or self.options.metrics_port is not None:
            from txsend.reporting.prometheus import MetricsExporter

            self._metrics = MetricsExporter(
                path=self.options.metrics_file, port=self.options.metrics_port
            )
            self._metrics.start()
            if self._metrics.port is not None:
                event(
                    logging.INFO,
                    "metrics_serving",
                    f"serving /metrics on http://127.0.0.1:{self._metrics.port}/metrics",
                    port=self._metrics.port,
                )

    def tick(self, build: Callable[[], Mapping[str, Any]]) -> None:
        """During the run: refresh the metrics every few seconds (`build` makes the report)."""
        if self._metrics is None:
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        self._metrics.update(build())
        self._metrics.write()

    def finish(self, report: Mapping[str, Any]) -> None:
        """At the end: write the report files and the final metrics."""
        if self.options.report is not None:
            write_atomic(self.options.report, json.dumps(report, indent=2) + "\n")
        if self.options.report_html is not None:
            from txsend.reporting.html import render_html_report

            write_atomic(self.options.report_html, render_html_report(report))
        if self._metrics is not None:
            self._metrics.update(report)
            self._metrics.write()

    def close(self) -> None:
        """Stop serving /metrics; never raises."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename; UsageError on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
