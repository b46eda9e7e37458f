"""Emails to every Owner when a key is activated, deactivated, archived or given new IP addresses."""
from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.utils import timezone

from dashboard.audit import RequestContext
from dashboard.models import Role
from dashboard.two_factor import CodeRefused
from keys import crypto, services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, KeyStatus
from keys.secret_store import seal_secret

from . import helpers
from .helpers import fresh_code

CTX = RequestContext("198.51.100.7", "pytest")


def make_key(merchant, status=KeyStatus.GENERATED, *, name="Checkout server") -> ApiKey:
    public_key = crypto.generate_public_key()
    sealed = seal_secret(public_key, crypto.generate_secret()) if status in (KeyStatus.ACTIVE, KeyStatus.DEACTIVATED) else ""
    return ApiKey.objects.create(
        merchant=merchant, public_key=public_key, name=name, status=status, encrypted_secret=sealed
    )


@pytest.fixture
def members(merchant, owner):
    """Two Owners who must hear of changes, members of other roles and an Owner elsewhere who must not."""
    second_owner = helpers.create_member(merchant, Role.OWNER, "second-owner@acme.test")
    for role in (Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED):
        helpers.create_member(merchant, role, f"{role}@acme.test")
    helpers.create_member(helpers.create_merchant("Other"), Role.OWNER, "owner@other.test")
    return {"owner": owner, "second_owner": second_owner}


def _activate(clock, merchant, actor, key):
    return services.activate_key(
        actor=actor, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("203.0.113.7"),
        code=fresh_code(clock, actor), context=CTX,
    )


def _deactivate(clock, merchant, actor, key):
    return services.deactivate_key(actor=actor, merchant=merchant, key_id=key.pk, code=fresh_code(clock, actor), context=CTX)


def _archive(clock, merchant, actor, key):
    return services.archive_key(actor=actor, merchant=merchant, key_id=key.pk, code=fresh_code(clock, actor), context=CTX)


def _allowlist(clock, merchant, actor, key):
    return services.update_allowlist(
        actor=actor, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist("203.0.113.7, 2001:db8::/32"),
        code=fresh_code(clock, actor), context=CTX,
    )


NOTIFIED = [
    pytest.param(_activate, KeyStatus.GENERATED, "activated", id="activate"),
    pytest.param(_deactivate, KeyStatus.ACTIVE, "deactivated", id="deactivate"),
    pytest.param(_archive, KeyStatus.DEACTIVATED, "archived", id="archive"),
    pytest.param(_allowlist, KeyStatus.ACTIVE, "given new IP addresses", id="allowlist change"),
]


@pytest.mark.parametrize(("act", "status", "what"), NOTIFIED)
def test_every_owner_gets_one_email_naming_key_actor_and_address(
    clock, merchant, members, django_capture_on_commit_callbacks, act, status, what
):
    key = make_key(merchant, status)
    actor = members["second_owner"]

    with django_capture_on_commit_callbacks(execute=True):
        result = act(clock, merchant, actor, key)
    when = timezone.now()

    assert sorted(recipient for message in mail.outbox for recipient in message.to) == [
        "owner@acme.test", "second-owner@acme.test",
    ]
    assert all(len(message.to) == 1 and not message.cc and not message.bcc for message in mail.outbox)
    secret = getattr(result, "secret", None)
    key.refresh_from_db()
    for message in mail.outbox:
        assert message.subject == f"[Acme Payments] API key {what}"
        assert f"An API key of Acme Payments was {what}." in message.body
        assert f"API key: {key.public_key}" in message.body
        assert "Name: Checkout server" in message.body
        assert f"Status now: {key.get_status_display()}" in message.body
        assert "By: second-owner@acme.test" in message.body
        assert "From address: 198.51.100.7" in message.body
        assert f"When: {when:%Y-%m-%d %H:%M:%S} UTC" in message.body
        assert key.encrypted_secret == "" or key.encrypted_secret not in message.body
        if secret:
            assert secret not in message.body and secret not in message.subject


def test_each_owner_reads_the_time_in_the_zone_they_chose_with_utc_beside_it(
    clock, merchant, members, django_capture_on_commit_callbacks
):
    members["second_owner"].time_zone = "Asia/Kolkata"
    members["second_owner"].save(update_fields=["time_zone"])
    key = make_key(merchant, KeyStatus.ACTIVE)

    with django_capture_on_commit_callbacks(execute=True):
        _deactivate(clock, merchant, members["second_owner"], key)

    when = {message.to[0]: message.body.split("When: ")[1].splitlines()[0] for message in mail.outbox}
    utc = f"{timezone.now():%Y-%m-%d %H:%M:%S} UTC"
    assert when["owner@acme.test"] == utc
    india = timezone.now() + timedelta(hours=5, minutes=30)  # no summer time there
    assert when["second-owner@acme.test"] == f"{india:%Y-%m-%d %H:%M:%S} Asia/Kolkata ({utc})"


@pytest.mark.parametrize("time_zone", ["", "Not/A_Zone", "../etc/passwd"])
def test_an_owner_time_zone_that_is_no_zone_gives_utc_and_never_undoes_the_action(
    clock, merchant, members, django_capture_on_commit_callbacks, time_zone
):
    type(members["second_owner"]).objects.filter(pk=members["second_owner"].pk).update(time_zone=time_zone)
    key = make_key(merchant, KeyStatus.ACTIVE)

    with django_capture_on_commit_callbacks(execute=True):
        _deactivate(clock, merchant, members["owner"], key)

    key.refresh_from_db()
    assert key.status == KeyStatus.DEACTIVATED
    assert all(f"When: {timezone.now():%Y-%m-%d %H:%M:%S} UTC\n" in message.body for message in mail.outbox)
    assert len(mail.outbox) == 2


def test_activation_email_lists_the_allowed_addresses_and_never_the_secret(
    clock, merchant, members, django_capture_on_commit_callbacks
):
    key = make_key(merchant)
    with django_capture_on_commit_callbacks(execute=True):
        result = _activate(clock, merchant, members["owner"], key)
    assert result.secret
    assert len(mail.outbox) == 2
    for message in mail.outbox:
        assert "Allowed IP addresses: 203.0.113.7" in message.body
        assert result.secret not in message.body and result.secret not in message.subject
        assert all(result.secret not in str(value) for value in message.extra_headers.values())


def test_blank_allowlist_reads_as_any_address(clock, merchant, members, django_capture_on_commit_callbacks):
    key = make_key(merchant, KeyStatus.ACTIVE)
    with django_capture_on_commit_callbacks(execute=True):
        services.update_allowlist(
            actor=members["owner"], merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
            code=fresh_code(clock, members["owner"]), context=CTX,
        )
    assert all("Allowed IP addresses: any IP address" in message.body for message in mail.outbox)
    assert len(mail.outbox) == 2


def test_email_is_sent_only_once_the_change_commits(clock, merchant, members, django_capture_on_commit_callbacks):
    key = make_key(merchant)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _activate(clock, merchant, members["owner"], key)
    assert mail.outbox == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert len(mail.outbox) == 2


def test_a_mail_server_failure_does_not_undo_the_change(clock, merchant, members, django_capture_on_commit_callbacks):
    key = make_key(merchant, KeyStatus.ACTIVE)
    with mock.patch("keys.notifications.send_mass_mail", side_effect=ConnectionRefusedError):
        with django_capture_on_commit_callbacks(execute=True):
            _deactivate(clock, merchant, members["owner"], key)
    key.refresh_from_db()
    assert key.status == KeyStatus.DEACTIVATED


def test_no_email_for_rename_or_generate(clock, merchant, members, django_capture_on_commit_callbacks):
    key = make_key(merchant, KeyStatus.ACTIVE)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.rename_key(actor=members["owner"], merchant=merchant, key_id=key.pk, name="Renamed",
                            code=fresh_code(clock, members["owner"]), context=CTX)
        services.generate_key(actor=members["owner"], merchant=merchant, code=fresh_code(clock, members["owner"]), context=CTX)
    key.refresh_from_db()
    assert key.name == "Renamed"
    assert callbacks == [] and mail.outbox == []


def _refused_wrong_status(clock, merchant, members):
    key = make_key(merchant, KeyStatus.GENERATED)
    with pytest.raises(services.KeyActionRefused):
        _deactivate(clock, merchant, members["owner"], key)


def _refused_another_active(clock, merchant, members):
    make_key(merchant, KeyStatus.ACTIVE)
    key = make_key(merchant, KeyStatus.DEACTIVATED)
    with pytest.raises(services.KeyActionRefused):
        _activate(clock, merchant, members["owner"], key)


def _refused_not_owner(clock, merchant, members):
    viewer = helpers.create_member(merchant, Role.VIEW)
    key = make_key(merchant, KeyStatus.ACTIVE)
    with pytest.raises(services.KeyActionRefused):
        _deactivate(clock, merchant, viewer, key)


def _refused_code(clock, merchant, members):
    key = make_key(merchant, KeyStatus.ACTIVE)
    with pytest.raises(CodeRefused):
        services.deactivate_key(actor=members["owner"], merchant=merchant, key_id=key.pk, code="000000x", context=CTX)


def _refused_archived(clock, merchant, members):
    key = make_key(merchant, KeyStatus.ARCHIVED)
    with pytest.raises(services.KeyActionRefused):
        _allowlist(clock, merchant, members["owner"], key)


@pytest.mark.parametrize(
    "refuse",
    [
        pytest.param(_refused_wrong_status, id="wrong status"),
        pytest.param(_refused_another_active, id="another key active"),
        pytest.param(_refused_not_owner, id="not an owner"),
        pytest.param(_refused_code, id="bad code"),
        pytest.param(_refused_archived, id="allowlist of archived"),
    ],
)
def test_no_email_for_a_refused_action(clock, merchant, members, django_capture_on_commit_callbacks, refuse):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        refuse(clock, merchant, members)
    assert callbacks == []
    assert mail.outbox == []
