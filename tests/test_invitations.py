"""Owners invite people by email; the link makes an account or lets the invited account join, once, for 7 days."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import invitations
from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Invitation, Membership, Role, User

from . import helpers
from .helpers import fresh_code

NEW_PASSWORD = "correct horse battery staple 42"


def invite_url(merchant, action: str = "member-invite") -> str:
    return reverse(f"dashboard:{action}", kwargs={"merchant_slug": merchant.slug})


def invite(owner_client, owner, merchant, clock, email="new.person@example.test", role=Role.VIEW):
    return owner_client.post(invite_url(merchant), {"email": email, "role": role, "code": fresh_code(clock, owner)})


def link_in(message) -> str:
    return re.search(r"http://testserver(/invitations/[^/\s]+/)", message.body).group(1)


INVITATION_PAGE = "/invitation/"


def opened(link: str, client: Client | None = None) -> Client:
    """A browser that followed the email's link: the token is in its session, and the page has none in its address."""
    client = client or Client()
    response = client.get(link)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:invitation") == INVITATION_PAGE
    return client


def rows() -> tuple[list, list, list]:
    return (list(Invitation.objects.order_by("pk").values()), list(Membership.objects.order_by("pk").values()),
            list(User.objects.order_by("pk").values_list("pk", "email")))


@pytest.fixture
def sent(owner_client, owner, merchant, clock, django_capture_on_commit_callbacks):
    """An invitation of new.person@example.test as View, and the path of its link."""
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(owner_client, owner, merchant, clock)
    assert response.status_code == 302
    [message] = mail.outbox
    return link_in(message)


# Inviting


def test_an_owner_invites_an_address_which_gets_one_email_with_a_link(owner_client, owner, merchant, clock, sent):
    [message] = mail.outbox
    invitation = Invitation.objects.get()

    assert message.to == ["new.person@example.test"]
    assert message.subject == "[Acme Payments] You are invited to the sandbox dashboard"
    assert "owner@acme.test invites you to Acme Payments" in message.body and "View role" in message.body
    token = sent.split("/")[2]
    assert invitation.token_digest == invitations.token_digest(token) and token not in str(Invitation.objects.values())
    assert (invitation.email, invitation.role, invitation.invited_by) == ("new.person@example.test", "view", owner)
    assert invitation.expires_at == timezone.now() + timedelta(days=7)
    event = AuditEvent.objects.get(action=AuditAction.MEMBER_INVITED)
    assert (event.actor, event.target, event.details) == (owner, "user:new.person@example.test", {"role": "view"})
    page = owner_client.get(reverse("dashboard:members", kwargs={"merchant_slug": merchant.slug})).content.decode()
    assert "Invitations not yet accepted" in page and "new.person@example.test" in page


@pytest.mark.parametrize(("posted", "field", "message"), [
    ({"email": "not an address"}, "email", "Enter a valid email address."),
    ({"email": ""}, "email", "Enter the email address to invite."),
    ({"role": "owner"}, "role", "Choose one of the roles listed."),
    ({"code": "000000"}, "code", "That code is not right. Check your authenticator app and try again."),
])
def test_a_bad_invitation_is_refused_next_to_its_field_and_sends_nothing(
    owner_client, owner, merchant, clock, posted, field, message
):
    before = rows()
    data = {"email": "new.person@example.test", "role": "view", "code": fresh_code(clock, owner), **posted}

    response = owner_client.post(invite_url(merchant), data)

    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    assert rows() == before and not mail.outbox


def test_a_member_is_not_invited_again(owner_client, owner, merchant, clock):
    helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    before = rows()

    response = invite(owner_client, owner, merchant, clock, email="Viewer@ACME.test")

    assert response.context["form"].non_field_errors() == ["viewer@acme.test is already a member of Acme Payments."]
    assert rows() == before and not mail.outbox


def test_inviting_the_same_address_again_replaces_the_first_link(
    owner_client, owner, merchant, clock, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invite(owner_client, owner, merchant, clock, role=Role.EXCHANGE)

    assert Client().get(sent).status_code == 404
    assert opened(link_in(mail.outbox[1])).get(INVITATION_PAGE).status_code == 200
    assert Invitation.objects.still_open().get().role == Role.EXCHANGE


def test_an_owner_withdraws_an_invitation_and_its_link_stops_working(owner_client, owner, merchant, clock, sent):
    invitation = Invitation.objects.get()
    url = reverse("dashboard:invitation-withdraw",
                  kwargs={"merchant_slug": merchant.slug, "invitation_id": invitation.pk})

    response = owner_client.post(url, {"code": fresh_code(clock, owner)})

    assert response.status_code == 302
    assert Invitation.objects.get().withdrawn_at == timezone.now()
    gone = Client().get(sent)
    assert gone.status_code == 404 and "This invitation link no longer works" in gone.content.decode()
    withdrawn = AuditEvent.objects.filter(action=AuditAction.INVITATION_WITHDRAWN, outcome=AuditOutcome.SUCCEEDED)
    assert withdrawn.count() == 1


@pytest.mark.parametrize("role", [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED])
def test_members_who_are_not_owners_cannot_invite(client, merchant, owner, clock, role):
    member = helpers.create_member(merchant, role)
    helpers.sign_in_verified(client, member)
    before = rows()

    response = client.post(invite_url(merchant), {"email": "x@example.test", "role": "view",
                                                  "code": fresh_code(clock, member)})

    assert response.status_code == 403
    assert rows() == before and not mail.outbox


# The link, for an address without an account


def test_the_link_makes_an_account_with_the_chosen_password_that_must_set_up_2fa(merchant, sent):
    visitor = opened(sent)
    page = visitor.get(INVITATION_PAGE).content.decode()
    assert "Choose a password" in page and "new.person@example.test" in page
    assert sent.split("/")[2] not in page  # the token, in no page

    response = visitor.post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})

    assert response.status_code == 302 and response["Location"] == reverse("dashboard:sign-in")
    user = User.objects.get(email="new.person@example.test")
    assert user.check_password(NEW_PASSWORD)
    assert Membership.objects.get(user=user).role == Role.VIEW
    assert Invitation.objects.get().accepted_at == timezone.now()
    joined = AuditEvent.objects.get(action=AuditAction.MEMBERSHIP_ADDED)
    assert (joined.actor, joined.merchant) == (user, merchant)
    assert joined.details == {"role": "view", "invited_by": "owner@acme.test"}
    # No page on the password alone: the first sign-in asks for an authenticator.
    signed = visitor.post(reverse("dashboard:sign-in"), {"email": user.email, "password": NEW_PASSWORD})
    assert signed["Location"] == reverse("dashboard:enrol")
    assert visitor.get(sent).status_code == 404  # used
    assert visitor.get(INVITATION_PAGE).status_code == 404


@pytest.mark.parametrize(("password", "again", "field"), [
    ("short", "short", "password"),
    ("password123456", "password123456", "password"),
    ("new.person@example.test", "new.person@example.test", "password"),
    (NEW_PASSWORD, NEW_PASSWORD + "x", "password_again"),
    ("", "", "password"),
])
def test_a_weak_or_mistyped_password_is_refused_next_to_it_and_makes_nothing(sent, password, again, field):
    before = rows()

    response = opened(sent).post(INVITATION_PAGE, {"password": password, "password_again": again})

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert rows() == before


# The link, for an address with an account


def test_an_existing_account_signs_in_through_the_link_and_joins(merchant, owner_client, owner, clock,
                                                                 django_capture_on_commit_callbacks):
    person = helpers.create_user("person@example.test")
    with django_capture_on_commit_callbacks(execute=True):
        invite(owner_client, owner, merchant, clock, email="person@example.test", role=Role.LIMITS)
    link = link_in(mail.outbox[0])
    browser = opened(link)

    page = browser.get(INVITATION_PAGE).content.decode()
    assert "Sign in as person@example.test to accept" in page and "Choose a password" not in page
    assert f'href="{reverse("dashboard:sign-in")}?next=%2Finvitation%2F"' in page
    assert browser.post(INVITATION_PAGE).status_code == 200 and not Membership.objects.filter(user=person).exists()
    signed = browser.post(reverse("dashboard:sign-in"),
                          {"email": person.email, "password": helpers.PASSWORD, "next": INVITATION_PAGE})
    assert signed.status_code == 302
    coded = browser.post(reverse("dashboard:sign-in-code"), {"code": fresh_code(clock, person)})
    assert coded["Location"] == INVITATION_PAGE  # the session kept the invitation through the sign-in
    response = browser.post(INVITATION_PAGE)

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:merchant-home", kwargs={"merchant_slug": merchant.slug})
    assert Membership.objects.get(user=person, merchant=merchant).role == Role.LIMITS
    assert browser.get(link).status_code == 404 and browser.get(INVITATION_PAGE).status_code == 404


def test_another_signed_in_account_cannot_accept_someone_elses_invitation(merchant, owner_client, owner, clock,
                                                                          django_capture_on_commit_callbacks):
    helpers.create_user("person@example.test")
    with django_capture_on_commit_callbacks(execute=True):
        invite(owner_client, owner, merchant, clock, email="person@example.test")
    link = link_in(mail.outbox[0])
    other, intruder = Client(), helpers.create_user("intruder@example.test")
    helpers.sign_in_verified(other, intruder)
    before = rows()

    opened(link, other)
    page = other.get(INVITATION_PAGE).content.decode()
    response = other.post(INVITATION_PAGE)

    assert "You are signed in as intruder@example.test" in page
    assert f'action="{reverse("dashboard:sign-out")}"' in page and "Sign in as person@example.test" not in page
    assert "This invitation is for person@example.test" in response.content.decode()
    assert rows() == before and not Membership.objects.filter(user=intruder).exists()
    refused = AuditEvent.objects.get(action=AuditAction.MEMBERSHIP_ADDED)
    assert (refused.actor, refused.outcome) == (intruder, AuditOutcome.REFUSED)
    assert refused.details == {"reason": "other_account"}


# Links that do not work


def test_a_link_older_than_seven_days_no_longer_works(sent, clock):
    visitor = opened(sent)
    clock.advance(7 * 24 * 3600 + 1)
    before = rows()

    response = visitor.post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})

    assert response.status_code == 404
    assert Client().get(sent).status_code == 404
    assert rows() == before


@pytest.mark.parametrize("token", ["x", "a" * 43, "a" * 101, "%00"])
def test_a_made_up_link_is_the_404_page_saying_why(db, token):
    response = Client().get(f"/invitations/{token}/")

    assert response.status_code == 404
    assert "This invitation link no longer works" in response.content.decode()


@pytest.mark.parametrize("change", ["demoted", "removed", "deleted"])
def test_an_invitation_stops_working_when_its_sender_is_no_longer_an_owner(owner, merchant, sent, change):
    visitor = opened(sent)
    membership = Membership.objects.get(user=owner, merchant=merchant)
    if change == "demoted":
        membership.role = Role.VIEW
        membership.save()
    elif change == "removed":
        membership.delete()
    else:
        owner.delete()
    before = rows()

    response = visitor.post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})

    assert response.status_code == 404
    assert "Ask an Owner of the merchant to invite you again" in response.content.decode()
    assert Client().get(sent).status_code == 404
    assert rows() == before


def test_an_address_that_made_its_account_meanwhile_is_told_to_sign_in(sent):
    visitor = opened(sent)
    assert "Choose a password" in visitor.get(INVITATION_PAGE).content.decode()
    helpers.create_user("new.person@example.test")

    page = visitor.get(INVITATION_PAGE).content.decode()

    assert "Sign in as new.person@example.test to accept" in page


def test_making_the_account_is_refused_if_the_address_got_one_after_the_page_was_shown(merchant, sent):
    helpers.create_user("new.person@example.test")
    before = rows()

    with pytest.raises(invitations.MemberChangeRefused) as refused:
        invitations.create_account_and_accept(digest=invitations.token_digest(sent.split("/")[2]), password=NEW_PASSWORD,
                                              context=RequestContext("198.51.100.7", "pytest"))

    assert refused.value.code == "has_account"
    assert rows() == before
    event = AuditEvent.objects.get(action=AuditAction.MEMBERSHIP_ADDED)
    assert (event.outcome, event.details) == (AuditOutcome.REFUSED, {"reason": "has_account"})


def test_an_email_that_cannot_be_sent_is_said_and_the_invitation_stands(owner_client, owner, merchant, clock,
                                                                       monkeypatch):
    def refuse_to_send(*args, **kwargs):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr(invitations, "send_mail", refuse_to_send)

    response = invite(owner_client, owner, merchant, clock)

    listed = owner_client.get(response["Location"])
    assert [str(m) for m in listed.context["messages"]] == [
        "The invitation of new.person@example.test is saved, but its email could not be sent. "
        "Invite the address again to send a new link."
    ]
    assert Invitation.objects.still_open().count() == 1


def test_an_owner_cannot_withdraw_another_merchants_invitation(owner_client, owner, merchant, clock):
    other = helpers.create_merchant("Other Merchant")
    foreign = Invitation.objects.create(merchant=other, email="x@example.test", role=Role.VIEW, token_digest="1" * 64,
                                        invited_by=owner, expires_at=timezone.now() + timedelta(days=7))
    url = reverse("dashboard:invitation-withdraw", kwargs={"merchant_slug": merchant.slug, "invitation_id": foreign.pk})

    response = owner_client.post(url, {"code": fresh_code(clock, owner)})

    assert response.status_code == 404
    assert Invitation.objects.get(pk=foreign.pk).withdrawn_at is None


def test_staff_withdraw_invitations_in_the_admin_and_it_is_audited(merchant, sent):
    staff = helpers.create_user("staff@platform.test", staff=True)
    staff_client = Client()
    helpers.sign_in_verified(staff_client, staff)
    invitation = Invitation.objects.get()

    response = staff_client.post(reverse("admin:dashboard_invitation_changelist"),
                                 {"action": "withdraw_invitations", "_selected_action": [invitation.pk]})

    assert response.status_code == 302
    assert Invitation.objects.get().withdrawn_at == timezone.now()
    assert Client().get(sent).status_code == 404
    event = AuditEvent.objects.get(action=AuditAction.INVITATION_WITHDRAWN)
    assert (event.actor, event.merchant, event.details) == (staff, merchant, {"role": "view", "by_staff": True})


def test_the_invitation_page_refuses_a_post_without_the_csrf_token(sent):
    browser = opened(sent, Client(enforce_csrf_checks=True))
    before = rows()

    response = browser.post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})

    assert response.status_code == 403
    assert rows() == before


def test_the_token_is_in_the_email_only_not_in_logs_pages_rows_or_the_session_after_use(
    owner_client, owner, merchant, clock, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        invite(owner_client, owner, merchant, clock)
    link = link_in(mail.outbox[0])
    token = link.split("/")[2]
    visitor = Client()
    responses = [visitor.get(link), visitor.get(INVITATION_PAGE),
                 visitor.post(INVITATION_PAGE, {"password": "short", "password_again": "short"}),
                 visitor.post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})]
    responses.append(owner_client.get(reverse("dashboard:members", kwargs={"merchant_slug": merchant.slug})))
    responses.append(owner_client.get(reverse("dashboard:activity", kwargs={"merchant_slug": merchant.slug})))

    assert User.objects.filter(email="new.person@example.test").exists()
    assert token not in caplog.text
    assert all(token not in response.content.decode() and token not in str(response.headers) for response in responses)
    assert token not in str(list(AuditEvent.objects.values())) + str(list(Invitation.objects.values()))
    assert "invitation_digest" not in visitor.session
    assert token not in str(visitor.session.items())


def test_the_members_tab_does_not_list_an_invitation_whose_sender_is_no_longer_an_owner(owner_client, owner, merchant,
                                                                                          clock, sent):
    second = helpers.create_member(merchant, Role.OWNER, "second@acme.test")
    Membership.objects.filter(user=owner, merchant=merchant).update(role=Role.VIEW)
    second_client = Client()
    helpers.sign_in_verified(second_client, second)

    page = second_client.get(reverse("dashboard:members", kwargs={"merchant_slug": merchant.slug})).content.decode()

    assert "Invitations not yet accepted" not in page


def test_an_account_made_for_the_address_between_the_check_and_the_creation_is_a_refusal(sent, monkeypatch):
    create_user = User.objects.create_user

    def account_made_meanwhile(email, password=None, **extra):
        create_user(email=email, password="made elsewhere at this moment 9")  # as another request would
        return create_user(email=email, password=password, **extra)

    monkeypatch.setattr(User.objects, "create_user", account_made_meanwhile)
    before = rows()

    response = opened(sent).post(INVITATION_PAGE, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "This address has an account already: sign in to accept the invitation."
    ]
    assert rows() == before
