"""The merchant's IP allowlist: reading what they type, and matching client addresses against it.

Pure functions over the standard library's ``ipaddress``. Parse errors are Django
``ValidationError``s so a form can raise them as they are.
"""

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError

MAX_ENTRIES = 100
# Far above the longest valid entry (49 characters), and the most of one entry an error message echoes.
MAX_ENTRY_LENGTH = 100
INVALID_CODE = "invalid_allowlist"

_SEPARATORS = re.compile(r"[\s,]+")
# Where IPv4 clients of a dual-stack server appear; a network containing all of it admits every IPv4 client.
_IPV4_MAPPED_RANGE = ipaddress.IPv6Network("::ffff:0:0/96")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Allowlist:
    """Normalised entries (addresses and ``network/prefix``), plus advice that does not block saving.

    No entries means every address is allowed.
    """

    entries: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def parse_allowlist(text: str) -> Allowlist:
    """Parse an allowlist typed by a merchant.

    Entries are IPv4/IPv6 addresses or CIDR networks, separated by commas and/or whitespace.
    They are normalised (compressed lower-case IPv6, IPv4-mapped IPv6 as IPv4, single addresses
    without ``/32`` or ``/128``) and merged when equal, keeping first order. Blank text gives an
    empty allowlist.

    Raises one ``ValidationError`` listing every refused entry (code ``invalid_allowlist``): not an
    address, host bits set, zone id, a network admitting every address, or more than
    ``MAX_ENTRIES`` entries. Messages echo at most ``MAX_ENTRY_LENGTH`` characters of an entry and
    describe at most ``MAX_ENTRIES`` refused entries. Non-public entries give warnings, not errors.
    """
    networks: dict[str, Network] = {}  # normalised text -> network, in first-seen order
    refusals: dict[str, ValidationError] = {}  # typed entry -> why it is refused
    for entry in _SEPARATORS.split(text):
        if not entry or entry in refusals:
            continue
        try:
            network = _parse_entry(entry)
        except ValidationError as refusal:
            refusals[entry] = refusal
            continue
        networks.setdefault(_entry_text(network), network)

    # SECURITY: bounded, so pasting megabytes of junk does not come back as megabytes of messages.
    errors = list(refusals.values())[:MAX_ENTRIES]
    # Refused entries count too, so fixing them cannot reveal a second, different error.
    entered = len(networks) + len(refusals)
    if entered > MAX_ENTRIES:
        errors.append(
            ValidationError(
                "At most %(limit)d entries are allowed; you entered %(count)d.",
                code=INVALID_CODE,
                params={"limit": MAX_ENTRIES, "count": entered},
            )
        )
    if errors:
        raise ValidationError(errors)

    warnings = tuple(
        f"{text} is not a public address; requests from the internet will not come from it."
        for text, network in networks.items()
        if not network.is_global
    )
    return Allowlist(entries=tuple(networks), warnings=warnings)


def format_allowlist(entries: Iterable[str]) -> str:
    """Show entries for display or editing; ``parse_allowlist`` reads the result back unchanged."""
    return ", ".join(entries)


def is_address_allowed(entries: Sequence[str], address: str) -> bool:
    """Tell whether a client ``address`` is allowed by ``entries`` from ``parse_allowlist``.

    No entries allow every address. A client is matched the same whether it appears as IPv4 or as
    IPv4-mapped IPv6 (as on a dual-stack socket). An address that does not parse is refused; this
    never raises.
    """
    if not entries:
        return True
    return _is_allowed(tuple(entries), address)


@functools.lru_cache(maxsize=4096)
def _is_allowed(entries: tuple[str, ...], address: str) -> bool:
    # The answer depends on nothing but its two arguments, and the sandbox API asks it on every request.
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    networks = _parsed_networks(entries)
    return any(form in network for form in _address_forms(client) for network in networks)


def _parse_entry(entry: str) -> Network:
    """Return the normalised network for one typed entry, or raise a ``ValidationError`` saying why not."""
    shown = entry if len(entry) <= MAX_ENTRY_LENGTH else entry[:MAX_ENTRY_LENGTH] + "…"
    # ipaddress already refuses non-ASCII digits such as full-width ones; saying so here keeps that
    # from depending on its internals.
    if len(entry) > MAX_ENTRY_LENGTH or not entry.isascii():
        raise _refusal("'%(entry)s' is not an IPv4 or IPv6 address or network", shown)
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise _refusal("'%(entry)s' is not an IPv4 or IPv6 address or network", shown) from None
    # ipaddress accepts zone ids, but the address a request arrives from never carries one.
    if network.version == 6 and network.network_address.scope_id is not None:
        raise _refusal("'%(entry)s' has a zone id, which cannot be matched; remove the %%… part", shown)
    try:
        ipaddress.ip_network(entry, strict=True)
    except ValueError:
        # SECURITY: refused rather than silently widened, so the merchant sees what they are allowing.
        raise _refusal(
            "'%(entry)s' has host bits set; did you mean %(network)s?",
            shown,
            network=_entry_text(_unmapped(network)),
        ) from None
    network = _unmapped(network)
    # SECURITY: an "allowlist" that admits everyone must look like one: a blank field.
    if network.prefixlen == 0:
        raise _refusal("'%(entry)s' allows every address; leave the field blank instead", shown)
    if network.version == 6 and _IPV4_MAPPED_RANGE.subnet_of(network):
        raise _refusal(
            "'%(entry)s' allows every IPv4 address, since it contains %(mapped)s; use a narrower network",
            shown,
            mapped=str(_IPV4_MAPPED_RANGE),
        )
    return network


def _refusal(message: str, shown_entry: str, **params: str) -> ValidationError:
    return ValidationError(message, code=INVALID_CODE, params={"entry": shown_entry, **params})


def _unmapped(network: Network) -> Network:
    """Turn an IPv4-mapped IPv6 network into the IPv4 network it stands for; others pass unchanged."""
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))


def _entry_text(network: Network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@functools.lru_cache(maxsize=1024)
def _parsed_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse stored entries once per distinct allowlist rather than on every request."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            # Stored entries come from parse_allowlist; one that does not parse admits nobody
            # rather than failing every request of the merchant.
            continue
    return tuple(networks)


def _address_forms(client: Address) -> tuple[Address, ...]:
    """The client as both IPv4 and IPv4-mapped IPv6 when it is an IPv4 client, else as itself."""
    if client.version == 4:
        return (client, ipaddress.IPv6Address(f"::ffff:{client}"))
    mapped = client.ipv4_mapped
    return (client,) if mapped is None else (client, mapped)
