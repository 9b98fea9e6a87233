"""A throwaway Dovecot IMAP server for the tests: its own config, a test CA, loopback only.

``dovecot -c FILE`` with every folder of its own (base_dir, state_dir, the log and the
mail) in a short private folder under /tmp, listening on 127.0.0.1 only: one port with
implicit TLS (imaps, as 993) and one plain port where STARTTLS is offered. ``ssl =
required`` refuses a login without TLS, except that Dovecot counts a connection whose two
ends have the same address (127.0.0.1 to 127.0.0.1) as secured: the client's own refusal
is what keeps a password off a plain connection, and the log line of each login says
``TLS`` or ``secured``, which a test reads to see that STARTTLS really happened
(``logins``). The server's certificate, for 127.0.0.1 and
localhost, is issued by a CA made for the test with the `cryptography` package; a client
trusts it through ``ca_file``. One user (passwd-file) with a known password; the mail is
a Maildir per user written as ``nobody`` (a static userdb), which a test fills by IMAP
APPEND or by dropping a file (``drop``).

Dovecot's master must start as root; without root or without Debian's dovecot-imapd the
tests skip with the reason, and with CI=true they fail instead, since a skip would hide a
missing install step.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.postfix import free_port, listening, process_alive, wait_until

INSTALL_HINT = "install Debian's dovecot-imapd package (sh bench/ensure-dovecot.sh as root)"
DOVECOT = "/usr/sbin/dovecot"
USER = "bounces"
PASSWORD = "correct horse battery staple"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def unavailable(reason: str) -> None:
    """Skip the test, or fail it on CI, where a skip would hide a missing install step."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Dovecot tests cannot run on CI: {reason}; {INSTALL_HINT} in .ci/run")
    pytest.skip(f"Dovecot tests need Dovecot: {reason}; {INSTALL_HINT}")


@dataclass(frozen=True)
class TestCA:
    """A certificate authority made for one test: its certificate (PEM) and key."""

    __test__ = False  # not a test class, whatever its name says to pytest

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def create(cls, name: str = "txsend test CA") -> TestCA:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {uuid.uuid4()}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def issue_server(self, *names: str) -> tuple[bytes, bytes]:
        """A server certificate (PEM) and key (PEM) for host names and IP addresses."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def write(self, path: Path) -> Path:
        """The CA certificate in a PEM file (what a client's ca_file names)."""
        path.write_bytes(self.cert_pem)
        return path


@dataclass(frozen=True)
class DovecotServer:
    """A running server: its ports, its user, its CA and its mail."""

    folder: Path
    imaps_port: int  # implicit TLS
    imap_port: int  # plain, STARTTLS offered, login only after it
    user: str
    password: str
    ca_file: Path  # the test CA's certificate, PEM
    mail_root: Path  # the user's Maildir (INBOX), other folders as .Name inside
    config_file: Path
    log_path: Path

    def url(self, folder: str = "INBOX", *, starttls: bool = False, query: str = "") -> str:
        """An imaps:// (or imap://...?tls=starttls) URL for the user and a folder."""
        if starttls:
            base = f"imap://{self.user}@127.0.0.1:{self.imap_port}/{folder}?tls=starttls"
        else:
            base = f"imaps://{self.user}@127.0.0.1:{self.imaps_port}/{folder}"
        if query:
            base += ("&" if "?" in base else "?") + query
        return base

    def drop(self, raw: bytes, folder: str = "INBOX") -> Path:
        """Put one message straight into a folder's Maildir new/ (owned by the mail user)."""
        target = self.mail_root if folder == "INBOX" else self.mail_root / f".{folder}"
        nobody = pwd.getpwnam("nobody")
        for sub in ("", "new", "cur", "tmp"):
            (target / sub).mkdir(exist_ok=True)
            os.chown(target / sub, nobody.pw_uid, nobody.pw_gid)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.txsend-test"
        tmp = target / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        final = target / "new" / name
        tmp.rename(final)
        return final

    def logins(self) -> list[str]:
        """The log lines of the logins so far ("... method=PLAIN, ..., TLS, session=...")."""
        return [line for line in self.log().splitlines() if "imap-login: Info: Login:" in line]

    def sessions(self) -> list[str]:
        """The log lines of the IMAP sessions ended so far ("Disconnected: Logged out in=...
        out=... deleted=N expunged=N ..."): how many messages each flagged and expunged."""
        return [line for line in self.log().splitlines() if ": Info: Disconnected:" in line]

    def log(self) -> str:
        """The server's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _config(
    folder: Path, imap_port: int, imaps_port: int, uid: int, gid: int, capability: str | None
) -> str:
    override = f"imap_capability = {capability}\n" if capability else ""
    return (
        override
        + f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {folder / "run"}
state_dir = {folder / "state"}
log_path = {folder / "dovecot.log"}
info_log_path = {folder / "dovecot.log"}
default_internal_user = dovecot
default_login_user = dovenull
ssl = required
ssl_cert = <{folder / "server.pem"}
ssl_key = <{folder / "server.key"}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{folder / "mail"}/%u
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder / "passwd"}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={folder / "home"}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
    )


@contextmanager
def dovecot_server(imap_capability: str | None = None) -> Iterator[DovecotServer]:
    """Start a Dovecot of its own (see the module docstring); stop it and remove its folder
    at the end, whatever happened. ``imap_capability`` replaces what the server announces
    after login (say, without MOVE or UIDPLUS, to exercise a client's fallbacks)."""
    if not Path(DOVECOT).exists() or not Path("/usr/lib/dovecot/imap").exists():
        unavailable(f"{DOVECOT} or its imap program were not found")
    if os.geteuid() != 0:
        unavailable("the Dovecot master must be started as root")
    try:
        nobody = pwd.getpwnam("nobody")
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError as exc:
        unavailable(f"a system user is missing: {exc}")
        raise AssertionError from exc  # unreachable: skip or fail raised
    folder = Path(tempfile.mkdtemp(prefix="txdc-", dir="/tmp"))
    folder.chmod(0o755)
    for sub in ("run", "state", "mail", "home"):
        (folder / sub).mkdir()
    for sub in ("mail", "home"):
        os.chown(folder / sub, nobody.pw_uid, nobody.pw_gid)
    ca = TestCA.create()
    cert, key = ca.issue_server("localhost", "127.0.0.1")
    (folder / "server.pem").write_bytes(cert)
    key_file = folder / "server.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    (folder / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    server = DovecotServer(
        folder=folder,
        imaps_port=free_port(),
        imap_port=free_port(),
        user=USER,
        password=PASSWORD,
        ca_file=ca.write(folder / "ca.pem"),
        mail_root=folder / "mail" / USER,
        config_file=folder / "dovecot.conf",
        log_path=folder / "dovecot.log",
    )
    server.config_file.write_text(
        _config(
            folder,
            server.imap_port,
            server.imaps_port,
            nobody.pw_uid,
            nobody.pw_gid,
            imap_capability,
        )
    )
    try:
        # the daemon keeps the descriptors it was given: a file, not a pipe to wait on
        with open(folder / "start.err", "w+b") as errors:
            code = subprocess.call(
                [DOVECOT, "-c", str(server.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
                timeout=START_TIMEOUT,
            )
            errors.seek(0)
            if code != 0:
                raise RuntimeError(f"dovecot failed to start: {errors.read().decode()}")
        wait_until(
            lambda: listening(server.imap_port) and listening(server.imaps_port),
            START_TIMEOUT,
            f"Dovecot listening on 127.0.0.1:{server.imap_port} and :{server.imaps_port}",
            server.log_path,
        )
        yield server
    finally:
        try:
            _stop(server)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[1]
            except (OSError, IndexError):
                continue
            if parent == str(pid):
                found.append(int(entry.name))
    return found


def _stop(server: DovecotServer) -> None:
    """Kill the master and wait until it and its children are gone.

    SIGKILL, not SIGTERM: Dovecot's orderly shutdown waits a second on its own timer, and a
    throwaway server has nothing to save; its children (log, auth, imap-login, imap...)
    exit as soon as the master's pipe closes, and the ones left are killed by their pid."""
    try:
        pid = int((server.folder / "run" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not process_alive(pid):
        return
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(process_alive(p) for p in [pid, *children]):
        time.sleep(0.02)
    for child in children:
        if process_alive(child):
            os.kill(child, signal.SIGKILL)
