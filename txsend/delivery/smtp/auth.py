"""AUTH on an open aiosmtplib session, as the relay is configured: one place for the
connection that sends and for the probe that checks a relay.

`auth: password` lets aiosmtplib pick the best of CRAM-MD5, PLAIN and LOGIN. The OAuth 2.0
mechanisms are spoken here, to keep the server's reason for a refused token:

* XOAUTH2 (Google's and Microsoft's): ``AUTH XOAUTH2 base64("user=" U ^A "auth=Bearer " T
  ^A ^A)``; a refusal is a ``334`` with a base64 JSON error, answered with an empty line,
  then the final 5yz/4yz.
* OAUTHBEARER (RFC 7628, with RFC 5801's GS2 header): ``n,a=U,`` ^A ``host=H`` ^A
  ``port=P`` ^A ``auth=Bearer T`` ^A ^A; a refusal is a ``334`` with a base64 JSON status,
  answered with a single ^A (RFC 7628 section 3.2.3), then the final reply.

A refusal raises SMTPAuthenticationError carrying the final reply and the decoded JSON
error; the secret never appears in it, in any form a relay could quote it back in
(`scrub`).
"""

from __future__ import annotations

import base64
import binascii
import json

import aiosmtplib

from txsend.models import RelayAuth, RelayConfig

__all__ = ["authenticate", "oauth_initial_response", "scrub"]

_CONTINUE = 334
_SUCCESS = 235
# the client's answer to a 334 error challenge: XOAUTH2 an empty line, OAUTHBEARER ^A
_ABORT = {RelayAuth.XOAUTH2: b"", RelayAuth.OAUTHBEARER: base64.b64encode(b"\x01")}
_DETAIL_MAX = 300  # characters of the server's JSON error kept in the reason


async def authenticate(smtp: aiosmtplib.SMTP, relay: RelayConfig, secret: str) -> None:
    """Log in as the relay's user with `secret`: a password (auth: password, aiosmtplib
    picks the best of CRAM-MD5, PLAIN and LOGIN that the relay offers) or an OAuth access
    token (auth: xoauth2 / oauthbearer). SMTPAuthenticationError for a refusal (with the
    server's reason), SMTPException when the relay offers no mechanism that fits."""
    if relay.username is None:
        raise ValueError(f"relay {relay.url} has no user name to authenticate as")
    if relay.auth is RelayAuth.PASSWORD:
        try:
            await smtp.login(relay.username, secret)
        # a relay may quote the AUTH PLAIN or LOGIN line back
        except aiosmtplib.SMTPAuthenticationError as exc:
            reason = scrub(exc.message, relay, secret)
            raise aiosmtplib.SMTPAuthenticationError(exc.code, reason) from None
        except aiosmtplib.SMTPResponseException as exc:
            reason = scrub(exc.message, relay, secret)
            raise aiosmtplib.SMTPResponseException(exc.code, reason) from None
        return
    mechanism = relay.auth.value.upper()
    offered = [m.upper() for m in smtp.server_auth_methods]
    if not smtp.supports_extension("auth") or mechanism not in offered:
        # "authentication method" is what connect_fault() knows as AUTH_UNAVAILABLE
        offers = f"it offers {', '.join(offered)}" if offered else "it offers no AUTH here"
        raise aiosmtplib.SMTPException(
            f"the relay does not offer the {mechanism} authentication method ({offers}); "
            f"auth: {relay.auth} needs it"
        )
    initial = oauth_initial_response(relay, secret)
    reply = await smtp.execute_command(b"AUTH", mechanism.encode(), initial)
    detail = ""
    if reply.code == _CONTINUE:
        detail = _error_detail(mechanism, reply.message)
        reply = await smtp.execute_command(_ABORT[relay.auth])
    if reply.code != _SUCCESS:
        message = scrub(f"{reply.message}{detail}", relay, secret)
        raise aiosmtplib.SMTPAuthenticationError(reply.code, message)


def oauth_initial_response(relay: RelayConfig, token: str) -> bytes:
    """The base64 initial client response of the relay's OAuth mechanism."""
    user = relay.username or ""
    if relay.auth is RelayAuth.XOAUTH2:
        raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        # RFC 5801 section 4: "=" and "," in the authorization identity are escaped
        saslname = user.replace("=", "=3D").replace(",", "=2C")
        raw = (
            f"n,a={saslname},\x01host={relay.host}\x01port={relay.port}"
            f"\x01auth=Bearer {token}\x01\x01"
        )
    return base64.b64encode(raw.encode("utf-8"))


def _error_detail(mechanism: str, challenge: str) -> str:
    """The server's JSON error (the 334 challenge), decoded for the reason: e.g.
    " (XOAUTH2 error: status 400, schemes Bearer, scope https://mail.google.com/)"."""
    try:
        decoded = base64.b64decode(challenge.strip(), validate=True).decode("utf-8")
        error = json.loads(decoded)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return f" ({mechanism} error: not the expected base64 JSON)"
    if not isinstance(error, dict):
        return f" ({mechanism} error: not the expected base64 JSON)"
    parts = [
        f"{key} {value}"
        for key, value in error.items()
        if isinstance(key, str) and isinstance(value, (str, int))
    ]
    text = "".join(c for c in ", ".join(parts) if c.isprintable())
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 3] + "..."
    return f" ({mechanism} error: {text})" if text else ""


def scrub(text: str, relay: RelayConfig, secret: str | None) -> str:
    """`text` without the relay's secret (a password: "***", a token: "[token]") in any
    form a relay could quote back: as is, in base64 (AUTH LOGIN), in AUTH PLAIN's base64
    with the user, or in the OAuth mechanism's base64 initial response; with or without
    base64's padding."""
    if not secret:
        return text
    mask = "[token]" if relay.auth.oauth else "***"
    encoded = [base64.b64encode(secret.encode("utf-8"))]
    if relay.username is not None:
        user = relay.username.encode("utf-8")
        encoded.append(base64.b64encode(b"\0" + user + b"\0" + secret.encode("utf-8")))
        if relay.auth.oauth:
            encoded.append(oauth_initial_response(relay, secret))
    # the longest first: a shorter form may be part of a longer one
    forms = [e.decode("ascii") for e in encoded]
    forms += [form.rstrip("=") for form in forms]
    for form in sorted({*forms, secret}, key=len, reverse=True):
        if form:
            text = text.replace(form, mask)
    return text
