"""The job folder stored with a shared journal for `txsend worker` (txsend.job.bundle)."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest

from txsend.job.bundle import SECRETS_MEMBER, pack, unpack
from txsend.job.loading import load_job

SAMPLES = Path(__file__).resolve().parents[2] / "sample_jobs"


@pytest.fixture
def newsletter(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    shutil.copytree(SAMPLES, folder)
    (folder / "keys" / "dkim-test.pem").chmod(0o600)
    (folder / "old.journal.db").write_bytes(b"SQLite journal")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[core]\n")
    return folder / "monthly-newsletter.yaml"


def members(bundle: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_bundle_holds_the_folder_but_no_data_secrets_or_journals(newsletter: Path) -> None:
    job = load_job(newsletter, env={})
    bundle, why = pack(job)
    assert why is None and bundle is not None
    files = members(bundle)
    assert files["monthly-newsletter.yaml"] == newsletter.read_bytes()
    assert "images/logo.png" in files and "newsletter.txt" in files
    data = job.recipients.file.relative_to(newsletter.parent).as_posix()
    assert files[data] == job.recipients.file.read_bytes().splitlines(keepends=True)[0]
    assert "keys/dkim-test.pem" not in files
    assert files[SECRETS_MEMBER] == b"keys/dkim-test.pem\n"
    assert not [name for name in files if name.endswith(".db") or name.startswith(".git")]
    assert b"PRIVATE KEY" not in b"".join(files.values())


def test_unpacked_job_loads_with_the_hosts_own_key(newsletter: Path, tmp_path: Path) -> None:
    bundle, _ = pack(load_job(newsletter, env={}))
    assert bundle is not None
    host = tmp_path / "host"
    (host / "keys").mkdir(parents=True)
    shutil.copy(newsletter.parent / "keys" / "dkim-test.pem", host / "keys")
    path = unpack(bundle, newsletter.name, secrets_from=host)
    try:
        job = load_job(path, env={})
        assert job.content.dkim is not None
        assert job.content.dkim.key_file.resolve() == (host / "keys" / "dkim-test.pem").resolve()
        assert path.parent.stat().st_mode & 0o077 == 0  # a private folder
    finally:
        shutil.rmtree(path.parent)


def test_unpack_never_writes_outside_its_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("job.yaml", "name: x\n")
        archive.writestr("../escaped.txt", "no")
        archive.writestr(SECRETS_MEMBER, "../../etc/passwd\n")
    path = unpack(buffer.getvalue(), "job.yaml", secrets_from=tmp_path)
    try:
        assert sorted(p.name for p in path.parent.iterdir()) == ["job.yaml"]
        assert not (path.parent.parent / "escaped.txt").exists()
    finally:
        shutil.rmtree(path.parent)
