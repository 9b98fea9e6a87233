"""DKIM-sign rendered messages (RFC 6376) with dkimpy: rsa-sha256 or ed25519-sha256.

`DkimSigner.sign` is on the hot path, once per message: the key file is read, decoded,
type- and size-checked once in `DkimSigner.__init__`, which also signs and verifies a
probe message, so a damaged key stops the job before the first send instead of
producing thousands of signatures that fail. Per message there is one dkimpy call.

dkimpy's public API takes the key in its encoded form only (PEM for RSA, the base64
seed for Ed25519) and decodes it on every call, and it signs RSA in pure Python (about
9 ms per signature with a 2048-bit key). Both are taken over at one narrow point:
`_install_openssl_rsa` wraps dkimpy's `RSASSA_PKCS1_v1_5_sign` so that a key this module
loaded is signed by OpenSSL through `cryptography` (about 0.8 ms), and caches the key
decoding. PKCS#1 v1.5 signatures are deterministic, so the bytes are the same either
way (a test compares them); every other key and algorithm goes through dkimpy as is.

What a signature holds: c=relaxed/relaxed; h= lists every occurrence of the configured
header fields present in the message, plus `from` once more than it occurs, so a From
field added in transit breaks the signature; t= is the signing time (dkimpy always adds
it); there is no x= (expiry) and no l= (body length).

Key files are what `openssl genpkey -algorithm RSA|ED25519` writes (PKCS#8 PEM,
"BEGIN PRIVATE KEY"), a traditional PKCS#1 "BEGIN RSA PRIVATE KEY" file, or for Ed25519
also the bare base64 seed that dkimpy's `dknewkey` writes. Error messages and `repr`
never show key material.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dkim  # type: ignore[import-untyped]
from dkim.crypto import UnparsableKeyError, parse_private_key  # type: ignore[import-untyped]

from txsend.errors import JobError, MissingInputError
from txsend.job.content import FIELD_NAME

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
except ImportError:  # pragma: no cover - cryptography is a dependency; dkimpy still works
    rsa = None  # type: ignore[assignment]

# OpenSSL keys by RSA modulus, for the keys DkimSigner loaded.
_OPENSSL_KEYS: dict[int, Any] = {}
_PURE_RSA_SIGN: Callable[[Any, dict[str, int]], bytes] = dkim.RSASSA_PKCS1_v1_5_sign


def _openssl_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 signing, by OpenSSL for keys loaded here."""
    key = _OPENSSL_KEYS.get(private_key["modulus"])
    if key is None or digest.name != "sha256":
        return _PURE_RSA_SIGN(digest, private_key)
    signed: bytes = key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return signed


def _install_openssl_rsa() -> None:
    """Point dkimpy's RSA signing and PEM decoding at the faster versions, once."""
    if rsa is None or dkim.RSASSA_PKCS1_v1_5_sign is _openssl_rsa_sign:
        return
    dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign
    dkim.parse_pem_private_key = functools.lru_cache(maxsize=16)(dkim.parse_pem_private_key)


RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)

# Signed when present, each occurrence; `from` is always signed, and once more (over-signed).
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "feedback-id",
    "auto-submitted",
    "precedence",
    "in-reply-to",
    "references",
)

MIN_RSA_BITS = 1024  # RFC 8301 section 3.2: MUST NOT sign with less
RECOMMENDED_RSA_BITS = 2048  # RFC 8301 section 3.2: SHOULD use at least

_CANONICALIZE = (b"relaxed", b"relaxed")
_GENERATE = {
    RSA_SHA256: "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {name}",
    ED25519_SHA256: "openssl genpkey -algorithm ED25519 -out {name}",
}
# dkimpy refuses to sign these (RFC 6376 section 5.4.1: they change in transit).
_NEVER_SIGNED = frozenset(x.decode("ascii") for x in dkim.DKIM.SHOULD_NOT)
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_MAX_KEY_FILE = 64 * 1024  # an RSA-16384 PEM is about 12 KB

# DER object identifiers (content bytes) of PKCS#8 AlgorithmIdentifiers.
_OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
_OTHER_KEY_TYPES = {
    bytes.fromhex("2a864886f70d01010a"): "an RSA-PSS key",  # 1.2.840.113549.1.1.10
    bytes.fromhex("2a8648ce3d0201"): "an EC (ECDSA) key",  # 1.2.840.10045.2.1
    bytes.fromhex("2b6571"): "an Ed448 key",  # 1.3.101.113
    bytes.fromhex("2b656e"): "an X25519 key",  # 1.3.101.110
    bytes.fromhex("2b656f"): "an X448 key",  # 1.3.101.111
    bytes.fromhex("2a8648ce380401"): "a DSA key",  # 1.2.840.10040.4.1
}
_KEY_NAMES = {RSA_SHA256: "an RSA key", ED25519_SHA256: "an Ed25519 key"}

_PROBE = b"From: <probe@txsend.invalid>\r\nSubject: probe\r\n\r\nprobe\r\n"


class DkimSigner:
    """Sign messages for one domain and selector with one key; see the module docstring."""

    def __init__(
        self,
        *,
        domain: str,
        selector: str,
        key_file: Path,
        algorithm: str = RSA_SHA256,
        headers: Sequence[str] | None = None,
        source: str = "job.yaml",
    ) -> None:
        self.source = source
        self.key_file = key_file
        if algorithm not in ALGORITHMS:
            raise JobError(
                f"dkim: unknown algorithm {algorithm!r}; use {' or '.join(ALGORITHMS)}",
                file=source,
            )
        self.algorithm = algorithm
        self.domain = _dns_name(domain, "domain", source)
        self.selector = _dns_name(selector, "selector", source)
        self.headers = _signed_headers(headers, source)
        #: Problems worth telling the user that do not stop the job.
        self.warnings: list[str] = []
        #: Where the public key must be published, and the TXT record to publish there.
        self.dns_name = f"{self.selector}._domainkey.{self.domain}"
        self.dns_record = ""

        self._algorithm = algorithm.encode("ascii")
        self._domain = self.domain.encode("ascii")
        self._selector = self.selector.encode("ascii")
        self._signed = frozenset(name.encode("ascii") for name in self.headers)
        # What dkimpy's sign() takes: PEM bytes for RSA, the base64 seed for Ed25519.
        self._key = b""
        self._load_key()
        self._self_test()

    def __repr__(self) -> str:
        return (
            f"DkimSigner(domain={self.domain!r}, selector={self.selector!r}, "
            f"algorithm={self.algorithm!r}, key_file={str(self.key_file)!r})"
        )

    def sign(self, message: bytes) -> bytes:
        """Return the message with a DKIM-Signature header line prepended.

        CRLF line endings in and out; ValueError as for `signature`.
        """
        return self.signature(message) + message

    def signature(self, message: bytes) -> bytes:
        """Return only the DKIM-Signature header field, folded, ending in CRLF.

        ValueError when the message has a bare CR or LF, or a header line dkimpy cannot
        parse: both are bugs in whatever built the message.
        """
        crlf = message.count(b"\r\n")
        if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
            raise ValueError("cannot DKIM-sign a message with a bare CR or LF; use CRLF")
        try:
            signer = dkim.DKIM(message, signature_algorithm=self._algorithm)
            include = [name for name, _value in signer.headers if name.lower() in self._signed]
            include.append(b"from")
            header: bytes = signer.sign(
                self._selector,
                self._domain,
                self._key,
                canonicalize=_CANONICALIZE,
                include_headers=include,
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot DKIM-sign message: {exc}") from None
        return header

    def _error(self, problem: str, hint: str | None = None) -> JobError:
        return JobError(f"dkim: key_file {self.key_file}: {problem}", file=self.source, hint=hint)

    def _generate_hint(self, *, missing: bool = False) -> str:
        """How to make a key; never over the existing file, whose key may be in DNS."""
        name = self.key_file.name if missing else f"dkim-{self.algorithm.split('-')[0]}.pem"
        command = _GENERATE[self.algorithm].format(name=name)
        hint = f"generate one with: {command} && chmod 600 {name}"
        return hint if missing else f"{hint}, then set key_file: {name}"

    def _load_key(self) -> None:
        path = self.key_file
        try:
            info = path.stat()
            mode = info.st_mode
            if stat.S_ISREG(mode) and info.st_size > _MAX_KEY_FILE:
                raise self._error("too large to be a private key", self._generate_hint())
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingInputError(
                f"{self.source}: dkim: key_file not found: {path}",
                hint=self._generate_hint(missing=True),
            ) from None
        except OSError as exc:
            raise self._error(f"cannot read it: {exc.strerror}") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            self.warnings.append(f"DKIM key {path} is readable by other users; chmod 600 {path}")

        blocks = _PEM_BLOCK.findall(data)
        if not blocks:
            seed = _bare_seed(data)
            if seed is None:
                raise self._error(
                    "not a PEM private key (no -----BEGIN PRIVATE KEY----- line)",
                    self._generate_hint(),
                )
            self._use_ed25519(seed)
            return
        keys = [(label, body) for label, body in blocks if label.endswith(b"PRIVATE KEY")]
        if not keys:
            found = ", ".join(label.decode("ascii").lower() for label, _body in blocks)
            raise self._error(f"holds no private key, only: {found}", self._generate_hint())
        label, body = keys[0]
        if label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type:" in body:
            raise self._error(
                "the key is encrypted; txsend needs an unencrypted key",
                f"decrypt it with: openssl pkey -in {path.name} -out dkim.pem"
                " && chmod 600 dkim.pem",
            )
        try:
            der = base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        except (binascii.Error, ValueError):
            raise self._error("damaged: the PEM block is not valid base64") from None

        if label == b"RSA PRIVATE KEY":
            self._use_rsa(der)
        elif label == b"PRIVATE KEY":
            try:
                oid, private = _pkcs8(der)
            except ValueError:
                raise self._error("damaged: not a PKCS#8 private key") from None
            if oid == _OID_RSA:
                self._use_rsa(private)  # the PKCS#1 RSAPrivateKey inside
            elif oid == _OID_ED25519:
                if len(private) != 34 or private[:2] != b"\x04\x20":
                    raise self._error("damaged: not a valid Ed25519 private key")
                self._use_ed25519(private[2:])
            else:
                what = _OTHER_KEY_TYPES.get(oid, "a key of an unknown type")
                raise self._error(
                    f"holds {what}; DKIM signs with {_KEY_NAMES[RSA_SHA256]} or"
                    f" {_KEY_NAMES[ED25519_SHA256]}",
                    self._generate_hint(),
                )
        else:
            raise self._error(
                f"unsupported key format -----BEGIN {label.decode('ascii')}-----; DKIM signs"
                f" with {_KEY_NAMES[RSA_SHA256]} or {_KEY_NAMES[ED25519_SHA256]}"
                " (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
                self._generate_hint(),
            )

    def _wrong_type(self) -> JobError:
        other = ED25519_SHA256 if self.algorithm == RSA_SHA256 else RSA_SHA256
        return self._error(
            f"holds {_KEY_NAMES[other]}, but algorithm is {self.algorithm}",
            f"set algorithm: {other}, or {self._generate_hint()}",
        )

    def _use_rsa(self, der: bytes) -> None:
        """Take a PKCS#1 RSAPrivateKey (DER), the form every dkimpy version reads."""
        if self.algorithm != RSA_SHA256:
            raise self._wrong_type()
        try:
            numbers = parse_private_key(der)
        except (UnparsableKeyError, IndexError, ValueError, TypeError):
            raise self._error("damaged: not a valid RSA private key") from None
        modulus: int = numbers["modulus"]
        exponent: int = numbers["publicExponent"]
        bits = modulus.bit_length()
        if bits < MIN_RSA_BITS:
            raise self._error(
                f"the RSA key has only {bits} bits; receivers ignore DKIM keys shorter than"
                f" {MIN_RSA_BITS} bits (RFC 8301)",
                self._generate_hint(),
            )
        if bits < RECOMMENDED_RSA_BITS:
            self.warnings.append(
                f"DKIM key {self.key_file} has only {bits} bits; RFC 8301 recommends"
                f" {RECOMMENDED_RSA_BITS}"
            )
        self._key = _pem(b"RSA PRIVATE KEY", der)
        if rsa is not None:
            try:
                openssl_key = serialization.load_pem_private_key(self._key, password=None)
            except ValueError:  # OpenSSL checks the key's numbers
                raise self._error(
                    "its signatures do not verify; the key is damaged", self._generate_hint()
                ) from None
            if isinstance(openssl_key, rsa.RSAPrivateKey):
                _OPENSSL_KEYS[modulus] = openssl_key
                _install_openssl_rsa()
        spki = _der(
            0x30,
            _der(0x30, _der(0x06, _OID_RSA) + b"\x05\x00")
            + _der(0x03, b"\x00" + _der(0x30, _der_int(modulus) + _der_int(exponent))),
        )
        self.dns_record = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"

    def _use_ed25519(self, seed: bytes) -> None:
        if self.algorithm != ED25519_SHA256:
            raise self._wrong_type()
        try:
            import nacl.signing
        except ImportError:
            raise JobError(
                "dkim: algorithm ed25519-sha256 needs the pynacl package",
                file=self.source,
                hint="install it with: pip install pynacl",
            ) from None
        public = nacl.signing.SigningKey(seed).verify_key.encode()
        self._key = base64.b64encode(seed)
        self.dns_record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode('ascii')}"

    def _self_test(self) -> None:
        """Sign and verify a probe message: a damaged key fails here, not at every send."""
        record = self.dns_record.encode("ascii")

        def lookup(name: bytes, timeout: float = 5) -> bytes:
            return record

        try:
            signed = self.sign(_PROBE)
            good = bool(dkim.verify(signed, dnsfunc=lookup))
        except ValueError:
            good = False
        if not good:
            raise self._error(
                "signatures made with this key do not verify; the key is damaged",
                self._generate_hint(),
            )


def _dns_name(value: str, what: str, source: str) -> str:
    name = value.strip().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    if not _DNS_NAME.fullmatch(name) or len(name) > 253:
        raise JobError(f"dkim: {what} {value!r} is not a valid DNS name", file=source)
    return name


def _signed_headers(headers: Sequence[str] | None, source: str) -> tuple[str, ...]:
    if headers is None:
        return DEFAULT_SIGNED_HEADERS
    if isinstance(headers, str):
        raise TypeError("headers must be a sequence of header field names, not a str")
    names = ["from"]
    for header in headers:
        name = header.strip().lower()
        if not FIELD_NAME.match(name):
            raise JobError(f"dkim: headers: {header!r} is not a header field name", file=source)
        if name in _NEVER_SIGNED:
            raise JobError(
                f"dkim: headers: {name} must not be signed: it is changed or removed in transit"
                " (RFC 6376 section 5.4)",
                file=source,
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _bare_seed(data: bytes) -> bytes | None:
    """The Ed25519 seed of a file holding only its base64 (dkimpy's dknewkey format)."""
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return seed if len(seed) == 32 else None


def _der_item(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    """(start, end) of the content of the DER item at pos, which must have this tag."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError("unexpected DER item")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4 or pos + size > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise ValueError("truncated DER item")
    return pos, pos + length


def _pkcs8(der: bytes) -> tuple[bytes, bytes]:
    """(algorithm OID, privateKey octets) of a PKCS#8 PrivateKeyInfo / OneAsymmetricKey."""
    start, _end = _der_item(der, 0, 0x30)
    _start, end = _der_item(der, start, 0x02)  # version: 0, or 1 with a public key
    alg_start, alg_end = _der_item(der, end, 0x30)
    oid_start, oid_end = _der_item(der, alg_start, 0x06)
    key_start, key_end = _der_item(der, alg_end, 0x04)
    return der[oid_start:oid_end], der[key_start:key_end]


def _pem(label: bytes, der: bytes) -> bytes:
    """PEM with LF line endings: dkimpy looks for the base64 between "--\\n" and "\\n--"."""
    encoded = base64.b64encode(der)
    lines = [b"-----BEGIN " + label + b"-----"]
    lines += [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    lines.append(b"-----END " + label + b"-----\n")
    return b"\n".join(lines)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))
