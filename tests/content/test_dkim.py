"""DKIM signing: real keys made here, signatures checked with dkimpy's verifier."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from txsend.content.dkim import DEFAULT_SIGNED_HEADERS, DkimSigner
from txsend.errors import JobError, MissingInputError

DOMAIN = "acme.example"
SELECTOR = "s2024"
DNS_NAME = b"s2024._domainkey.acme.example."
PKCS8 = serialization.PrivateFormat.PKCS8
PEM = serialization.Encoding.PEM
NO_PASSWORD = serialization.NoEncryption()

TEXT = "".join(
    f"Line {i}: this month we shipped faster sending, better reports and fewer bugs.\r\n"
    for i in range(12)
)
HTML = "".join(
    f"<p>Line {i}: this month we shipped <b>faster sending</b> and fewer bugs.</p>\r\n"
    for i in range(12)
)
MESSAGE = (
    "From: Acme News <news@acme.example>\r\n"
    "To: Bob Example <bob@example.com>\r\n"
    "Subject: Your March newsletter\r\n"
    "Date: Fri, 01 Mar 2024 09:00:00 +0000\r\n"
    "Message-ID: <3f2a9c1e8b7d4e6f@acme.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "List-Unsubscribe: <https://acme.example/unsubscribe/3f2a9c1e>,\r\n"
    " <mailto:unsubscribe@acme.example?subject=3f2a9c1e>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "Feedback-ID: march:newsletter:acme\r\n"
    "X-Mailer: txsend 0.1.0\r\n"
    'Content-Type: multipart/alternative; boundary="=_txsend_b1"\r\n'
    "\r\n"
    "--=_txsend_b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n" + TEXT + "\r\n"
    "--=_txsend_b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n" + HTML + "\r\n"
    "--=_txsend_b1--\r\n"
).encode("ascii")


# --- keys ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _write(tmp_path: Path, data: bytes, name: str = "dkim.pem", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _pkcs8(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(PEM, PKCS8, NO_PASSWORD)


def _record(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """The DNS TXT record for key, made with cryptography (independent of txsend)."""
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def _verify(message: bytes, record: bytes) -> bool:
    looked_up: list[bytes] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        looked_up.append(name)
        return record

    result = dkim.verify(message, dnsfunc=dnsfunc)
    assert looked_up == [DNS_NAME]
    return bool(result)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _pkcs1_pem(numbers: rsa.RSAPrivateNumbers, *, iqmp: int | None = None) -> bytes:
    """A traditional "RSA PRIVATE KEY" PEM encoded by hand, so it can also be made wrong."""
    public = numbers.public_numbers
    coefficient = numbers.iqmp if iqmp is None else iqmp
    values = [0, public.n, public.e, numbers.d, numbers.p, numbers.q, numbers.dmp1]
    values += [numbers.dmq1, coefficient]
    ints = b"".join(_der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big")) for v in values)
    encoded = base64.b64encode(_der(0x30, ints))
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return b"\n".join(
        [b"-----BEGIN RSA PRIVATE KEY-----", *lines, b"-----END RSA PRIVATE KEY-----\n"]
    )


def _small_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key too short for cryptography's generator (it refuses less than 1024 bits)."""

    def prime(size: int) -> int:
        while True:
            candidate = secrets.randbits(size) | (3 << (size - 2)) | 1  # p*q: 2*size bits
            if all(pow(a, candidate - 1, candidate) == 1 for a in (2, 3, 5, 7, 11, 13, 17)):
                return candidate

    while True:
        p, q = prime(bits // 2), prime(bits // 2)
        try:
            d = pow(65537, -1, (p - 1) * (q - 1))
        except ValueError:
            continue
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p),
            dmq1=rsa.rsa_crt_dmq1(d, q),
            iqmp=rsa.rsa_crt_iqmp(p, q),
            public_numbers=rsa.RSAPublicNumbers(65537, p * q),
        )
        return numbers.private_key()


def _signer(path: Path, algorithm: str = "rsa-sha256", **kwargs: object) -> DkimSigner:
    return DkimSigner(
        domain=DOMAIN,
        selector=SELECTOR,
        key_file=path,
        algorithm=algorithm,
        **kwargs,  # type: ignore[arg-type]
    )


def _tags(signature: bytes) -> dict[bytes, bytes]:
    assert signature.startswith(b"DKIM-Signature:")
    value = signature.split(b":", 1)[1].replace(b"\r\n", b"")
    pairs = (item.split(b"=", 1) for item in value.split(b";") if item.strip())
    return {name.strip(): "".join(v.decode().split()).encode() for name, v in pairs}


def _h(signature: bytes) -> list[bytes]:
    return _tags(signature)[b"h"].split(b":")


# --- signing and verifying ---------------------------------------------------------------


@pytest.fixture(params=["rsa-sha256", "ed25519-sha256"])
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key(
    algorithm: str, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    return rsa_key if algorithm == "rsa-sha256" else ed_key


@pytest.fixture
def signer(
    tmp_path: Path, algorithm: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
) -> DkimSigner:
    return _signer(_write(tmp_path, _pkcs8(key)), algorithm)


def test_signed_message_verifies(
    signer: DkimSigner, algorithm: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
) -> None:
    assert len(MESSAGE) > 2500
    signed = signer.sign(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(MESSAGE)
    assert _verify(signed, _record(key))
    tags = _tags(signed[: len(signed) - len(MESSAGE)])
    assert tags[b"a"] == algorithm.encode()
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode()
    assert tags[b"s"] == SELECTOR.encode()
    # What the user publishes in DNS is what cryptography derives from the key.
    assert signer.dns_name == DNS_NAME.decode().rstrip(".")
    assert signer.dns_record.encode() == _record(key)
    assert signer.warnings == []


def test_signature_is_the_prepended_field(signer: DkimSigner) -> None:
    signature = signer.signature(MESSAGE)
    assert signature.endswith(b"\r\n")
    assert signature.count(b"DKIM-Signature:") == 1
    signed = signer.sign(MESSAGE)
    assert signed.endswith(b"\r\n" + MESSAGE)
    assert signed.count(b"DKIM-Signature:") == 1
    # t= may have moved on a second in between; the body hash cannot have changed.
    assert _tags(signed[: len(signature)])[b"bh"] == _tags(signature)[b"bh"]


def test_signed_headers(signer: DkimSigner) -> None:
    h = _h(signer.signature(MESSAGE))
    for name in (b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id", b"subject"):
        assert h.count(name) == 1
    assert h.count(b"from") == 2  # over-signed: a From added later breaks the signature
    assert b"x-mailer" not in h
    # Absent headers are not listed (only From is signed whether or not it occurs).
    assert b"cc" not in h and b"references" not in h
    assert set(h) <= set(name.encode() for name in DEFAULT_SIGNED_HEADERS)


def test_repeated_headers_are_all_signed(signer: DkimSigner) -> None:
    message = b"To: a@example.com\r\n" + MESSAGE.replace(b"From:", b"Cc: c@example.com\r\nFrom:")
    h = _h(signer.signature(message))
    assert h.count(b"to") == 2 and h.count(b"cc") == 1 and h.count(b"from") == 2


def _replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def change(signed: bytes) -> bytes:
        assert old in signed
        return signed.replace(old, new, 1)

    return change


def _after_signature(field: bytes) -> Callable[[bytes], bytes]:
    def change(signed: bytes) -> bytes:
        return signed.replace(b"\r\nFrom: Acme", b"\r\n" + field + b"\r\nFrom: Acme", 1)

    return change


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        (_replace(b"Your March newsletter", b"Your April newsletter"), False),
        (_replace(b"unsubscribe/3f2a9c1e>", b"unsubscribe/evil>"), False),
        (_replace(b"One-Click", b"Two-Click"), False),
        (_replace(b"march:newsletter", b"april:newsletter"), False),
        (_replace(b"Line 3: this month", b"Line 3: that month"), False),
        (_replace(b"<b>faster", b"<i>faster"), False),
        (_after_signature(b"From: Evil <evil@attacker.example>"), False),
        (lambda signed: b"Received: from relay by mx; Fri, 1 Mar 2024\r\n" + signed, True),
        (_after_signature(b"X-Spam-Score: 0.1"), True),
        (_replace(b"X-Mailer: txsend", b"X-Mailer: other"), True),
        # relaxed/relaxed: whitespace changes in header values and body lines are harmless
        (_replace(b"Subject: Your March", b"Subject:  Your \t March"), True),
        (_replace(b"faster sending, better", b"faster   sending, better"), True),
    ],
)
def test_tampering(
    signer: DkimSigner,
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    change: Callable[[bytes], bytes],
    valid: bool,
) -> None:
    signed = signer.sign(MESSAGE)
    assert _verify(change(signed), _record(key)) is valid


def test_output_is_crlf_and_folded(signer: DkimSigner) -> None:
    signed = signer.sign(MESSAGE)
    assert signed.count(b"\n") == signed.count(b"\r\n") == signed.count(b"\r")
    signature = signer.signature(MESSAGE)
    lines = signature.split(b"\r\n")
    assert lines[-1] == b""
    assert len(lines) > 3
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:-1])


def test_bare_lf_is_refused(signer: DkimSigner) -> None:
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(MESSAGE.replace(b"\r\n", b"\n"))
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(MESSAGE.replace(b"Line 3:", b"Line\r3:"))


def test_chosen_headers(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    signer = _signer(
        _write(tmp_path, _pkcs8(rsa_key)), headers=["Subject", "To", "X-Mailer", "Cc", "to"]
    )
    assert signer.headers == ("from", "subject", "to", "x-mailer", "cc")
    signed = signer.sign(MESSAGE)
    assert sorted(_h(signed[: len(signed) - len(MESSAGE)])) == [
        b"from",
        b"from",
        b"subject",
        b"to",
        b"x-mailer",
    ]
    assert _verify(signed, _record(rsa_key))
    assert not _verify(_replace(b"txsend 0.1.0", b"other")(signed), _record(rsa_key))
    # Only From: it is added even when left out.
    only_from = _signer(tmp_path / "dkim.pem", headers=[])
    assert _h(only_from.signature(MESSAGE)) == [b"from", b"from"]


@pytest.mark.parametrize("name", ["Received", "return-path", "DKIM-Signature", "bcc"])
def test_unsignable_header_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, name: str
) -> None:
    with pytest.raises(JobError, match=f"job.yaml: dkim: headers: {name.lower()} must not"):
        _signer(_write(tmp_path, _pkcs8(rsa_key)), headers=["subject", name])


def test_bad_header_name_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JobError, match="'x mailer' is not a header field name"):
        _signer(_write(tmp_path, _pkcs8(rsa_key)), headers=["x mailer"])


# --- key formats --------------------------------------------------------------------------


def test_pkcs1_rsa_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, NO_PASSWORD)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    signer = _signer(_write(tmp_path, pem))
    assert _verify(signer.sign(MESSAGE), _record(rsa_key))


def test_windows_line_endings_in_key_file(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    path = _write(tmp_path, _pkcs8(ed_key).replace(b"\n", b"\r\n"))
    assert _verify(_signer(path, "ed25519-sha256").sign(MESSAGE), _record(ed_key))


def test_dkimpy_base64_ed25519_seed(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    raw = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, NO_PASSWORD
    )
    path = _write(tmp_path, base64.b64encode(raw) + b"\n", "dkim.key")
    assert _verify(_signer(path, "ed25519-sha256").sign(MESSAGE), _record(ed_key))


# --- key errors ---------------------------------------------------------------------------


def _secrets(pem: bytes) -> list[bytes]:
    """Pieces of key material that must never appear in a message."""
    lines = [line.strip() for line in pem.splitlines() if line.strip() and b"-----" not in line]
    return [line[:24] for line in lines]


def _error_text(exc: BaseException) -> bytes:
    hint = getattr(exc, "hint", None) or ""
    return f"{exc}\n{hint}\n{exc!r}".encode()


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError) as info:
        _signer(tmp_path / "dkim.pem", "ed25519-sha256", source="jobs/march.yaml")
    assert str(info.value) == f"jobs/march.yaml: dkim: key_file not found: {tmp_path}/dkim.pem"
    assert info.value.hint is not None
    assert "openssl genpkey -algorithm ED25519 -out dkim.pem" in info.value.hint


def test_garbage_key_file(tmp_path: Path) -> None:
    path = _write(tmp_path, b"this is not a key\n")
    with pytest.raises(JobError, match="not a PEM private key") as info:
        _signer(path)
    assert str(info.value).startswith(f"job.yaml: dkim: key_file {path}: ")
    assert info.value.hint is not None and "openssl genpkey -algorithm RSA" in info.value.hint


def test_damaged_pem(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pkcs8(rsa_key)
    path = _write(tmp_path, pem.replace(pem.splitlines()[5], b"!!!!"))
    with pytest.raises(JobError, match="damaged") as info:
        _signer(path)
    for piece in _secrets(pem):
        assert piece not in _error_text(info.value)


def test_rsa_key_with_ed25519(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pkcs8(rsa_key)
    with pytest.raises(JobError, match="holds an RSA key, but algorithm is ed25519-sha256") as info:
        _signer(_write(tmp_path, pem), "ed25519-sha256")
    assert str(tmp_path / "dkim.pem") in str(info.value)
    assert info.value.hint is not None
    assert info.value.hint.endswith(
        "openssl genpkey -algorithm ED25519 -out dkim-ed25519.pem && chmod 600 dkim-ed25519.pem"
        ", then set key_file: dkim-ed25519.pem"
    )
    for piece in _secrets(pem):
        assert piece not in _error_text(info.value)


def test_ed25519_key_with_rsa(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = _pkcs8(ed_key)
    with pytest.raises(JobError, match="holds an Ed25519 key, but algorithm is rsa-sha256") as info:
        _signer(_write(tmp_path, pem), "rsa-sha256")
    assert info.value.hint is not None and "set algorithm: ed25519-sha256" in info.value.hint
    for piece in _secrets(pem):
        assert piece not in _error_text(info.value)


def test_short_rsa_key(tmp_path: Path) -> None:
    pem = _pkcs8(_small_rsa_key(512))
    with pytest.raises(JobError, match=r"only 512 bits; .* \(RFC 8301\)") as info:
        _signer(_write(tmp_path, pem))
    for piece in _secrets(pem):
        assert piece not in _error_text(info.value)


def test_damaged_rsa_key_fails_the_self_test(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    numbers = rsa_key.private_numbers()
    pem = _pkcs1_pem(numbers, iqmp=numbers.iqmp + 1)
    with pytest.raises(JobError, match="do not verify; the key is damaged") as info:
        _signer(_write(tmp_path, pem))
    for piece in _secrets(pem):
        assert piece not in _error_text(info.value)
    assert _signer(_write(tmp_path, _pkcs1_pem(numbers))).dns_record.encode() == _record(rsa_key)


def test_unknown_algorithm(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(
        JobError, match="unknown algorithm 'rsa-sha1'; use rsa-sha256 or ed25519-sha256"
    ):
        _signer(_write(tmp_path, _pkcs8(rsa_key)), "rsa-sha1")


def test_other_key_types(tmp_path: Path) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(PEM, PKCS8, NO_PASSWORD)
    with pytest.raises(JobError, match="holds an EC"):
        _signer(_write(tmp_path, ec_pem))
    traditional = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, NO_PASSWORD
    )
    with pytest.raises(
        JobError, match="unsupported key format -----BEGIN EC PRIVATE KEY-----; DKIM signs"
    ):
        _signer(_write(tmp_path, traditional))
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    public_pem = public.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(JobError, match="holds no private key, only: public key"):
        _signer(_write(tmp_path, public_pem), "ed25519-sha256")


def test_encrypted_key(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = ed_key.private_bytes(PEM, PKCS8, serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(JobError, match="encrypted") as info:
        _signer(_write(tmp_path, pem), "ed25519-sha256")
    assert info.value.hint is not None and "openssl pkey -in dkim.pem" in info.value.hint


@pytest.mark.parametrize("domain", ["acme example", "acme.example; x=1", "", "-acme.example"])
def test_bad_domain(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey, domain: str) -> None:
    with pytest.raises(JobError, match="is not a valid DNS name"):
        DkimSigner(
            domain=domain,
            selector=SELECTOR,
            key_file=_write(tmp_path, _pkcs8(ed_key)),
            algorithm="ed25519-sha256",
        )


def test_repr_has_no_key(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = _pkcs8(ed_key)
    signer = _signer(_write(tmp_path, pem), "ed25519-sha256")
    text = repr(signer).encode()
    assert b"acme.example" in text
    raw = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, NO_PASSWORD
    )
    for piece in [*_secrets(pem), base64.b64encode(raw)[:24]]:
        assert piece not in text


# --- warnings -----------------------------------------------------------------------------


def test_world_readable_key_warns(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    path = _write(tmp_path, _pkcs8(ed_key), mode=0o644)
    signer = _signer(path, "ed25519-sha256")
    assert signer.warnings == [f"DKIM key {path} is readable by other users; chmod 600 {path}"]
    path.chmod(0o640)
    assert len(_signer(path, "ed25519-sha256").warnings) == 1
    path.chmod(0o600)
    assert _signer(path, "ed25519-sha256").warnings == []


def test_1024_bit_rsa_key_warns(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    signer = _signer(_write(tmp_path, _pkcs8(key)))
    assert signer.warnings == [
        f"DKIM key {tmp_path / 'dkim.pem'} has only 1024 bits; RFC 8301 recommends 2048"
    ]
    assert _verify(signer.sign(MESSAGE), _record(key))


def test_openssl_rsa_gives_dkimpys_bytes(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    import hashlib

    from dkim.crypto import parse_pem_private_key  # type: ignore[import-untyped]

    from txsend.content import dkim as signing

    signer = _signer(_write(tmp_path, _pkcs8(rsa_key)))
    pem = signer._key
    private = parse_pem_private_key(pem)
    assert private["modulus"] in signing._OPENSSL_KEYS
    digest = hashlib.sha256(b"canonical headers")
    fast = signing._openssl_rsa_sign(digest, private)
    pure = signing._PURE_RSA_SIGN(hashlib.sha256(b"canonical headers"), private)
    assert fast == pure  # RSASSA-PKCS1-v1_5 is deterministic
    assert dkim.RSASSA_PKCS1_v1_5_sign is signing._openssl_rsa_sign
