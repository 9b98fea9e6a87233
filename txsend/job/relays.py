"""Relays: smtp:// and smtps:// URLs with their options, checked before anything connects.

`parse_relay_url` serves the job file's `relays:`, `--relay` and `TXSEND_RELAY` alike; a
password never appears in a URL, nor in any message about one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from txsend.errors import ConfigError, JobError
from txsend.job.paths import absolute
from txsend.job.yamlmap import Section
from txsend.models import RelayAuth, RelayConfig, TlsMode
from txsend.units import RATE_FORMS, describe_value, parse_rate

__all__ = ["RELAY_OPTIONS", "is_loopback", "job_relays", "parse_relay_url"]

RELAY_OPTIONS = frozenset(
    [
        "password_env",
        "password_file",
        "password_cmd",
        "allow_insecure_auth",
        "auth",
        "ca_file",
        "connections",
        "messages_per_connection",
        "max_recipients",
        "rate",
        "priority",
        "weight",
    ]
)
_RELAY_INT_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "connections": (1, 1000),
    "messages_per_connection": (1, None),
    "max_recipients": (1, None),
    "priority": (None, None),
    "weight": (1, None),
}


def parse_relay_url(url: str, **options: Any) -> RelayConfig:
    """A RelayConfig from an smtp:// or smtps:// URL plus the relay's other keys."""
    shown = redact_relay_url(url)
    unknown = sorted(set(options) - RELAY_OPTIONS)
    if unknown:
        raise ConfigError(f"relay {shown}: unknown option {unknown[0]!r}")
    # Checked before parsing: a password with "/" or "#" in it confuses urlsplit.
    if shown != url:
        raise ConfigError(
            f"{shown}: passwords do not belong in relay URLs; use password_env or password_file"
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad relay URL {shown}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ConfigError(
            f"bad relay URL {shown}: unsupported scheme {scheme + '://' if scheme else '(none)'}",
            hint="write smtp://host:587 (STARTTLS) or smtps://host:465 (implicit TLS)",
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"bad relay URL {shown}: no host name")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"bad relay URL {shown}: unexpected path {parts.path!r}")
    if port == 0:
        raise ConfigError(f"bad relay URL {shown}: port 0 is not a port")
    if port is None and parts.netloc.endswith(":"):
        raise ConfigError(
            f"bad relay URL {shown}: the port after ':' is empty",
            hint="write the port (smtp://host:587), or leave out the ':' for the default",
        )

    tls: TlsMode | None = TlsMode.IMPLICIT if scheme == "smtps" else None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "tls" or scheme == "smtps":
            raise ConfigError(
                f"bad relay URL {shown}: unknown query parameter {name!r}",
                hint="the only query parameter is ?tls=starttls|none on smtp:// URLs",
            )
        if tls is not None:
            raise ConfigError(f"bad relay URL {shown}: tls is given twice")
        if value.lower() not in (TlsMode.STARTTLS, TlsMode.NONE):
            raise ConfigError(
                f"bad relay URL {shown}: tls must be starttls or none, got {value!r}",
                hint="for implicit TLS write smtps://host:465",
            )
        tls = TlsMode(value.lower())
    if tls is None:
        # A local sink or test relay rarely speaks TLS; anything else must opt out explicitly.
        tls = TlsMode.NONE if is_loopback(host) else TlsMode.STARTTLS
    if port is None:
        port = {TlsMode.IMPLICIT: 465, TlsMode.STARTTLS: 587, TlsMode.NONE: 25}[tls]
    username = unquote(parts.username) if parts.username else None

    checked: dict[str, Any] = {}
    for name, value in options.items():
        try:
            checked[name] = _relay_option(name, value)
        except ValueError as exc:
            raise ConfigError(f"relay {shown}: {name}: {exc}") from None
    secrets = [
        name for name in ("password_env", "password_file", "password_cmd") if name in checked
    ]
    if len(secrets) > 1:
        raise ConfigError(f"relay {shown}: set only one of {', '.join(secrets)}")
    auth: RelayAuth = checked.get("auth", RelayAuth.PASSWORD)
    if auth.oauth:
        _check_oauth(shown, auth, username, secrets)
    if secrets and username is None:
        raise ConfigError(
            f"relay {shown}: {secrets[0]} is set but the URL has no user name",
            hint="write the user into the URL: smtp://USER@host:587",
        )
    if secrets and tls is TlsMode.NONE and not checked.get("allow_insecure_auth", False):
        what = "access token" if auth.oauth else "password"
        raise ConfigError(
            f"relay {shown}: authenticating without TLS would send the {what} in clear",
            hint="use tls=starttls or smtps://, "
            "or set allow_insecure_auth: true (test relays only)",
        )
    return RelayConfig(url=url.strip(), host=host, port=port, tls=tls, username=username, **checked)


def _check_oauth(shown: str, auth: RelayAuth, username: str | None, secrets: Sequence[str]) -> None:
    """An OAuth relay names the account in its URL and says where its token comes from."""
    if username is None:
        raise ConfigError(
            f"relay {shown}: auth: {auth} needs the account's user name in the URL",
            hint="write it into the URL: smtp://USER%40example.com@host:587",
        )
    if not secrets:
        raise ConfigError(
            f"relay {shown}: auth: {auth} needs a source for the access token",
            hint="add password_cmd: a command that prints a fresh access token (run again for "
            "each connection), or password_file: a file that a token refresher keeps current",
        )


def _relay_option(name: str, value: Any) -> Any:
    """One relay option, type- and range-checked; ValueError says what is wrong."""
    if name in _RELAY_INT_LIMITS:
        low, high = _RELAY_INT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {describe_value(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise ValueError(f"must be at least {low}, got {value}")
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    if name == "allow_insecure_auth":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {describe_value(value)}")
        return value
    if name == "auth":
        choices = ", ".join(RelayAuth)
        if not isinstance(value, str):
            raise ValueError(f"expected one of {choices}, got {describe_value(value)}")
        try:
            return RelayAuth(value.strip().lower())
        except ValueError:
            raise ValueError(f"expected one of {choices}, got {value!r}") from None
    if name in ("password_file", "ca_file"):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError(f"expected a file path, got {describe_value(value)}")
        return Path(value)
    if name == "rate":
        if not isinstance(value, str):
            raise ValueError(f"expected a rate like {RATE_FORMS}; got {describe_value(value)}")
        parse_rate(value)  # ValueError says what is wrong
        return value.strip()
    # password_env, password_cmd
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {describe_value(value)}")
    return value


def redact_relay_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    match = re.search(r"(?<=//)(.*)@", url)
    if match is None or ":" not in match.group(1):
        return url
    user = match.group(1).split(":", 1)[0]
    return url[: match.start()] + f"{user}:***@" + url[match.end() :]


def is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def job_relays(root: Section, base: Path) -> tuple[RelayConfig, ...]:
    """The job file's relays: list (a URL, or a mapping with url: and options)."""
    relays = []
    for index, (item, line) in enumerate(root.opt_list("relays")):
        where = f"relays[{index}]"
        if isinstance(item, str):  # shorthand: `- smtp://host:587`
            item = {"url": item}
        if not isinstance(item, dict):
            raise JobError(
                f"{where}: expected a mapping with url:, got {describe_value(item)}",
                file=root.display,
                line=line,
            )
        section = Section(root.display, item, where, line)
        section.check_keys(RELAY_OPTIONS | {"url"})
        url = section.req_str("url", hint="e.g. url: smtp://user@smtp.example.com:587")
        options: dict[str, Any] = {}
        for key in sorted(RELAY_OPTIONS):
            value = section.value(key)
            if value is None:
                continue
            try:
                options[key] = _relay_option(key, value)
            except ValueError as exc:
                raise section.error(key, str(exc)) from None
            if key in ("password_file", "ca_file"):
                options[key] = absolute(base / options[key])
        try:
            relays.append(parse_relay_url(url, **options))
        except ConfigError as exc:
            raise ConfigError(f"{section.where('url')}: {exc.message}", hint=exc.hint) from None
    return tuple(relays)
