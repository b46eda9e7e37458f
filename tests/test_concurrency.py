"""Races, with real threads on separate database connections (PostgreSQL, or an SQLite file)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.utils import timezone

from dashboard import invitations, members
from dashboard.audit import RequestContext
from dashboard.members import MemberChangeRefused
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Invitation, Membership, Role, User
from dashboard.two_factor import CodeRefused, RefusalReason, verify_fresh_code
from keys import services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, KeyStatus
from sandbox import request_log
from sandbox.models import ApiRequest

from . import helpers

CONTEXT = RequestContext("198.51.100.7", "pytest")
THREADS = 10

on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks (SQLite has none)")


def run_at_once(functions):
    """Start every function at the same moment, each in its own thread and connection; return outcomes."""
    barrier = threading.Barrier(len(functions))

    def call(function):
        barrier.wait()
        try:
            return function()
        except Exception as error:  # the outcome of each racer is what the test asserts
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(functions)) as pool:
        return list(pool.map(call, functions))


def activate_now(merchant, owner, key):
    services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
        code=helpers.current_code(owner), context=CONTEXT,
    )


@pytest.fixture
def racing_merchant(transactional_db, clock):
    merchant = helpers.create_merchant("Race Merchant")
    owners = [helpers.create_member(merchant, Role.OWNER) for _ in range(THREADS)]
    keys = [
        ApiKey.objects.create(merchant=merchant, public_key=f"sbx_{n:040x}", created_by=owners[n])
        for n in range(THREADS)
    ]
    return merchant, owners, keys


def test_ten_owners_activating_ten_keys_at_once_leave_exactly_one_active(racing_merchant):
    merchant, owners, keys = racing_merchant

    def activate(owner, key):
        return lambda: services.activate_key(
            actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
            code=helpers.current_code(owner), context=CONTEXT,
        )

    outcomes = run_at_once([activate(owner, key) for owner, key in zip(owners, keys)])

    winners = [o for o in outcomes if isinstance(o, services.ActivationResult)]
    losers = [o for o in outcomes if isinstance(o, services.KeyActionRefused)]
    assert len(winners) == 1, outcomes
    assert len(losers) == THREADS - 1, outcomes
    assert {loser.message for loser in losers} == {"Another API key is already active. Deactivate it first."}
    assert ApiKey.objects.filter(merchant=merchant, status=KeyStatus.ACTIVE).count() == 1
    assert ApiKey.objects.exclude(encrypted_secret="").count() == 1, "losers must not keep a secret"
    activated = AuditEvent.objects.filter(action=AuditAction.KEY_ACTIVATED)
    assert activated.filter(outcome=AuditOutcome.SUCCEEDED).count() == 1
    assert activated.filter(outcome=AuditOutcome.REFUSED, details__reason="another_key_active").count() == THREADS - 1


def test_the_same_code_submitted_twice_at_once_is_accepted_once(racing_merchant):
    _, owners, _ = racing_merchant
    owner = owners[0]
    code = helpers.current_code(owner)

    outcomes = run_at_once([lambda: verify_fresh_code(owner, code, context=CONTEXT, purpose="race")] * 2)

    accepted = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, CodeRefused)]
    assert len(accepted) == 1, outcomes
    assert [r.reason for r in refused] == [RefusalReason.REUSED]


def test_activation_and_deactivation_racing_leave_a_consistent_audited_state(racing_merchant, clock):
    merchant, owners, keys = racing_merchant
    key = keys[0]
    activate_now(merchant, owners[0], key)
    clock.next_code_step()
    services.deactivate_key(
        actor=owners[0], merchant=merchant, key_id=key.pk, code=helpers.current_code(owners[0]), context=CONTEXT
    )
    clock.next_code_step()

    outcomes = run_at_once([
        lambda: services.activate_key(
            actor=owners[1], merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""),
            code=helpers.current_code(owners[1]), context=CONTEXT,
        ),
        lambda: services.deactivate_key(
            actor=owners[2], merchant=merchant, key_id=key.pk, code=helpers.current_code(owners[2]), context=CONTEXT
        ),
    ])

    assert not any(isinstance(o, Exception) and not isinstance(o, services.KeyActionRefused) for o in outcomes), outcomes
    key.refresh_from_db()
    activated, deactivated = outcomes
    if isinstance(deactivated, services.KeyActionRefused):
        # The deactivation ran first, on a key that was not active.
        assert key.status == KeyStatus.ACTIVE
    else:
        assert key.status == KeyStatus.DEACTIVATED
    for action, outcome in ((AuditAction.KEY_ACTIVATED, activated), (AuditAction.KEY_DEACTIVATED, deactivated)):
        expected = AuditOutcome.REFUSED if isinstance(outcome, Exception) else AuditOutcome.SUCCEEDED
        assert AuditEvent.objects.filter(action=action, actor=owners[1 if action == AuditAction.KEY_ACTIVATED else 2],
                                         outcome=expected).count() == 1


@on_postgresql
def test_the_request_log_goes_on_recording_a_key_while_it_is_being_deactivated(racing_merchant, monkeypatch):
    # A transition locks the merchant's row and the key's. A log row refers to both, and its foreign-key checks
    # (FOR KEY SHARE) waited for FOR UPDATE locks until the transition committed; FOR NO KEY UPDATE lets them by.
    merchant, owners, keys = racing_merchant
    key = keys[0]
    activate_now(merchant, owners[0], key)
    locked, logged = threading.Event(), threading.Event()
    held_until_logged = []
    locked_key = services._locked_key

    def holding_the_locks(merchant, key_id):
        locked_row = locked_key(merchant, key_id)
        locked.set()
        held_until_logged.append(logged.wait(timeout=5))
        return locked_row

    monkeypatch.setattr(services, "_locked_key", holding_the_locks)

    def deactivate():
        return services.deactivate_key(
            actor=owners[1], merchant=merchant, key_id=key.pk, code=helpers.current_code(owners[1]), context=CONTEXT
        )

    def log_a_request():
        locked.wait(timeout=5)
        request_log.write_rows([request_log.LoggedRequest(
            merchant.pk, key.pk, timezone.now(), "198.51.100.7", "POST", "/api/v2/accounts/list", 200, "",
        )])
        logged.set()

    deactivated, _ = run_at_once([deactivate, log_a_request])

    assert held_until_logged == [True], "the log row waited for the deactivation to commit"
    assert deactivated.status == KeyStatus.DEACTIVATED
    assert ApiRequest.objects.filter(api_key=key).count() == 1


# Invitations


def test_ten_owners_inviting_the_same_address_at_once_leave_one_open_invitation(racing_merchant):
    merchant, owners, _ = racing_merchant

    def invite(owner):
        return lambda: invitations.invite(
            actor=owner, merchant=merchant, email="raced@example.test", role=Role.VIEW,
            code=helpers.current_code(owner), context=CONTEXT, link_for=lambda token: f"https://testserver/{token}/",
        )

    outcomes = run_at_once([invite(owner) for owner in owners])

    assert all(isinstance(o, tuple) or isinstance(o, MemberChangeRefused) for o in outcomes), outcomes
    assert any(isinstance(o, tuple) for o in outcomes)
    assert {o.code for o in outcomes if isinstance(o, MemberChangeRefused)} <= {"invited_meanwhile"}
    assert Invitation.objects.still_open().filter(merchant=merchant, email="raced@example.test").count() == 1


def test_two_invitations_of_one_new_address_used_at_once_make_one_account(transactional_db, clock):
    tokens = []
    for name in ("First Merchant", "Second Merchant"):
        merchant = helpers.create_merchant(name)
        owner = helpers.create_member(merchant, Role.OWNER)
        invitations.invite(actor=owner, merchant=merchant, email="both@example.test", role=Role.VIEW,
                           code=helpers.current_code(owner), context=CONTEXT, link_for=tokens.append)

    outcomes = run_at_once([
        lambda token=token: invitations.create_account_and_accept(
            digest=invitations.token_digest(token), password="a long and new passphrase 7", context=CONTEXT,
        ) for token in tokens
    ])

    made = [o for o in outcomes if isinstance(o, User)]
    refused = [o for o in outcomes if isinstance(o, MemberChangeRefused)]
    assert len(made) == 1 and len(refused) == 1, outcomes
    assert refused[0].code == "has_account"
    assert User.objects.filter(email="both@example.test").count() == 1
    assert Membership.objects.filter(user__email="both@example.test").count() == 1


def test_one_link_used_twice_at_once_makes_one_account(transactional_db, clock):
    merchant = helpers.create_merchant("Race Merchant")
    owner = helpers.create_member(merchant, Role.OWNER)
    tokens = []
    invitations.invite(actor=owner, merchant=merchant, email="twice@example.test", role=Role.VIEW,
                       code=helpers.current_code(owner), context=CONTEXT, link_for=tokens.append)

    outcomes = run_at_once([
        lambda: invitations.create_account_and_accept(
            digest=invitations.token_digest(tokens[0]), password="a long and new passphrase 7", context=CONTEXT,
        ),
    ] * 2)

    assert sum(isinstance(o, User) for o in outcomes) == 1, outcomes
    assert [o.code for o in outcomes if isinstance(o, MemberChangeRefused)] in (["invitation_gone"], ["has_account"])
    assert User.objects.filter(email="twice@example.test").count() == 1


def test_inviting_again_while_the_first_link_is_used_waits_instead_of_deadlocking(transactional_db, clock,
                                                                                   monkeypatch):
    # Both take the merchant's row first (dashboard/invitations.py). In their former orders, the acceptance held the
    # invitation's row and then asked for the Owner's membership, the new invitation held the membership and then
    # asked for the invitation: PostgreSQL found a deadlock, and one of the two was a 500. The acceptance is slowed
    # down between the two, which made that happen every time.
    merchant = helpers.create_merchant("Race Merchant")
    owner = helpers.create_member(merchant, Role.OWNER)
    tokens = []
    invitations.invite(actor=owner, merchant=merchant, email="again@example.test", role=Role.VIEW,
                       code=helpers.current_code(owner), context=CONTEXT, link_for=tokens.append)
    clock.next_code_step()
    accepting = threading.local()
    is_owner_now = members.is_owner_now

    def slowed_when_accepting(user, merchant, *, lock=True):
        if getattr(accepting, "now", False):
            time.sleep(0.5)
        return is_owner_now(user, merchant, lock=lock)

    monkeypatch.setattr(members, "is_owner_now", slowed_when_accepting)

    def accept():
        accepting.now = True
        return invitations.create_account_and_accept(
            digest=invitations.token_digest(tokens[0]), password="a long and new passphrase 7", context=CONTEXT,
        )

    def invite_again():
        time.sleep(0.1)  # once the acceptance holds its first lock
        return invitations.invite(actor=owner, merchant=merchant, email="again@example.test", role=Role.EXCHANGE,
                                  code=helpers.current_code(owner), context=CONTEXT, link_for=tokens.append)

    joined, invited = run_at_once([accept, invite_again])

    assert isinstance(joined, User), joined
    assert isinstance(invited, MemberChangeRefused) and invited.code == "already_member", invited
    assert Membership.objects.get(user=joined).role == Role.VIEW
    assert not Invitation.objects.still_open().exists()
