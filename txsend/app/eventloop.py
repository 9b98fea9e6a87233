"""The event loop a run uses: uvloop when it is installed (`pip install txsend[speed]`),
else asyncio's own. `TXSEND_LOOP=asyncio` forces asyncio's loop, `TXSEND_LOOP=uvloop`
insists on uvloop (an error when it is missing).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from txsend.errors import ConfigError

T = TypeVar("T")


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop's name and factory (None: asyncio's default)."""
    wanted = os.environ.get("TXSEND_LOOP", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "asyncio", "uvloop"):
        raise ConfigError(f"TXSEND_LOOP={wanted}: expected auto, asyncio or uvloop")
    if wanted == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(
                "TXSEND_LOOP=uvloop but uvloop is not installed",
                hint="pip install 'txsend[speed]', or unset TXSEND_LOOP",
            ) from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with the chosen loop."""
    try:
        _name, factory = loop_factory()
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
