"""What a relay's TLS certificates say, for `txsend check`: subject, issuer, names and
validity of each certificate the relay presented, read from DER with `cryptography`.

Python 3.11's ssl module parses the peer's certificate only once it verified, and gives
only the leaf; the chain comes from `SSLObject.get_unverified_chain` where it exists
(Python 3.13 and later).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

__all__ = [
    "CertificateInfo",
    "describe",
    "describe_all",
    "peer_certificates",
    "verify_problem",
]

# OpenSSL's X509_V_ERR_* codes for the reasons a user meets most, by kind
_VERIFY_KINDS = {
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    18: "unknown_ca",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    62: "wrong_host_name",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "wrong_host_name",  # X509_V_ERR_IP_ADDRESS_MISMATCH
}


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate as a person checks it."""

    subject: str  # RFC 4514, e.g. CN=mail.example.com,O=Example
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    serial: str  # hexadecimal
    sha256: str  # fingerprint of the DER, hexadecimal

    def days_left(self, now: datetime) -> int:
        """Whole days until not_after, counted toward zero (negative once expired)."""
        return int((self.not_after - now).total_seconds() / 86400)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The certificate as JSON values, with its days left at `now`."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left(now),
            "expired": self.not_after <= now,
            "serial": self.serial,
            "sha256": self.sha256,
        }


def describe(der: bytes) -> CertificateInfo:
    """A DER certificate described; ValueError when it cannot be parsed."""
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(names.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in names.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=format(cert.serial_number, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
    )


def peer_certificates(ssl_object: ssl.SSLObject) -> tuple[list[bytes], bool]:
    """The DER certificates the peer presented, leaf first, and whether that is the whole
    chain it sent (False on Python before 3.13: the leaf only)."""
    chain = getattr(ssl_object, "get_unverified_chain", None)
    if chain is not None:
        return [_der(item) for item in chain()], True
    leaf = ssl_object.getpeercert(binary_form=True)
    return ([leaf] if leaf else []), False


def _der(item: Any) -> bytes:
    # Python 3.13 gives DER bytes; should a release give _ssl.Certificate objects instead
    # (as the private method behind it does), they are asked for DER (OpenSSL's ASN1, 2).
    if isinstance(item, bytes):
        return item
    return bytes(item.public_bytes(getattr(ssl, "ENCODING_DER", 2)))


def verify_problem(exc: ssl.SSLCertVerificationError) -> tuple[str, str]:
    """Why a certificate did not verify: a kind (wrong_host_name, expired, not_yet_valid,
    unknown_ca or other) and OpenSSL's own words."""
    code = exc.verify_code
    message = exc.verify_message or exc.reason or str(exc)
    return _VERIFY_KINDS.get(code, "other") if isinstance(code, int) else "other", message


def describe_all(ders: Sequence[bytes], now: datetime) -> list[dict[str, Any]]:
    """Each certificate as JSON values; one that cannot be parsed says so."""
    described: list[dict[str, Any]] = []
    for der in ders:
        try:
            described.append(describe(der).to_json(now))
        except ValueError as exc:
            described.append({"error": f"cannot parse this certificate: {exc}"})
    return described
