"""MX lookups for `domains:` entries with `mx:` (the only dnspython importer).

One lookup per recipient domain per run, bounded by `delivery.timeouts.connect`, cached;
a failure (no answer, NXDOMAIN, a timeout) means "no MX match" and is logged once per
domain. The resolver is the system's, or the one `TXSEND_DNS` names ("host:port" or
"host", several separated by commas), e.g. a test's resolver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from txsend.logs import event

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

__all__ = ["DNS_ENV", "MxLookup", "nameservers"]

DNS_ENV = "TXSEND_DNS"


def nameservers(text: str) -> list[tuple[str, int]]:
    """(host, port) of each resolver in "127.0.0.1:5353,::1" (port 53 by default)."""
    found = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        host, port = part, 53
        if part.startswith("["):  # [::1]:5353
            host, _, rest = part[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif part.count(":") == 1:
            host, _, number = part.partition(":")
            port = int(number)
        found.append((host, port))
    return found


class MxLookup:
    """The MX hosts of recipient domains, looked up asynchronously."""

    def __init__(self, timeout: float, servers: str | None = None) -> None:
        self.timeout = timeout
        self._servers = servers if servers is not None else os.environ.get(DNS_ENV)
        self._resolver: Resolver | None = None

    def _make_resolver(self) -> Resolver:
        # dnspython loads only for a job whose domains: match by MX
        from dns.asyncresolver import Resolver

        if not self._servers:
            return Resolver()
        resolver = Resolver(configure=False)
        servers = nameservers(self._servers)
        resolver.nameservers = [host for host, _port in servers]
        resolver.port = servers[0][1] if servers else 53
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
