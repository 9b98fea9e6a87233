"""The job file as YAML that remembers lines, and typed access to its mappings.

Every problem in a job file is reported with ``file:line`` of the offending key: the
loader here builds mappings and lists that keep the line of each key and item, and
`Section` reads one mapping of them with checks that say which key, on which line, is
wrong and what to write instead. The only importer of PyYAML.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from txsend.errors import JobError, MissingInputError
from txsend.units import describe_value, parse_duration

__all__ = ["Section", "fraction_problem", "load_yaml", "read_text"]


class _LineDict(dict[str, Any]):
    """A YAML mapping that remembers the line of each of its keys."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class _LineList(list[Any]):
    """A YAML sequence that remembers the line of each item."""

    def __init__(self, items: list[Any], lines: list[int]) -> None:
        super().__init__(items)
        self.lines = lines


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building _LineDict / _LineList so validation can cite file:line."""

    display = "job"


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)  # resolve "<<:" merge keys first
    mapping = _LineDict(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raw = key_node.value if isinstance(key_node, yaml.ScalarNode) else key
            raise JobError(
                f"key {raw!r} is not text",
                file=loader.display,
                line=line,
                hint=f'quote it: "{raw}":',
            )
        if key in mapping:
            raise JobError(
                f"{key}: duplicate key (first set on line {mapping.key_lines[key]})",
                file=loader.display,
                line=line,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    items = [loader.construct_object(child, deep=True) for child in node.value]
    return _LineList(items, [child.start_mark.line + 1 for child in node.value])


def _construct_timestamp(loader: _LineLoader, node: yaml.ScalarNode) -> Any:
    """An unquoted date or date and time, as PyYAML builds it; one that looks like a date
    but is none (2026-02-30, 10:00:61) stays the text it is: a `subject:` may be anything,
    and `schedule:` says which date is wrong, on which line."""
    try:
        return loader.construct_yaml_timestamp(node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def load_yaml(path: Path, display: str) -> Any:
    text = read_text(path, display)
    loader = _LineLoader(text)
    loader.display = display
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "not valid YAML"
        hint = None
        if exc.context and exc.context_mark is not None and exc.problem:
            hint = f"{exc.context} on line {exc.context_mark.line + 1}"
        raise JobError(f"invalid YAML: {problem}", file=display, line=line, hint=hint) from None
    except yaml.YAMLError as exc:
        raise JobError(f"invalid YAML: {exc}", file=display) from None
    finally:
        loader.dispose()


def read_text(path: Path, display: str) -> str:
    """A text file decoded as UTF-8 (BOM stripped); JobError names the first bad byte's line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"file not found: {display}") from None
    except OSError as exc:
        raise MissingInputError(f"cannot read {display}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            file=display,
            line=line,
            hint="save the file as UTF-8",
        ) from None


class Section:
    """Typed, line-aware access to one mapping of the job file."""

    def __init__(
        self, display: str, data: dict[str, Any], path: str = "", line: int | None = None
    ) -> None:
        self.display = display
        self.data = data
        self.path = path  # dotted name, e.g. "relays[0]"; "" at the top level
        self.line = line  # line of the key holding this mapping; None at the top level
        self.key_lines = data.key_lines if isinstance(data, _LineDict) else {}

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)

    def error(self, key: str, message: str, hint: str | None = None) -> JobError:
        return JobError(
            f"{self.name(key)}: {message}", file=self.display, line=self.line_of(key), hint=hint
        )

    def where(self, key: str) -> str:
        """'file:line: key' for messages raised as other error types."""
        line = self.line_of(key)
        return (
            f"{self.display}:{line}: {self.name(key)}"
            if line
            else f"{self.display}: {self.name(key)}"
        )

    def check_keys(self, known: Collection[str]) -> None:
        for key in self.data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            if close:
                raise self.error(key, f"unknown key (did you mean {close[0]!r}?)")
            raise self.error(key, "unknown key", hint=f"known keys: {', '.join(sorted(known))}")

    def value(self, key: str) -> Any:
        """The value, or None when the key is absent or empty (`key:` with nothing after)."""
        return self.data.get(key)

    def missing(self, key: str, hint: str | None = None) -> JobError:
        if key in self.data:
            return self.error(key, "is empty", hint=hint)
        return JobError(
            f"missing required key {self.name(key)!r}", file=self.display, line=self.line, hint=hint
        )

    def opt_str(self, key: str) -> str | None:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {describe_value(value)}")
        if not value.strip():
            raise self.error(key, "is empty")
        return value

    def req_str(self, key: str, hint: str | None = None) -> str:
        value = self.opt_str(key)
        if value is None:
            raise self.missing(key, hint)
        return value

    def opt_map(self, key: str) -> Section | None:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {describe_value(value)}")
        return Section(self.display, value, self.name(key), self.line_of(key))

    def opt_list(self, key: str) -> list[tuple[Any, int | None]]:
        value = self.value(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {describe_value(value)}")
        lines: list[int | None] = (
            list(value.lines) if isinstance(value, _LineList) else [self.line_of(key)] * len(value)
        )
        return list(zip(value, lines, strict=True))

    def opt_duration(self, key: str) -> float | None:
        value = self.value(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def opt_int(self, key: str, minimum: int) -> int | None:
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {describe_value(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def opt_fraction(self, key: str) -> float | None:
        """A number with 0 < value <= 1 (a rate or share)."""
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(
                key, f"expected a number between 0 and 1 (e.g. 0.2), got {describe_value(value)}"
            )
        problem = fraction_problem(float(value))
        if problem:
            raise self.error(key, problem)
        return float(value)


def fraction_problem(value: float) -> str | None:
    if math.isfinite(value) and 0 < value <= 1:
        return None
    if math.isfinite(value) and 1 < value <= 100:
        return (
            f"must be above 0 and at most 1, got {value:g} (for {value:g}% write {value / 100:g})"
        )
    return f"must be above 0 and at most 1, got {value:g}"
