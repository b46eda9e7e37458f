"""keys.allowlist: parsing the merchant's IP allowlist and matching clients. No settings, no database."""

import ipaddress

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.allowlist import format_allowlist, is_address_allowed, parse_allowlist

# database=None keeps hypothesis from writing an example database into the project tree.
PROPERTY_SETTINGS = settings(max_examples=150, database=None)

NOT_AN_ADDRESS = "'{}' is not an IPv4 or IPv6 address or network"
ONE_HUNDRED_PUBLIC = [f"8.8.{i // 256}.{i % 256}" for i in range(100)]


def _messages(text: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        parse_allowlist(text)
    assert {error.code for error in caught.value.error_list} == {"invalid_allowlist"}
    return caught.value.messages


# Parsing


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        pytest.param("8.8.8.8", ("8.8.8.8",), id="IPv4"),
        pytest.param("2001:DB8::1", ("2001:db8::1",), id="IPv6 upper-case"),
        pytest.param("2001:0db8:0000:0000:0000:0000:0000:0001", ("2001:db8::1",), id="IPv6 expanded"),
        pytest.param("::ffff:198.51.100.7", ("198.51.100.7",), id="IPv4-mapped, dotted"),
        pytest.param("::FFFF:C633:6407", ("198.51.100.7",), id="IPv4-mapped, hex"),
        pytest.param("::ffff:198.51.100.0/120", ("198.51.100.0/24",), id="IPv4-mapped network"),
        pytest.param("198.51.100.0/24", ("198.51.100.0/24",), id="IPv4 CIDR"),
        pytest.param("2001:DB8:0:0::/64", ("2001:db8::/64",), id="IPv6 CIDR"),
        pytest.param("198.51.100.7/32", ("198.51.100.7",), id="IPv4 /32 is an address"),
        pytest.param("2001:db8::1/128", ("2001:db8::1",), id="IPv6 /128 is an address"),
        pytest.param("198.51.100.0/255.255.255.0", ("198.51.100.0/24",), id="netmask notation"),
        pytest.param(
            "8.8.8.8, 8.8.8.8/32 ::ffff:8.8.8.8 1.1.1.1 2001:db8::1 2001:DB8:0::1",
            ("8.8.8.8", "1.1.1.1", "2001:db8::1"),
            id="duplicates merged in first order",
        ),
        pytest.param(
            "8.8.8.8,1.1.1.1\n2001:db8::1 ,, \t 192.0.2.0/24\r\n\u3000 9.9.9.9,",
            ("8.8.8.8", "1.1.1.1", "2001:db8::1", "192.0.2.0/24", "9.9.9.9"),
            id="commas spaces and newlines",
        ),
        pytest.param(
            ", ".join(ONE_HUNDRED_PUBLIC + ONE_HUNDRED_PUBLIC), tuple(ONE_HUNDRED_PUBLIC), id="100 after merging"
        ),
        pytest.param("", (), id="empty"),
        pytest.param("  \n , \t", (), id="blank"),
    ],
)
def test_parse_allowlist_normalises_valid_entries(text, entries):
    allowlist = parse_allowlist(text)

    assert allowlist.entries == entries
    assert parse_allowlist(format_allowlist(allowlist.entries)) == allowlist


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        pytest.param("garbage", [NOT_AN_ADDRESS.format("garbage")], id="garbage"),
        pytest.param("300.1.2.3", [NOT_AN_ADDRESS.format("300.1.2.3")], id="octet out of range"),
        pytest.param("010.1.1.1", [NOT_AN_ADDRESS.format("010.1.1.1")], id="leading-zero IPv4"),
        pytest.param("１.２.３.４", [NOT_AN_ADDRESS.format("１.２.３.４")], id="full-width digits"),
        pytest.param("10.0.0.0/33", [NOT_AN_ADDRESS.format("10.0.0.0/33")], id="IPv4 prefix too long"),
        pytest.param("2001:db8::/129", [NOT_AN_ADDRESS.format("2001:db8::/129")], id="IPv6 prefix too long"),
        pytest.param("1.2.3.4%eth0", [NOT_AN_ADDRESS.format("1.2.3.4%eth0")], id="IPv4 with a zone"),
        pytest.param(
            "1" * 500, [NOT_AN_ADDRESS.format("1" * 100 + "…")], id="very long entry is shown truncated"
        ),
        pytest.param(
            "10.0.0.1/24", ["'10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"], id="host bits"
        ),
        pytest.param(
            "2001:db8::1/64", ["'2001:db8::1/64' has host bits set; did you mean 2001:db8::/64?"], id="IPv6 host bits"
        ),
        pytest.param(
            "::ffff:10.0.0.1/120",
            ["'::ffff:10.0.0.1/120' has host bits set; did you mean 10.0.0.0/24?"],
            id="mapped host bits",
        ),
        pytest.param(
            "fe80::1%eth0",
            ["'fe80::1%eth0' has a zone id, which cannot be matched; remove the %… part"],
            id="zone id",
        ),
        pytest.param(
            "fe80::%eth0/64",
            ["'fe80::%eth0/64' has a zone id, which cannot be matched; remove the %… part"],
            id="zone id on a network",
        ),
        pytest.param(
            "0.0.0.0/0", ["'0.0.0.0/0' allows every address; leave the field blank instead"], id="every IPv4"
        ),
        pytest.param("::/0", ["'::/0' allows every address; leave the field blank instead"], id="every IPv6"),
        pytest.param(
            "::ffff:0:0/96", ["'::ffff:0:0/96' allows every address; leave the field blank instead"], id="every mapped"
        ),
        pytest.param(
            "::/64",
            ["'::/64' allows every IPv4 address, since it contains ::ffff:0:0/96; use a narrower network"],
            id="IPv6 network containing every mapped address",
        ),
        pytest.param(
            ", ".join(ONE_HUNDRED_PUBLIC + ["9.9.9.9"]),
            ["At most 100 entries are allowed; you entered 101."],
            id="101 entries",
        ),
    ],
)
def test_parse_allowlist_refuses_invalid_entries_with_a_message_naming_them(text, messages):
    assert _messages(text) == messages


def test_parse_allowlist_reports_every_error_at_once_in_input_order():
    text = "garbage, 8.8.8.8, 10.0.0.1/24\nfe80::1%eth0 garbage 0.0.0.0/0"

    assert _messages(text) == [
        NOT_AN_ADDRESS.format("garbage"),
        "'10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?",
        "'fe80::1%eth0' has a zone id, which cannot be matched; remove the %… part",
        "'0.0.0.0/0' allows every address; leave the field blank instead",
    ]


def test_parse_allowlist_counts_refused_entries_towards_the_limit():
    messages = _messages(", ".join(ONE_HUNDRED_PUBLIC[:99] + ["bad1", "bad2"]))

    assert messages == [
        NOT_AN_ADDRESS.format("bad1"),
        NOT_AN_ADDRESS.format("bad2"),
        "At most 100 entries are allowed; you entered 101.",
    ]


def test_parse_allowlist_bounds_the_messages_for_huge_input():
    text = " ".join(f"bad{i}" for i in range(5000))

    messages = _messages(text)

    assert len(messages) == 101
    assert messages[-1] == "At most 100 entries are allowed; you entered 5000."


@pytest.mark.parametrize(
    ("text", "warned_entry"),
    [
        pytest.param("10.1.2.3", "10.1.2.3", id="private IPv4"),
        pytest.param("192.168.1.10", "192.168.1.10", id="private IPv4 192.168"),
        pytest.param("127.0.0.1", "127.0.0.1", id="loopback"),
        pytest.param("10.0.0.0/8", "10.0.0.0/8", id="private network"),
        pytest.param("fe80::1", "fe80::1", id="IPv6 link-local"),
        pytest.param("fe80::/10", "fe80::/10", id="IPv6 link-local network"),
        pytest.param("::1", "::1", id="IPv6 loopback"),
        pytest.param("::ffff:192.168.1.10", "192.168.1.10", id="mapped private"),
    ],
)
def test_parse_allowlist_warns_about_non_public_entries_but_keeps_them(text, warned_entry):
    allowlist = parse_allowlist(f"8.8.8.8 {text}")

    assert allowlist.entries == ("8.8.8.8", warned_entry)
    assert allowlist.warnings == (
        f"{warned_entry} is not a public address; requests from the internet will not come from it.",
    )


def test_parse_allowlist_does_not_warn_about_public_entries():
    allowlist = parse_allowlist("8.8.8.8 1.1.1.0/24 2606:4700:4700::1111 2a00:1450::/32")

    assert allowlist.warnings == ()


def test_allowlist_is_immutable():
    allowlist = parse_allowlist("8.8.8.8")

    with pytest.raises(AttributeError):
        allowlist.entries = ()  # type: ignore[misc]


# Matching client addresses


@pytest.mark.parametrize(
    ("entries", "address", "allowed"),
    [
        pytest.param((), "8.8.8.8", True, id="no entries allow IPv4"),
        pytest.param((), "2001:db8::1", True, id="no entries allow IPv6"),
        pytest.param(("8.8.8.8",), "8.8.8.8", True, id="IPv4 equal"),
        pytest.param(("8.8.8.8",), "8.8.4.4", False, id="IPv4 different"),
        pytest.param(("2001:db8::1",), "2001:DB8:0::1", True, id="IPv6 equal in another spelling"),
        pytest.param(("2001:db8::1",), "2001:db8::2", False, id="IPv6 different"),
        pytest.param(("198.51.100.0/24",), "198.51.100.255", True, id="IPv4 CIDR last address"),
        pytest.param(("198.51.100.0/24",), "198.51.101.0", False, id="IPv4 CIDR next address"),
        pytest.param(("2001:db8::/32",), "2001:db8:ffff::1", True, id="IPv6 CIDR inside"),
        pytest.param(("2001:db8::/32",), "2001:db9::1", False, id="IPv6 CIDR outside"),
        pytest.param(("198.51.100.7",), "::ffff:198.51.100.7", True, id="mapped client, IPv4 entry"),
        pytest.param(("198.51.100.0/24",), "::FFFF:C633:6409", True, id="mapped hex client, IPv4 CIDR"),
        pytest.param(("198.51.100.7",), "::ffff:198.51.100.8", False, id="mapped client, other IPv4"),
        pytest.param(("198.51.100.7",), "::c633:6407", False, id="IPv4-compatible is not mapped"),
        pytest.param(("198.51.100.7", "2001:db8::/32"), "2001:db8::5", True, id="second entry matches"),
        pytest.param(("8.8.8.8",), "", False, id="empty address"),
        pytest.param(("8.8.8.8",), "garbage", False, id="garbage address"),
        pytest.param(("8.8.8.8",), "8.8.8.8 ", False, id="trailing space"),
        pytest.param(("8.8.8.8",), "８.８.８.８", False, id="full-width digits"),
        pytest.param(("8.8.8.0/24",), "8.8.8.0/24", False, id="a network is not an address"),
        pytest.param(("not an entry",), "8.8.8.8", False, id="unparseable stored entry admits nobody"),
    ],
)
def test_is_address_allowed(entries, address, allowed):
    assert is_address_allowed(entries, address) is allowed


@pytest.mark.parametrize(
    "entries",
    [("198.51.100.7",), ("198.51.100.0/24",), ("::ffff:198.51.100.0/120",), ("::/64",), ("2001:db8::/32",)],
)
def test_ipv4_client_is_judged_the_same_as_its_mapped_form(entries):
    assert is_address_allowed(entries, "198.51.100.7") == is_address_allowed(entries, "::ffff:198.51.100.7")


# Properties


@st.composite
def networks_with_addresses(draw):
    """A random network (prefix at least 1, host bits cleared) and an address, often inside it."""
    network_class, address_class, bits = draw(
        st.sampled_from(
            [(ipaddress.IPv4Network, ipaddress.IPv4Address, 32), (ipaddress.IPv6Network, ipaddress.IPv6Address, 128)]
        )
    )
    prefix = draw(st.integers(1, bits))
    network = network_class((draw(st.integers(0, 2**bits - 1)), prefix), strict=False)
    inside = st.integers(int(network.network_address), int(network.broadcast_address))
    address = address_class(draw(inside | st.integers(0, 2**bits - 1)))
    return network, address


@PROPERTY_SETTINGS
@given(networks_with_addresses())
def test_is_address_allowed_agrees_with_ipaddress_membership(network_and_address):
    network, address = network_and_address

    assert is_address_allowed([str(network)], str(address)) == (address in network)


def _typed_spellings(network):
    """Ways a merchant might type a network: as Python prints it, exploded, upper-case, IPv4-mapped."""
    text = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    spellings = [st.just(text), st.just(network.exploded), st.just(text.upper())]
    if network.version == 4:
        spellings.append(st.just(f"::ffff:{network.network_address}/{network.prefixlen + 96}"))
    return st.one_of(spellings)


def _contains_every_mapped_address(network):
    return network.version == 6 and ipaddress.IPv6Network("::ffff:0:0/96").subnet_of(network)


valid_entries = (
    st.one_of(
        st.builds(
            ipaddress.IPv4Network, st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 32)), strict=st.just(False)
        ),
        st.builds(
            ipaddress.IPv6Network, st.tuples(st.integers(0, 2**128 - 1), st.integers(1, 128)), strict=st.just(False)
        ),
    )
    # Networks around :: that admit every IPv4 client are rightly refused; they are tested above.
    .filter(lambda network: not _contains_every_mapped_address(network))
    .flatmap(_typed_spellings)
)


@PROPERTY_SETTINGS
@given(
    st.lists(valid_entries, min_size=1, max_size=12),
    st.lists(st.sampled_from([",", " ", "\n", ", ", " ,\t", "\r\n"]), min_size=12, max_size=12),
)
def test_valid_input_is_accepted_and_parse_of_format_of_parse_is_stable(entries, separators):
    text = "".join(entry + separator for entry, separator in zip(entries, separators))

    allowlist = parse_allowlist(text)

    assert parse_allowlist(format_allowlist(allowlist.entries)) == allowlist


@PROPERTY_SETTINGS
@given(
    st.text(
        alphabet=st.one_of(st.sampled_from("0123456789abcdefABCDEF:./%, \n\t"), st.characters()),
        max_size=80,
    )
)
def test_parse_allowlist_raises_only_validation_error_for_any_text(text):
    try:
        allowlist = parse_allowlist(text)
    except ValidationError:
        return
    assert parse_allowlist(format_allowlist(allowlist.entries)) == allowlist
