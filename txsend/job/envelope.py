"""The job's `return_path:` and `verp:`: where bounces go (the envelope sender).

``return_path: bounces@acme.example`` sets MAIL FROM for every message (default: the From
address). ``verp: true`` gives each message its own envelope sender, the return path's
local part + ``+<token>`` (``bounces+tx1…@acme.example``); ``verp: "b-{token}@acme.example"``
is the same with an address of the user's own shape. The token (`txsend.verp`) names the
job and the row; `txsend bounces` reads it back from what the relay returns.
"""

from __future__ import annotations

from txsend.addresses import envelope_address
from txsend.job.yamlmap import Section
from txsend.models import Envelope
from txsend.units import describe_value
from txsend.verp import PLACEHOLDER

__all__ = ["ENVELOPE_KEYS", "check_verp_address", "load_envelope", "verp_pattern"]

ENVELOPE_KEYS = frozenset({"return_path", "verp"})
_SAMPLE_TOKEN = "tx1" + "a" * 41  # as long as every token
_LOCAL_PART_MAX = 64  # RFC 5321 section 4.5.3.1.1


def load_envelope(root: Section) -> Envelope:
    """Read `return_path:` and `verp:` from the top-level mapping."""
    return_path = root.opt_str("return_path")
    if return_path is not None:
        return_path = return_path.strip().removeprefix("<").removesuffix(">")
        try:
            return_path = envelope_address(return_path)
        except ValueError as exc:
            raise root.error(
                "return_path", f"{exc}", hint="a bare address, e.g. bounces@acme.example"
            ) from None
    value = root.value("verp")
    if value is None or value is False:
        return Envelope(return_path=return_path)
    if value is True:
        if return_path is not None:
            _check_pattern(root, verp_pattern(return_path))
        return Envelope(return_path=return_path, verp=True)
    if not isinstance(value, str):
        raise root.error(
            "verp",
            f"expected true, false or an address with {PLACEHOLDER}, got {describe_value(value)}",
        )
    pattern = value.strip()
    _check_pattern(root, pattern)
    return Envelope(return_path=return_path, verp=True, verp_pattern=pattern)


def verp_pattern(address: str) -> str:
    """The default VERP pattern for an envelope sender: local+{token}@domain."""
    local, _, domain = address.rpartition("@")
    return f"{local}+{PLACEHOLDER}@{domain}"


def check_verp_address(pattern: str) -> str | None:
    """Why a VERP pattern cannot make addresses, or None."""
    if pattern.count(PLACEHOLDER) != 1:
        return f"must hold {PLACEHOLDER} once, e.g. bounces+{PLACEHOLDER}@acme.example"
    local, at, _domain = pattern.rpartition("@")
    if not at or PLACEHOLDER not in local:
        return f"{PLACEHOLDER} belongs in the local part (before the @)"
    sample = pattern.replace(PLACEHOLDER, _SAMPLE_TOKEN)
    try:
        envelope_address(sample)
    except ValueError as exc:
        return f"does not make an address: {exc}"
    if len(sample.rpartition("@")[0].encode()) > _LOCAL_PART_MAX:
        return (
            f"with its 44-character token the local part is over {_LOCAL_PART_MAX} octets;"
            " use a shorter prefix"
        )
    return None


def _check_pattern(root: Section, pattern: str) -> None:
    problem = check_verp_address(pattern)
    if problem is not None:
        raise root.error("verp", problem)
