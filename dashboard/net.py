"""The address a request comes from, believing X-Forwarded-For only from trusted proxies."""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from dashboard.settings_cache import cached_setting, until_settings_change

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@until_settings_change
def _trusted_networks() -> tuple[Network, ...]:
    # Kept until a setting changes: every request asks, and rebuilding the tuple of settings to look up an
    # lru_cache cost the signed request more than the answer.
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in cached_setting("TRUSTED_PROXIES"))


@lru_cache(maxsize=4096)
def _parse(value: str) -> Address | None:
    # Cached: every request parses its peer's address, and a server sees few distinct peers at a time.
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            # A zone id names an interface of the peer's host, not part of its address.
            return ipaddress.IPv6Address(value.strip().split("%", 1)[0])
    return address


@lru_cache(maxsize=4096)
def _text(value: str) -> str | None:
    """The canonical text of the address ``value`` (as ``_parse`` reads it), made once per address."""
    address = _parse(value)
    return None if address is None else str(address)


def _is_trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def is_trusted_proxy(remote_addr: str) -> bool:
    peer = _parse(remote_addr)
    trusted = _trusted_networks()
    return peer is not None and bool(trusted) and _is_trusted(peer, trusted)


def client_ip(request) -> str | None:
    """The client's address as text, or None when REMOTE_ADDR is not an address.

    X-Forwarded-For is read only when the direct peer is a proxy listed in TRUSTED_PROXIES; the
    client is then the right-most address of the chain that is not itself a trusted proxy.
    """
    remote_addr = request.META.get("REMOTE_ADDR", "")
    trusted = _trusted_networks()
    if not trusted:
        return _text(remote_addr)
    peer = _parse(remote_addr)
    if peer is None:
        return None
    # SECURITY: an untrusted client can write any X-Forwarded-For; only a trusted proxy's counts.
    if not _is_trusted(peer, trusted):
        return _text(remote_addr)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([part for part in forwarded.split(",") if part.strip()]):
        address = _parse(hop)
        if address is None:
            # A garbled hop cannot be traced further; the last trustworthy sender is the answer.
            return str(peer)
        if not _is_trusted(address, trusted):
            return str(address)
        peer = address
    return str(peer)
