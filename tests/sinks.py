"""txsend's own sink (txsend.sink.server.serve) running in a thread, for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txsend.sink.capture import SinkStats
from txsend.sink.server import serve


@dataclass
class RunningSink:
    port: int
    stop: threading.Event
    thread: threading.Thread
    result: list[SinkStats] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def finish(self) -> SinkStats:
        """Stop the sink and return what it counted."""
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]
        return self.result[0]


def start_sink(tmp_path: Path, **kwargs: Any) -> RunningSink:
    """Start serve() on a free loopback port (kwargs go to serve); stop it with finish()."""
    port_file = tmp_path / "sink.port"
    stop = threading.Event()
    ready = threading.Event()
    sink = RunningSink(port=0, stop=stop, thread=threading.Thread(target=lambda: None))
    seen: list[tuple[str, int]] = []

    def on_ready(host: str, port: int) -> None:
        assert port_file.read_text() == f"{port}\n"  # written before on_ready
        seen.append((host, port))
        ready.set()

    def run() -> None:
        try:
            sink.result.append(
                serve(
                    "127.0.0.1",
                    0,
                    port_file=port_file,
                    on_ready=on_ready,
                    stop_event=stop,
                    **kwargs,
                )
            )
        except BaseException as exc:
            sink.errors.append(exc)
            ready.set()

    sink.thread = threading.Thread(target=run, name="txsend-sink", daemon=True)
    sink.thread.start()
    assert ready.wait(10), "the sink did not start"
    if sink.errors:
        raise sink.errors[0]
    host, sink.port = seen[0]
    assert host == "127.0.0.1"
    assert sink.port > 0
    return sink


@contextmanager
def running_sink(tmp_path: Path, **kwargs: Any) -> Iterator[RunningSink]:
    """start_sink() as a context manager that always stops the sink."""
    sink = start_sink(tmp_path, **kwargs)
    try:
        yield sink
    finally:
        sink.stop.set()
        sink.thread.join(timeout=10)
