"""The house rules that import-linter cannot see: private names stay home, lazy imports say why.

The layers, the libraries' homes and the absence of cycles are contracts in pyproject.toml,
checked by `make lint`; these two are about names and placement inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Modules imported inside a function on purpose, and why: each keeps a heavy or optional
# library off the start-up path of commands that do not need it. An import inside a
# function that is not here is either one of these kinds (add it, with its reason) or a
# cycle being dodged (the acyclic contract in pyproject.toml would then fail too).
LAZY = {
    "txsend.journal.postgres": "psycopg is an optional extra, needed for a shared journal only",
    "txsend.sink": "aiosmtpd is needed by `txsend sink` only",
    "txsend.content.html": "lxml, inscriptis and css-inline load only for HTML content",
    "txsend.content.dkim": "cryptography and dkimpy load only for jobs that sign",
    "txsend.reporting.prometheus": "prometheus-client loads only with --metrics-*",
    "txsend.reporting.html": "the HTML report's renderer loads only with --report-html",
    # the command line: --help and --version load no use case, only the one that runs
    "txsend.cli.app": "`txsend --version` and `--help` are answered before Typer loads",
    "txsend.logs": "`txsend --version` loads no logging; Ctrl-C while loading needs it",
    "txsend.cli.help_text": "the stored top-level help loads for `txsend --help` only",
    "txsend.app.sending": "the delivery engine, templates and journals load when a run starts",
    "txsend.app.oneshot": "`txsend send` loads its use case (and the engine) when it runs",
    "txsend.app.inspection": "status/report/validate/preview load their use case when run",
    "txsend.app.jobs": "`txsend worker` loads the stored job's use case when it runs",
    "txsend.app.bounces": "the report parsers (flufl.bounce among them) load for `bounces` only",
    "txsend.app.suppressions": "the suppression store loads when `txsend suppress` runs",
    "txsend.app.testsend": "a test send's use case loads when `run --test-to` starts",
    "txsend.job.credentials": "password and token commands load asyncio: only to read one",
    "txsend.addresses": "the address rules (idna) load when an address is checked",
    "txsend.app.probe": "the relay probe (aiosmtplib, cryptography) loads for `check` only",
    "txsend.feedback.imap": "imaplib and TLS load only for `txsend bounces --imap`",
}


def _python_files() -> Iterator[Path]:
    for folder in ("txsend", "tests", "bench"):
        yield from sorted((REPO / folder).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[ast.ImportFrom, bool]]:
    """Every `from txsend... import` in a module, and whether it sits inside a function."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("txsend"):
                yield child, in_function
            yield from walk(child, inside)

    yield from walk(tree, False)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"


def test_no_private_name_is_imported_from_another_module() -> None:
    found = [
        f"{_where(path, node)}: {alias.name} from {node.module}"
        for path in _python_files()
        for node, _ in _imports(ast.parse(path.read_text(encoding="utf-8")))
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert found == []


def test_every_import_inside_a_function_is_a_lazy_one_with_a_reason() -> None:
    found = []
    for path in sorted((REPO / "txsend").rglob("*.py")):
        for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            lazy = any(n == k or n.startswith(k + ".") for n in names for k in LAZY)
            if in_function and not lazy:
                found.append(f"{_where(path, node)}: from {node.module} import ...")
    assert found == []


@pytest.mark.parametrize("module", sorted(LAZY))
def test_each_lazy_module_exists(module: str) -> None:
    path = REPO / module.replace(".", "/")
    assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
