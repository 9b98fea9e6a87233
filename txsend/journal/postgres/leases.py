"""Leases: how several workers on one job know who is alive, and who owns which rows.

Each process holds a lease row in `txsend_workers` with a unique epoch (the fencing
token), renewed by a heartbeat thread every `lease / 4` seconds (at most every
`ABORT_POLL`). Every state write names the epoch and is refused unless the lease is
still live (`LEASE_HOLDS`) and the row still belongs to it. The heartbeat also reaps
expired leases: their claimed rows become free again, their `sending` rows become
`unknown` (never resent automatically: SMTP has no idempotency key). A worker whose last
renewal is older than `DATA_MARGIN` of its lease starts no DATA on its own
(`may_start_data`), so a paused process cannot race the reaper.

The heartbeat also reads the job's abort flag, so that an error-rate abort by any worker
stops every other within `ABORT_POLL` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import psycopg

from txsend.errors import TemporaryError
from txsend.journal.postgres.database import Database
from txsend.journal.postgres.schema import NOW
from txsend.journal.rules import ENDED_IN_DATA
from txsend.logs import event
from txsend.models import State

__all__ = [
    "ABORT_POLL",
    "BUSY_CACHE",
    "DATA_MARGIN",
    "DEFAULT_LEASE",
    "LEASE_HOLDS",
    "Lease",
    "workers",
]

DEFAULT_LEASE = 30.0  # seconds a worker may stay silent before its rows are reaped
DATA_MARGIN = 0.6  # no new DATA once the last renewal is older than this share of the lease
ABORT_POLL = 1.0  # seconds between reads of the job's abort flag (the 2 s promise)
BUSY_CACHE = 0.25  # seconds an others_busy() answer is reused (the engine asks every 0.2 s)

# The fencing condition of a write: true while the lease of epoch %(epoch)s is live.
LEASE_HOLDS = (
    "EXISTS (SELECT 1 FROM txsend_workers w WHERE w.epoch = %(epoch)s "
    f"AND w.state = 'active' AND w.expires_at > {NOW})"
)


class Lease:
    """This process's lease on a job: its epoch, its heartbeat, and what the beats learn."""

    def __init__(self, db: Database, seconds: float) -> None:
        self._db = db
        self.seconds = seconds
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None  # the fencing token once joined
        self._job: str | None = None  # the job joined
        self._renewed_at = 0.0  # monotonic time the last successful renewal was sent
        self._lost: str | None = None  # why the lease is gone
        self._aborted: str | None = None  # another worker's abort reason
        self._stop = threading.Event()
        self._flags = threading.Lock()  # orders the heartbeat's reads with clear_abort
        self._heartbeat: threading.Thread | None = None
        self._busy_checked = (float("-inf"), False)  # (monotonic time, others_busy answer)

    @property
    def lost(self) -> bool:
        """True once the lease expired and its rows were handed to the others."""
        return self._lost is not None

    def join(self, job: str) -> None:
        """Take a lease on the job and start renewing it (before claiming); once."""
        if self.epoch is not None:
            return
        with self._db.connection() as conn:
            sent = time.monotonic()
            row = conn.execute(
                "INSERT INTO txsend_workers(epoch, worker, job, host, pid, started_at, "
                f"renewed_at, expires_at, state) VALUES (nextval('txsend_lease_epoch'), "
                f"%s, %s, %s, %s, {NOW}, {NOW}, {NOW} + %s, 'active') RETURNING epoch, "
                "(SELECT abort_reason FROM txsend_jobs WHERE name = %s)",
                (self.worker, job, socket.gethostname(), os.getpid(), self.seconds, job),
            ).fetchone()
        assert row is not None
        self.epoch = int(row[0])
        self._job = job
        self._aborted = row[1]
        self._renewed_at = sent
        self._heartbeat = threading.Thread(
            target=self._beat, args=(job,), name="txsend-lease", daemon=True
        )
        self._heartbeat.start()

    def _beat(self, job: str) -> None:
        interval = min(self.seconds / 4.0, ABORT_POLL)
        while not self._stop.wait(interval):
            try:
                self._renew()
                self.reap(job)
            except (psycopg.Error, TemporaryError) as exc:
                # a database that cannot be reached: may_start_data() turns False as the
                # lease ages, and the run stops when the lease is lost
                event(logging.WARNING, "lease_renewal_failed", f"lease renewal failed: {exc}")

    def _renew(self) -> None:
        with self._flags:
            with self._db.connection() as conn:
                sent = time.monotonic()
                row = conn.execute(
                    f"UPDATE txsend_workers SET renewed_at = {NOW}, expires_at = {NOW} + %s "
                    f"WHERE epoch = %s AND state = 'active' AND expires_at > {NOW} "
                    "RETURNING (SELECT abort_reason FROM txsend_jobs WHERE name = %s)",
                    (self.seconds, self.epoch, self._job),
                ).fetchone()
            if row is None:
                self._lose()
                return
            self._renewed_at = sent
            self._aborted = row[0]

    def _lose(self) -> None:
        self._lost = (
            f"this worker's lease ({self.seconds:g} s) expired and its rows were handed "
            "to the others"
        )
        event(logging.ERROR, "lease_lost", self._lost, worker=self.worker, epoch=self.epoch)
        self._stop.set()

    def reap(self, job: str) -> int:
        """Free the rows of workers whose lease expired; their `sending` rows → `unknown`.

        Returns how many rows became `unknown`.
        """
        now = time.time()
        with self._db.connection() as conn, conn.transaction():
            dead = conn.execute(
                "UPDATE txsend_workers SET state = 'reaped' "
                f"WHERE job = %s AND state = 'active' AND expires_at < {NOW} "
                "RETURNING epoch, worker",
                (job,),
            ).fetchall()
            if not dead:
                return 0
            params = {
                "job": job,
                "now": now,
                "epochs": [epoch for epoch, _ in dead],
                "workers": [worker for _, worker in dead],
            }
            unknown = conn.execute(
                "UPDATE txsend_messages m SET state = 'unknown', owner = NULL, "
                "owner_epoch = NULL, updated_at = %(now)s, reply = 'worker ' || d.worker || "
                "' stopped renewing its lease after DATA started, before the reply was "
                "recorded' FROM unnest(%(epochs)s::bigint[], %(workers)s::text[]) "
                "AS d(epoch, worker) WHERE m.job = %(job)s AND m.owner_epoch = d.epoch "
                "AND m.state = 'sending'",
                params,
            ).rowcount
            freed = conn.execute(
                "UPDATE txsend_messages SET owner = NULL, owner_epoch = NULL "
                "WHERE job = %(job)s AND owner_epoch = ANY(%(epochs)s::bigint[])",
                params,
            ).rowcount
        event(
            logging.WARNING,
            "reaped",
            f"{len(dead)} workers lost their lease: {freed} claimed rows freed, "
            f"{unknown} rows in DATA made unknown",
            workers=params["workers"],
            freed=freed,
            unknown=unknown,
        )
        return int(unknown)

    def release_own(self) -> int:
        """At the end of a run: this worker's claimed rows go back; `sending` → `unknown`."""
        if self.epoch is None:
            return 0
        now = time.time()
        with self._db.connection() as conn:
            cur = conn.execute(
                "UPDATE txsend_messages SET owner = NULL, owner_epoch = NULL, updated_at = %s, "
                "state = CASE WHEN state = 'sending' THEN 'unknown' ELSE state END, "
                f"reply = CASE WHEN state = 'sending' THEN '{ENDED_IN_DATA}' ELSE reply END "
                "WHERE job = %s AND owner_epoch = %s RETURNING state",
                (now, self._job, self.epoch),
            )
            return sum(1 for (state,) in cur.fetchall() if state == State.UNKNOWN.value)

    def may_start_data(self) -> bool:
        """False once this worker cannot be sure its lease still holds."""
        if self._lost is not None:
            return False
        return time.monotonic() - self._renewed_at < self.seconds * DATA_MARGIN

    def stop_requested(self) -> str | None:
        """Why this worker lost its lease, or why another worker stopped the job; else None."""
        if self._lost is not None:
            return self._lost
        if self._aborted is not None:
            return f"another worker stopped the job: {self._aborted}"
        return None

    def others_busy(self, job: str) -> bool:
        """True while other workers' live leases hold rows of the job (claimed or in DATA).

        Asked of the database when the engine finds nothing to claim (a worker that just
        joined must not take "no free row" for "done" while the others still work), and
        answered again from that reading for BUSY_CACHE seconds. Rows held by a lease that
        expired are reaped here, as the heartbeat would: they are free to claim now (True,
        so the caller looks again), and keep no worker waiting after that.
        """
        at, busy = self._busy_checked
        now = time.monotonic()
        if now - at < BUSY_CACHE:
            return busy
        held = (
            "EXISTS (SELECT 1 FROM txsend_workers w JOIN txsend_messages m "
            "ON m.owner_epoch = w.epoch AND m.job = w.job WHERE w.job = %(job)s "
            "AND w.state = 'active' AND w.epoch IS DISTINCT FROM %(epoch)s "
            f"AND w.expires_at {{}} {NOW})"
        )
        row = self._db.one(
            f"SELECT {held.format('>')}, {held.format('<=')}",
            {"job": job, "epoch": self.epoch},
        )
        live, expired = (bool(row[0]), bool(row[1])) if row else (False, False)
        if expired:
            self.reap(job)  # their claimed rows are free again: the caller looks again
            self._busy_checked = (float("-inf"), False)  # and asks afresh next time
            return True
        self._busy_checked = (now, live)
        return live

    def abort(self, job: str, reason: str) -> None:
        """Tell every worker of the job to stop claiming; the first reason stays."""
        with self._db.connection() as conn:
            conn.execute(
                "UPDATE txsend_jobs SET abort_reason = %s WHERE name = %s AND abort_reason IS NULL",
                (f"{reason} (worker {self.worker})", job),
            )

    def clear_abort(self, job: str) -> None:
        """`txsend resume`: the job may be worked again."""
        with self._flags, self._db.connection() as conn:
            conn.execute("UPDATE txsend_jobs SET abort_reason = NULL WHERE name = %s", (job,))
            self._aborted = None

    def end(self) -> None:
        """Stop renewing and give the lease up, its rows going back (unless it was lost)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self.epoch is None or self._lost is not None:
            return
        try:
            self.release_own()
            with self._db.connection() as conn:
                conn.execute(
                    "UPDATE txsend_workers SET state = 'stopped' WHERE epoch = %s", (self.epoch,)
                )
        except (psycopg.Error, TemporaryError):
            pass  # the lease expires and the others reap it


def workers(db: Database, job: str, stopped: int = 5) -> list[dict[str, Any]]:
    """The job's live leases, then the last `stopped` others, newest first."""
    rows = db.all(
        "SELECT w.worker, w.host, w.pid, CASE WHEN w.state = 'active' AND w.expires_at < "
        f"{NOW} THEN 'expired' ELSE w.state END, w.started_at, w.renewed_at, "
        "count(m.key) FILTER (WHERE m.state <> 'sending'), "
        "count(m.key) FILTER (WHERE m.state = 'sending') "
        "FROM txsend_workers w LEFT JOIN txsend_messages m ON m.job = w.job "
        "AND m.owner_epoch = w.epoch WHERE w.job = %s GROUP BY w.epoch "
        "ORDER BY w.state = 'active' DESC, w.epoch DESC",
        (job,),
    )
    live = [r for r in rows if r[3] in ("active", "expired")]
    ended = [r for r in rows if r[3] not in ("active", "expired")][:stopped]
    return [
        {
            "worker": worker,
            "host": host,
            "pid": pid,
            "state": state,
            "started_at": started,
            "renewed_at": renewed,
            "rows_claimed": int(claimed),
            "rows_in_data": int(in_data),
        }
        for worker, host, pid, state, started, renewed, claimed, in_data in live + ended
    ]
