"""The job's Jinja2 templates, compiled once, with errors that point at file and line.

Every template runs in a sandbox, an undefined name is an error rather than an empty
string, and JSONL null renders as nothing. A template without Jinja markup is
rendered once at compile time (`CompiledTemplate.constant`), which lets the renderer
encode it once for the whole job. Syntax errors are `JobError`s at the template's line
in its file (or in the job file, for an inline template); anything that fails while
rendering one row is a `TemplateRowError` for that row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import CodeType
from typing import Any, NamedTuple

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from txsend.errors import JobError, TemplateRowError
from txsend.models import Row, Template

__all__ = ["CompiledTemplate", "Environments", "compile_template", "environments"]

_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_INLINE_ORIGIN = re.compile(r"(.+):(\d+)")
_UNDEFINED_NAME = re.compile(r"'(.+)' is undefined")


class Environments(NamedTuple):
    """The Jinja environments of one job: bodies, HTML (autoescaped) and header values."""

    body: SandboxedEnvironment
    html: SandboxedEnvironment
    header: SandboxedEnvironment


def environments() -> Environments:
    """New sandboxed environments, strict about undefined names."""
    common: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "finalize": _finalize}
    return Environments(
        body=SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, **common),
        html=SandboxedEnvironment(autoescape=True, keep_trailing_newline=True, **common),
        # Header templates drop one trailing newline (Jinja's default): a subject kept in
        # a file nearly always ends with one, and it must not count as header injection.
        header=SandboxedEnvironment(autoescape=False, keep_trailing_newline=False, **common),
    )


def _finalize(value: Any) -> Any:
    # JSONL null would otherwise render as the word "None" in a customer's email.
    return "" if value is None else value


def compile_template(
    env: SandboxedEnvironment, tpl: Template, *, strip: bool = False
) -> CompiledTemplate:
    """Compile a job template; errors in an inline one are placed in the job file.

    A literal template (`Template.literal`: content given to `txsend send`) is not
    compiled at all: its text is its constant output, `{{` and all."""
    if tpl.literal:
        return CompiledTemplate.fixed(tpl.source, label=tpl.origin, strip=strip)
    base_line = 1
    file = tpl.origin
    if tpl.path is None:
        # Inline template "job.yaml:12": report errors as job.yaml:(12 + line - 1).
        match = _INLINE_ORIGIN.fullmatch(tpl.origin)
        if match:
            file, base_line = match[1], int(match[2])
    return CompiledTemplate(
        env, tpl.source, label=tpl.origin, file=file, base_line=base_line, strip=strip
    )


class CompiledTemplate:
    """One compiled template, or its constant output, and where it came from."""

    __slots__ = ("constant", "filename", "label", "strip", "template")

    def __init__(
        self,
        env: SandboxedEnvironment,
        source: str,
        *,
        label: str,
        file: str,
        base_line: int | None,
        strip: bool = False,
    ) -> None:
        """Compile `source`; raise JobError at its line for a syntax error.

        base_line: the file line of the template's first line; None when the template
        is a value inside the job file whose line is unknown (then the label says which).
        """
        self.label = label  # "templates/welcome.txt", "job.yaml:12", "job.yaml (headers.X)"
        self.filename = label
        self.constant: str | None = None
        self.template: jinja2.Template | None = None
        # Header values lose surrounding blanks: they carry no meaning, and readers
        # disagree on keeping them (an encoded leading space survives, a plain one not).
        self.strip = strip
        try:
            code = env.compile(source, name=label, filename=label)
            assert isinstance(code, CodeType)
            # A plain dict, not make_globals()'s ChainMap: every render copies the globals
            # into a new context, and copying a ChainMap costs more than the render itself.
            self.template = env.template_class.from_code(env, code, dict(env.globals))
        except jinja2.TemplateSyntaxError as exc:
            if base_line is None:
                message = f"template syntax error in {label}, line {exc.lineno}: {exc.message}"
                raise JobError(message, file=file) from None
            line = base_line + exc.lineno - 1
            raise JobError(f"template syntax error: {exc.message}", file=file, line=line) from None
        if not any(marker in source for marker in _TEMPLATE_MARKERS):
            self.constant = self.template.render()
            if strip:
                self.constant = self.constant.strip(" \t")

    @classmethod
    def fixed(cls, text: str, *, label: str, strip: bool = False) -> CompiledTemplate:
        """Text that is not a template: its constant is the text itself."""
        self = cls.__new__(cls)
        self.label = self.filename = label
        self.strip = strip
        self.template = None
        self.constant = text.strip(" \t") if strip else text
        return self

    def render(self, data: Mapping[str, Any], row: Row) -> str:
        """Render with a row's data; any Jinja or runtime error becomes a RowError."""
        if self.constant is not None:
            return self.constant
        assert self.template is not None  # only a fixed text has none, and it is constant
        try:
            out = self.template.render(data)
        except jinja2.UndefinedError as exc:
            where = self._where(exc)
            match = _UNDEFINED_NAME.fullmatch(exc.message or "")
            if match:
                reason = f"undefined variable '{match[1]}' in {where}"
            else:
                reason = f"undefined value in {where}: {exc.message}"
            raise TemplateRowError(reason, row=row.number, key=row.key) from exc
        except Exception as exc:
            reason = f"template error in {self._where(exc)}: {type(exc).__name__}: {exc}"
            raise TemplateRowError(reason, row=row.number, key=row.key) from exc
        return out.strip(" \t") if self.strip else out

    def _where(self, exc: BaseException) -> str:
        # Jinja rewrites tracebacks so template frames carry the template's file and line.
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        if line is None:
            return self.label
        match = _INLINE_ORIGIN.fullmatch(self.label)
        if match:
            return f"{match[1]}:{int(match[2]) + line - 1}"
        return f"{self.label}:{line}"
