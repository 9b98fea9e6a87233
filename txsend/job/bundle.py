"""A job's folder as one zip archive, stored with a shared journal for `txsend worker`.

A worker on another host has no job file: it rebuilds the job from this bundle (the
job file, templates, attachments, inline images, suppression lists: every regular file
in the job's folder) unpacked into a private temporary folder. Left out:

* the recipient data: its rows are in the journal (the bundle keeps only a CSV's header
  line, which loading the job reads);
* secrets: the DKIM key and relay password files. The bundle lists their paths relative
  to the job's folder; a worker links each to the file at that relative path under its
  current directory, when there is one (a host's own copy, e.g. `keys/dkim.pem`).
* journals, lock files, hidden files and folders.

A folder over `MAX_BYTES` is not stored; its hosts run `txsend run JOB --journal URL`.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

from txsend.errors import ConfigError
from txsend.job.spec import Job

MAX_BYTES = 64 * 1024 * 1024
MAX_FILES = 5000
_SKIP_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".lock", ".sqlite", ".sqlite3")
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
SECRETS_MEMBER = ".txsend-secrets"  # paths of the secrets left out, one a line


def _secrets(job: Job) -> set[Path]:
    paths = {relay.password_file for relay in job.relays if relay.password_file is not None}
    if job.content.dkim is not None:
        paths.add(job.content.dkim.key_file)
    return {p.resolve() for p in paths}


def pack(job: Job) -> tuple[bytes | None, str | None]:
    """The job's folder as zip bytes, or (None, why it is not stored)."""
    import zipfile  # only a job shared through PostgreSQL is packed: not on every run's path

    base = job.base_dir.resolve()
    secrets = _secrets(job)
    data_file = job.recipients.file.resolve()
    buffer = io.BytesIO()
    total = files = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        left_out = sorted(p.relative_to(base).as_posix() for p in secrets if p.is_relative_to(base))
        archive.writestr(SECRETS_MEMBER, "".join(f"{path}\n" for path in left_out))
        for folder, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
            for name in sorted(names):
                path = Path(folder, name)
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                    continue
                real = path.resolve()
                if real in secrets or not real.is_relative_to(base):
                    continue
                try:
                    info = real.stat()
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                relative = path.relative_to(base).as_posix()
                if real == data_file:
                    archive.writestr(relative, _header_of(real))
                    continue
                total += info.st_size
                files += 1
                if total > MAX_BYTES or files > MAX_FILES:
                    return None, (
                        f"the job's folder {base} holds over {MAX_BYTES // 2**20} MB or "
                        f"{MAX_FILES} files"
                    )
                archive.write(real, relative)
    return buffer.getvalue(), None


def _header_of(path: Path) -> bytes:
    """A data file's first line (a CSV header), or nothing for JSON lines."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return b""
    with path.open("rb") as handle:
        return handle.readline()


def unpack(bundle: bytes, source_name: str, secrets_from: Path | None = None) -> Path:
    """Write the bundle into a new private folder; the job file's path in it.

    Each secret the bundle left out is linked to the file at the same relative path
    under `secrets_from` (default: the current directory) when that file exists.
    """
    import zipfile

    folder = Path(tempfile.mkdtemp(prefix="txsend-job-")).resolve()  # mode 0700
    secrets: list[str] = []
    try:
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            for member in archive.infolist():
                if member.filename == SECRETS_MEMBER:
                    secrets = archive.read(member).decode().splitlines()
                    continue
                target = (folder / member.filename).resolve()
                if not target.is_relative_to(folder) or member.is_dir():
                    continue  # never write outside the folder
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
        here = (secrets_from or Path.cwd()).resolve()
        for relative in secrets:
            own, target = here / relative, (folder / relative).resolve()
            if own.is_file() and target.is_relative_to(folder) and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(own.resolve())
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the job stored in the journal cannot be unpacked: {exc}") from None
    return folder / source_name
