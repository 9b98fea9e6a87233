"""A throwaway Postfix for the tests: its own configuration, queue and Maildir, loopback only.

It plays a relay that accepted a message and learns later that it cannot be delivered, so
that the bounces the tests read are Postfix's own DSNs (bounce(8), RFC 3464), not samples:

- ``nowhere.example``: relayed (smtp(8)) to a second smtpd of the same instance, a stand-in
  remote MX greeting as ``mx.nowhere.example``, which refuses every recipient at RCPT with
  ``550 5.1.1 ... User unknown``; the relay then bounces the message to its envelope sender.
- ``slow.example``: relayed to a loopback port that refuses connections (a socket bound but
  not listening, held by the fixture), so the message stays deferred; with a one-second
  ``delay_warning_time`` the relay sends a "delayed" DSN at the next queue run.
- ``acme.example``: any local part (``bounces+<token>`` too) is delivered by virtual(8) into
  one Maildir, ``maildir``, with ``Delivered-To`` and ``X-Original-To`` headers.

Postfix wants its queue folder (and the folders above it) owned by root and writable by no
one else, and virtual(8) writes the Maildir as ``nobody``; pytest's ``tmp_path`` is private
to root and its path long for Unix sockets, so the instance lives in a short folder of its
own under /tmp (0755, root), removed at the end. No DNS, no port 25, no pickup of system
mail. Needs root (the master runs as root) and Debian's postfix package; without them the
tests skip with the reason, and with CI=true they fail instead, since a skip would hide a
missing install step.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = "install Debian's postfix package (sh bench/ensure-smtp-sink.sh as root)"
POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
START_TIMEOUT = 15.0  # seconds for the master and the smtpd port to come up
STOP_TIMEOUT = 15.0


def unavailable(reason: str) -> None:
    """Skip the test, or fail it on CI, where a skip would hide a missing install step."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Postfix tests cannot run on CI: {reason}; {INSTALL_HINT} in .ci/run")
    pytest.skip(f"Postfix tests need Postfix: {reason}; {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    """Poll ``condition()`` every 50 ms until it is true; AssertionError (with the log's
    tail) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n--- maillog (tail) ---\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-40:]
                )
            raise AssertionError(f"{what}: not done after {timeout:g} s{tail}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:port (read from /proc/net/tcp, without
    connecting, so that the server logs no aborted session)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in lines)


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie left for an init that does not reap is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class PostfixInstance:
    """A running instance: where it listens, where it delivers, how to nudge it."""

    folder: Path
    port: int  # the relay's smtpd, 127.0.0.1
    mx_port: int  # the stand-in MX of nowhere.example, refusing every recipient
    dead_port: int  # where slow.example is relayed: bound, not listening
    maildir: Path  # acme.example's Maildir (new/, cur/, tmp/)
    config_directory: Path
    queue_directory: Path
    log_path: Path
    _held: list[socket.socket] = field(default_factory=list, repr=False)

    def messages(self) -> list[Path]:
        """The files in maildir/new, oldest name first."""
        return sorted((self.maildir / "new").iterdir())

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait until maildir/new holds at least ``count`` files; return them."""
        wait_until(
            lambda: len(list((self.maildir / "new").iterdir())) >= count,
            timeout,
            f"{count} message(s) in {self.maildir / 'new'}",
            self.log_path,
        )
        return self.messages()

    def flush(self) -> None:
        """Ask the queue manager to attempt every queued message now (postqueue -f)."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.config_directory), "-f"],
            capture_output=True,
            check=True,
            timeout=10,
        )

    def queue(self) -> str:
        """The queue listing (postqueue -p), for diagnostics."""
        done = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_directory), "-p"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return done.stdout + done.stderr

    def log(self) -> str:
        """The instance's maillog so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _main_cf(folder: Path, port: int, mx_port: int, dead_port: int, uid: int, gid: int) -> str:
    etc = folder / "etc"
    return f"""\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {folder / "queue"}
data_directory = {folder / "data"}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-txsend-test
maillog_file = {folder / "maillog"}
maillog_file_prefixes = {folder}
myhostname = relay.txsend.test
mydomain = txsend.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains = nowhere.example, slow.example
smtp_dns_support_level = disabled
smtp_bind_address = 127.0.0.1
smtp_connect_timeout = 5s
smtp_tls_security_level = none
smtpd_tls_security_level = none
transport_maps = inline:{{ nowhere.example=smtp:[127.0.0.1]:{mx_port},
    slow.example=smtp:[127.0.0.1]:{dead_port} }}
recipient_delimiter = +
virtual_mailbox_domains = acme.example
virtual_mailbox_base = {folder / "mail"}
virtual_mailbox_maps = regexp:{etc / "virtual_mailboxes"}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
mx_recipient_restrictions = check_recipient_access regexp:{etc / "unknown_users"}
# a deferred message warns after a second, and the queue is scanned every second
delay_warning_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
bounce_queue_lifetime = 1d
maximal_queue_lifetime = 1d
notify_classes =
biff = no
smtputf8_enable = no
"""


def _master_cf(port: int, mx_port: int) -> str:
    # no pickup (no mail from the system's maildrop), no port 25, nothing chrooted
    return f"""\
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{mx_port} inet n - n - - smtpd
    -o myhostname=mx.nowhere.example
    -o smtpd_recipient_restrictions=$mx_recipient_restrictions
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 1 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@contextmanager
def postfix_instance() -> Iterator[PostfixInstance]:
    """Start a Postfix of its own (see the module docstring); stop it and remove its folder
    at the end, whatever happened."""
    if not Path(POSTFIX).exists() or not Path("/usr/lib/postfix/sbin/master").exists():
        unavailable(f"{POSTFIX} or its daemons were not found")
    if os.geteuid() != 0:
        unavailable("the Postfix master must be started as root")
    try:
        nobody = pwd.getpwnam("nobody")
        pwd.getpwnam("postfix")
    except KeyError as exc:
        unavailable(f"a system user is missing: {exc}")
        raise AssertionError from exc  # unreachable: skip or fail raised
    folder = Path(tempfile.mkdtemp(prefix="txpf-", dir="/tmp"))
    folder.chmod(0o755)
    etc, maildir = folder / "etc", folder / "mail" / "acme"
    for sub in (etc, folder / "data", folder / "queue"):
        sub.mkdir()
    (folder / "mail").mkdir()
    for sub in ("", "new", "cur", "tmp"):
        (maildir / sub).mkdir(exist_ok=True)
        os.chown(maildir / sub, nobody.pw_uid, nobody.pw_gid)
    shutil.chown(folder / "data", "postfix")
    dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    instance = PostfixInstance(
        folder=folder,
        port=free_port(),
        mx_port=free_port(),
        dead_port=dead.getsockname()[1],
        maildir=maildir,
        config_directory=etc,
        queue_directory=folder / "queue",
        log_path=folder / "maillog",
        _held=[dead],
    )
    (etc / "main.cf").write_text(
        _main_cf(
            folder,
            instance.port,
            instance.mx_port,
            instance.dead_port,
            nobody.pw_uid,
            nobody.pw_gid,
        )
    )
    (etc / "master.cf").write_text(_master_cf(instance.port, instance.mx_port))
    (etc / "virtual_mailboxes").write_text("/@acme\\.example$/ acme/\n")
    (etc / "unknown_users").write_text("/@nowhere\\.example$/ 550 5.1.1 User unknown\n")
    try:
        done = subprocess.run(
            [POSTFIX, "-c", str(etc), "start"],
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr or done.stdout}")
        wait_until(
            lambda: listening(instance.port) and listening(instance.mx_port),
            START_TIMEOUT,
            f"Postfix listening on 127.0.0.1:{instance.port}",
            instance.log_path,
        )
        yield instance
    finally:
        try:
            _stop(instance)
        finally:
            dead.close()
            shutil.rmtree(folder, ignore_errors=True)


def _master_pid(instance: PostfixInstance) -> int | None:
    try:
        return int((instance.queue_directory / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(instance: PostfixInstance) -> None:
    """postfix stop, then wait for the master to be gone (kill it if it lingers)."""
    pid = _master_pid(instance)
    subprocess.run(
        [POSTFIX, "-c", str(instance.config_directory), "stop"],
        capture_output=True,
        check=False,
        timeout=STOP_TIMEOUT,
    )
    if pid is None:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
