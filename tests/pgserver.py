"""A throwaway PostgreSQL server for the tests: initdb into a temp folder, socket only.

Debian's `postgresql` package puts its programs in /usr/lib/postgresql/<version>/bin.
PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to the
`postgres` user and its programs run through `runuser`. The server listens on a Unix
socket in the temp folder only (no TCP port), with trust authentication for that socket,
except for the members of the role `txsend_password_auth` (see `password_role`): they must
give their password (scram-sha-256), so that the tests can see a wrong one refused.

Where no PostgreSQL programs exist the tests that need one skip, with the reason; when
CI=true a skip would hide a missing install step, so it fails instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

INSTALL_HINT = "install Debian's postgresql package (apt-get install postgresql)"
PASSWORD_GROUP = "txsend_password_auth"  # its members log in with a password only


def pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    found = [shutil.which(name) for name in ("initdb", "pg_ctl")]
    if found[0] is not None and found[1] is not None:
        return Path(os.path.realpath(found[0])).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def unavailable(reason: str) -> None:
    """Skip the test, or fail it on CI, where a skip would hide a missing install step."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run on CI: {reason}; {INSTALL_HINT} in .ci/run")
    pytest.skip(f"PostgreSQL tests need a server: {reason}; {INSTALL_HINT}")


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a fresh cluster; yield a postgresql:// URL for its `txsend` database."""
    bindir = pg_bindir()
    if bindir is None:
        unavailable("initdb and pg_ctl were not found")
        raise AssertionError  # unreachable: skip or fail raised
    psycopg = pytest.importorskip("psycopg", reason="the postgresql extra is not installed")
    as_root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="txsend-pg-"))
    data, sockets = folder / "data", folder / "run"
    sockets.mkdir()
    prefix: list[str] = []
    if as_root:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
        folder.chmod(0o755)

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr or done.stdout}")

    # fsync off: the tests kill txsend processes, never the database server
    options = (
        f"-c listen_addresses='' -c unix_socket_directories='{sockets}' "
        "-c fsync=off -c synchronous_commit=on -c full_page_writes=off "
        "-c max_connections=100 -c shared_buffers=64MB"
    )
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        hba = data / "pg_hba.conf"  # the first line that matches a connection decides
        hba.write_text(
            f"local all +{PASSWORD_GROUP} scram-sha-256\n" + hba.read_text(), encoding="utf-8"
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(str(exc))
    try:
        with psycopg.connect(
            f"postgresql://postgres@/postgres?host={sockets}", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE txsend")
            conn.execute(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
        yield f"postgresql://postgres@/txsend?host={sockets}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """A new, empty database on the server of url; returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


def password_role(url: str, name: str, password: str) -> str:
    """A login role that must give `password` (scram-sha-256), owning the database of url
    (so that it may create the journal's tables); returns url as that role."""
    import psycopg
    from psycopg import sql

    role = sql.Identifier(name)
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(PASSWORD_GROUP), role))
        database = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), role)
        )
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{name}@{rest.split('@', 1)[1]}"
