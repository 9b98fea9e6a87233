"""Connecting to a PostgreSQL journal: the connection parameters, the URL checks, and the
password rules (never in the URL; TXSEND_PG_PASSWORD or a PGPASSFILE), with the messages
that say why a server refused a connection, without ever showing the password.
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from txsend.errors import ConfigError
from txsend.job.location import redact_url

__all__ = ["connect_kwargs", "refused"]


def connect_kwargs(url: str) -> dict[str, Any]:
    """Check the URL and add the password from TXSEND_PG_PASSWORD (PGPASSFILE: libpq)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"journal URL {redact_url(url)}: {exc}") from None
    if params.get("password"):
        raise ConfigError(
            f"journal URL {redact_url(url)}: a password in the URL ends up in shell history and "
            "process lists",
            hint="put it in TXSEND_PG_PASSWORD or a PGPASSFILE, and leave it out of the URL",
        )
    # Statements are prepared at their first use and planned once per connection
    # (plan_cache_mode = force_generic_plan, added to any `options` in the URL): planning a
    # batched write each time cost more than running it. Left to choose, PostgreSQL would
    # keep planning them, its generic estimate for an array of keys being ten rows. They
    # are written so that their generic plan is a primary-key look-up per key, and the
    # claims' a walk of the free rows' index (`txsend.journal.postgres.claims`); an ingest
    # leaves the statistics those plans need (`txsend.journal.postgres.ingest`).
    # autocommit: a single statement is its own transaction (one round trip, no BEGIN and
    # COMMIT); statements that must commit together run in `conn.transaction()`.
    kwargs: dict[str, Any] = {
        "application_name": "txsend",
        "connect_timeout": 10,
        "prepare_threshold": 1,
        "autocommit": True,
        "options": f"{params.get('options', '')} -c plan_cache_mode=force_generic_plan".strip(),
    }
    password = os.environ.get("TXSEND_PG_PASSWORD")
    if password:
        kwargs["password"] = password
    return kwargs


# What the server says when it refuses a connection for good: the connection attempt has
# no SQLSTATE in psycopg 3 (exc.sqlstate is None: libpq keeps only the message), so these
# match the server's (English) messages; anything else (no server, timeout, too many
# connections, starting up) stays temporary.
_AUTH_FAILED = re.compile(r'(\S+) authentication failed for user "([^"]*)"')  # 28P01, 28000
_NO_PASSWORD = re.compile(r"no password supplied")  # libpq: the server asked for one
_NO_ROLE = re.compile(r'role "([^"]*)" does not exist')  # 28000
_NO_DATABASE = re.compile(r'database "([^"]*)" does not exist')  # 3D000
_REJECTED = re.compile(  # 28000 (pg_hba.conf), 42501 (CONNECT privilege), 28000 (NOLOGIN)
    r"no pg_hba\.conf entry for [^\n]*|pg_hba\.conf rejects connection[^\n]*"
    r'|permission denied for database "[^"]*"|role "[^"]*" is not permitted to log in'
)


def refused(url: str, exc: psycopg.Error) -> ConfigError | None:
    """A ConfigError (78) when the server refused the connection for good, else None.

    The message names the database user and where the password came from, never the
    password itself.
    """
    message = str(exc)
    where = redact_url(url)
    user = _user(url, exc)
    auth = _AUTH_FAILED.search(message)
    if auth is not None and auth.group(1).lower() == "password":
        source = _password_source(url, given=True)
        return ConfigError(
            f"the journal database {where} refused the password of user "
            f'"{auth.group(2)}" ({source})',
            hint="correct the password in TXSEND_PG_PASSWORD or the PGPASSFILE, or the user "
            "in the URL",
        )
    if auth is not None:
        return ConfigError(
            f'the journal database {where} refused user "{auth.group(2)}": '
            f"{auth.group(1)} authentication failed",
            hint="check the user in the URL and the server's pg_hba.conf",
        )
    if _NO_PASSWORD.search(message):
        return ConfigError(
            f'the journal database {where} asks user "{user}" for a password, and '
            f"{_password_source(url, given=False)}",
            hint="set TXSEND_PG_PASSWORD, or add the server to a PGPASSFILE",
        )
    role = _NO_ROLE.search(message)
    if role is not None:
        return ConfigError(
            f'the journal database {where} has no user "{role.group(1)}" (role does not exist)',
            hint="correct the user in the URL, or create the role on the server",
        )
    database = _NO_DATABASE.search(message)
    if database is not None:
        return ConfigError(
            f'the journal database {where} cannot be opened as user "{user}": '
            f'database "{database.group(1)}" does not exist',
            hint=f"correct the database name in the URL, or create it: createdb -O {user} "
            f"{database.group(1)}",
        )
    rejected = _REJECTED.search(message)
    if rejected is not None:
        return ConfigError(
            f'the journal database {where} refused user "{user}": {rejected.group(0)}',
            hint="check the user and database in the URL, and the server's pg_hba.conf",
        )
    return None


def _user(url: str, exc: psycopg.Error) -> str:
    """The database user of the failed connection attempt (as libpq resolved it)."""
    pgconn = getattr(exc, "pgconn", None)
    user = getattr(pgconn, "user", None)
    if user:
        return bytes(user).decode("utf-8", "replace")
    try:
        named = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError:
        named = None
    if named:
        return str(named)
    try:
        return os.environ.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):
        return "(unknown)"


def _password_source(url: str, *, given: bool) -> str:
    """Where the password of a refused connection came from (given: one was sent)."""
    if given and os.environ.get("TXSEND_PG_PASSWORD"):
        return "the password came from TXSEND_PG_PASSWORD"
    if given and os.environ.get("PGPASSWORD"):
        return "the password came from PGPASSWORD"
    try:
        named = conninfo_to_dict(url).get("passfile")
    except psycopg.ProgrammingError:
        named = None
    explicit = str(named) if named else os.environ.get("PGPASSFILE")
    path = Path(explicit or "~/.pgpass").expanduser()
    label = "PGPASSFILE" if explicit else "libpq's default PGPASSFILE"
    if path.is_file():
        if given:
            return f"the password came from the {label} {path}"
        return f"no password was given: the {label} {path} has no entry for this server and user"
    if explicit:
        return f"no password was given: the PGPASSFILE {path} does not exist"
    if given:  # from somewhere else libpq looks (a service file?)
        return "the password came from libpq's settings, not TXSEND_PG_PASSWORD or a PGPASSFILE"
    return "no password was given (neither TXSEND_PG_PASSWORD nor a PGPASSFILE)"
