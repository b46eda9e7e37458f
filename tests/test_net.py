"""dashboard.net.client_ip: X-Forwarded-For is believed only from TRUSTED_PROXIES."""
import pytest
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

from dashboard.models import AuditAction, AuditEvent
from dashboard.net import client_ip

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.1"]


def ip_of(remote_addr, forwarded=None):
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **meta))


# Without trusted proxies: REMOTE_ADDR, whatever the headers say


@override_settings(TRUSTED_PROXIES=[])
@pytest.mark.parametrize(
    ("remote_addr", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8::7", "2001:db8::7"),
        ("2001:DB8:0:0::7", "2001:db8::7"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("::FFFF:CB00:7105", "203.0.113.5"),
        ("10.0.0.2", "10.0.0.2"),
    ],
)
def test_without_trusted_proxies_the_peer_is_the_client(remote_addr, expected):
    assert ip_of(remote_addr, "198.51.100.99") == expected


@override_settings(TRUSTED_PROXIES=[])
@pytest.mark.parametrize("remote_addr", ["", "unknown", "203.0.113.5:443", "not an address", "1.2.3"])
def test_a_remote_addr_that_is_not_an_address_gives_none(remote_addr):
    assert ip_of(remote_addr) is None


# Behind trusted proxies


@override_settings(TRUSTED_PROXIES=PROXIES)
@pytest.mark.parametrize(
    ("remote_addr", "forwarded", "expected"),
    [
        pytest.param("10.0.0.2", "198.51.100.7", "198.51.100.7", id="one proxy"),
        pytest.param("10.0.0.2", " 198.51.100.7 ", "198.51.100.7", id="spaces"),
        pytest.param("10.0.0.2", "198.51.100.7, 10.1.2.3", "198.51.100.7", id="two proxies"),
        pytest.param("192.0.2.1", "198.51.100.7,10.9.9.9,10.1.1.1", "198.51.100.7", id="three proxies"),
        pytest.param("10.0.0.2", "2001:db8:1::5", "2001:db8:1::5", id="IPv6 client"),
        pytest.param("2001:db8:ffff::1", "198.51.100.7", "198.51.100.7", id="IPv6 proxy"),
        pytest.param("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7", id="mapped proxy address"),
        pytest.param("10.0.0.2", "::ffff:198.51.100.7", "198.51.100.7", id="mapped client address"),
        pytest.param("10.0.0.2", "", "10.0.0.2", id="empty header"),
        pytest.param("10.0.0.2", None, "10.0.0.2", id="no header"),
        pytest.param("10.0.0.2", ", ,", "10.0.0.2", id="only commas"),
        pytest.param("10.0.0.2", "10.3.3.3, 10.4.4.4", "10.3.3.3", id="every hop a proxy"),
        pytest.param("10.0.0.2", "garbage", "10.0.0.2", id="garbled hop"),
        pytest.param("10.0.0.2", "198.51.100.7:4711", "10.0.0.2", id="hop with a port"),
        pytest.param("10.0.0.2", "198.51.100.7, garbage", "10.0.0.2", id="garbled nearest hop"),
        pytest.param("192.0.2.2", "198.51.100.7", "192.0.2.2", id="neighbour of a single trusted address"),
    ],
)
def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client(remote_addr, forwarded, expected):
    assert ip_of(remote_addr, forwarded) == expected


FORGED_HEADERS = [
    pytest.param("127.0.0.1", id="loopback"),
    pytest.param("10.0.0.2", id="a trusted proxy's address"),
    pytest.param("1.1.1.1, 10.0.0.2", id="a chain"),
    pytest.param("8.8.8.8", id="someone else"),
    pytest.param("::1", id="IPv6 loopback"),
    pytest.param("garbage", id="garbage"),
    pytest.param("203.0.113.66\r\nX-Evil: 1", id="header injection"),
]


@override_settings(TRUSTED_PROXIES=PROXIES)
@pytest.mark.parametrize("forged", FORGED_HEADERS)
def test_a_forged_header_from_an_untrusted_peer_is_ignored(forged):
    assert ip_of("203.0.113.66", forged) == "203.0.113.66"


@override_settings(TRUSTED_PROXIES=PROXIES)
@pytest.mark.parametrize("forged", FORGED_HEADERS)
def test_a_client_cannot_hide_behind_addresses_it_prepends(forged):
    """A trusted proxy appends the real peer; whatever the client wrote before it is not believed."""
    assert ip_of("10.0.0.2", f"{forged}, 203.0.113.66") == "203.0.113.66"


def test_the_trusted_proxies_setting_is_read_on_every_call():
    with override_settings(TRUSTED_PROXIES=[]):
        assert ip_of("10.0.0.2", "198.51.100.7") == "10.0.0.2"
    with override_settings(TRUSTED_PROXIES=["10.0.0.0/8"]):
        assert ip_of("10.0.0.2", "198.51.100.7") == "198.51.100.7"
    with override_settings(TRUSTED_PROXIES=["10.0.0.3"]):
        assert ip_of("10.0.0.2", "198.51.100.7") == "10.0.0.2"


# In the audit trail


@override_settings(TRUSTED_PROXIES=PROXIES)
@pytest.mark.parametrize(
    ("remote_addr", "forwarded", "recorded"),
    [
        pytest.param("203.0.113.66", "127.0.0.1", "203.0.113.66", id="forged by the client"),
        pytest.param("10.0.0.2", "198.51.100.7", "198.51.100.7", id="behind our proxy"),
        pytest.param("::ffff:203.0.113.66", None, "203.0.113.66", id="mapped peer"),
    ],
)
def test_the_audit_trail_records_the_address_client_ip_gives(owner, remote_addr, forwarded, recorded):
    headers = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    client = Client(**headers)

    client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "not the password at all"})

    assert AuditEvent.objects.get(action=AuditAction.SIGN_IN_FAILED).ip_address == recorded


@override_settings(TRUSTED_PROXIES=[])
def test_an_address_that_is_not_an_address_is_recorded_as_unknown(owner):
    Client(REMOTE_ADDR="unknown").post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "nope"})

    assert AuditEvent.objects.get().ip_address is None

