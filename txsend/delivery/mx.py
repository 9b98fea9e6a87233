"""MX lookups for `domains:` entries with `mx:` (the only dnspython importer).

One lookup per recipient domain per run, bounded by `delivery.timeouts.connect`, cached;
a failure (no answer, NXDOMAIN, a timeout) means "no MX match" and is logged once per
domain. The resolver is the system's, or the one `TXSEND_DNS` names ("host:port" or
"host", several separated by commas, each an IP address), e.g. a test's resolver on
127.0.0.1; a run checks it first (`dns_problem`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from txsend.logs import event

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

__all__ = ["DNS_ENV", "DNS_FORMAT", "MxLookup", "dns_problem", "nameservers"]

DNS_ENV = "TXSEND_DNS"


DNS_FORMAT = "host[:port][,host...]"  # host: an IPv4 or IPv6 address ([::1]:5353)


def nameservers(text: str) -> list[tuple[str, int]]:
    """(host, port) of each resolver in "127.0.0.1:5353,::1,[::1]:53" (port 53 by default);
    ValueError saying what is wrong (and in which entry, when there are several)."""
    if not text.strip():
        raise ValueError("is empty")
    parts = [part.strip() for part in text.split(",")]
    found = []
    for part in parts:
        try:
            found.append(_nameserver(part))
        except ValueError as exc:
            if len(parts) == 1:
                raise
            raise ValueError(_of(f"entry {part!r}", exc)) from None
    return found


def _of(subject: str, exc: ValueError) -> str:
    """ "TXSEND_DNS='x' is not ..." or "TXSEND_DNS='x:0': port '0' is not ..." """
    said = str(exc)
    return (
        f"{subject} {said}" if said.startswith(("is ", "has ", "names ")) else f"{subject}: {said}"
    )


def _nameserver(part: str) -> tuple[str, int]:
    if not part:
        raise ValueError("has an empty entry")
    host, port = part, "53"
    if part.startswith("["):  # [::1]:5353
        host, bracket, rest = part[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("is not written [IPv6]:port")
        port = rest[1:] if rest else port
    elif part.count(":") == 1:  # 127.0.0.1:5353 (more colons: a bare IPv6 address)
        host, _, port = part.partition(":")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    if not host:
        raise ValueError("names no host before the port (an IPv4 or IPv6 address)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        named = "" if host == part else f"{host!r} "  # the value itself is named once, before
        raise ValueError(f"{named}is not an IPv4 or IPv6 address") from None
    return str(address), int(port)


def dns_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with `TXSEND_DNS`, if it is set (None: unset or good)."""
    value = (os.environ if environ is None else environ).get(DNS_ENV)
    if value is None:
        return None
    try:
        nameservers(value)
    except ValueError as exc:
        said = _of(f"{DNS_ENV}={value!r}", exc)
        return f"{said}; expected {DNS_FORMAT} (IP addresses, port 1-65535)"
    return None


class MxLookup:
    """The MX hosts of recipient domains, looked up asynchronously."""

    def __init__(self, timeout: float, servers: str | None = None) -> None:
        self.timeout = timeout
        self._servers = servers if servers is not None else os.environ.get(DNS_ENV)
        self._resolver: Resolver | None = None

    def _make_resolver(self) -> Resolver:
        # dnspython loads only for a job whose domains: match by MX
        from dns.asyncresolver import Resolver
        from dns.nameserver import Do53Nameserver

        if self._servers is None:
            return Resolver()
        resolver = Resolver(configure=False)
        resolver.nameservers = [
            Do53Nameserver(host, port) for host, port in nameservers(self._servers)
        ]
        return resolver

    async def hosts(self, domain: str) -> list[str]:
        """The domain's MX host names (empty when the lookup failed: logged)."""
        import dns.exception  # with the resolver: only for a job that matches by MX

        try:
            if self._resolver is None:
                self._resolver = self._make_resolver()
            # (the resolver's lifetime bounds the lookup; the timeout, anything around it)
            async with asyncio.timeout(self.timeout + 1.0):
                answer = await self._resolver.resolve(domain, "MX", lifetime=self.timeout)
        except (dns.exception.DNSException, ValueError, OSError) as exc:  # (TimeoutError too)
            reason = str(exc) or type(exc).__name__
            event(
                logging.WARNING,
                "mx_lookup_failed",
                f"MX lookup of {domain} failed ({reason}): matched by its name only",
                domain=domain,
                reason=reason,
            )
            return []
        return [str(record.exchange).rstrip(".") for record in answer]
