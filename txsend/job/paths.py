"""Paths a job names: made absolute without resolving symlinks, and kept inside its folder.

`confine` is the one place a file name from a job or a data row becomes a path: the job
loader checks attachment and inline-image paths with it when it loads the job, and the
renderer checks paths taken from data rows the same way for each message.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PathEscapes", "absolute", "confine"]


class PathEscapes(ValueError):
    """A path from the job or a data row leads outside the job's folder, or is not a file."""


def absolute(path: Path) -> Path:
    """The absolute form of a path, keeping symlinks as written."""
    # abspath, not resolve(): a symlinked job folder keeps its own relative paths.
    return Path(os.path.abspath(path))


def confine(base: Path, relative: str) -> Path:
    """The real path of `relative` inside `base`; PathEscapes or FileNotFoundError if not."""
    if not relative or not relative.strip():
        raise PathEscapes("empty file name")
    if "\x00" in relative:
        raise PathEscapes(f"{relative!r}: NUL in file name")
    if os.path.isabs(relative) or relative.startswith("~"):
        raise PathEscapes(
            f"{relative}: an absolute path is not allowed; name a file in the job's folder"
        )
    root = base.resolve()
    target = (root / relative).resolve(strict=True)  # FileNotFoundError if missing
    if not target.is_relative_to(root):
        raise PathEscapes(f"{relative}: leads outside the job's folder ({root})")
    if not target.is_file():
        raise PathEscapes(f"{relative}: not a file")
    return target
