"""An Owner's Members tab: another member's role changed, or the member removed, each with a fresh 2FA code,
audited; Owners and the Owner role stay the platform staff's."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from dashboard import members
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Membership, Role

from . import helpers
from .helpers import fresh_code
from .sandbox_support import CTX


@pytest.fixture
def viewer(merchant):
    return helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")


def membership_of(user, merchant) -> Membership:
    return Membership.objects.get(user=user, merchant=merchant)


def url(name: str, merchant, membership: Membership | None = None) -> str:
    kwargs = {"merchant_slug": merchant.slug}
    if membership is not None:
        kwargs["membership_id"] = membership.pk
    return reverse(name, kwargs=kwargs)


def memberships() -> list[tuple]:
    return list(Membership.objects.order_by("pk").values_list("pk", "user_id", "merchant_id", "role"))


def member_events() -> list[tuple]:
    return list(
        AuditEvent.objects.filter(action__startswith="membership_").order_by("pk")
        .values_list("action", "outcome", "target", "details")
    )


# The tab


def test_the_members_tab_lists_everyone_with_their_role_and_what_it_allows(owner_client, owner, viewer, merchant):
    page = owner_client.get(url("dashboard:members", merchant))
    content = page.content.decode()

    assert page.status_code == 200
    assert "owner@acme.test" in content and "(you)" in content
    assert "viewer@acme.test" in content
    assert "creates payment requests" in content
    assert url("dashboard:member-role-form", merchant, membership_of(viewer, merchant)) in content
    assert url("dashboard:member-remove-form", merchant, membership_of(viewer, merchant)) in content
    # An Owner's row offers nothing: staff change Owners.
    assert url("dashboard:member-role-form", merchant, membership_of(owner, merchant)) not in content
    assert [tab.label for tab in page.context["nav_tabs"]].count("Members") == 1


@pytest.mark.parametrize("role", [Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED])
def test_members_who_are_not_owners_have_no_members_tab_and_are_refused_it(client, merchant, owner, role):
    member = helpers.create_member(merchant, role)
    helpers.sign_in_verified(client, member)

    response = client.get(url("dashboard:members", merchant))

    assert response.status_code == 403
    home = client.get(url("dashboard:support", merchant))
    assert "Members" not in [tab.label for tab in home.context["nav_tabs"]]


# Changing a role


def test_an_owner_changes_a_members_role_and_it_takes_effect_at_once(owner_client, owner, viewer, merchant, clock):
    viewer_client = Client()
    helpers.sign_in_verified(viewer_client, viewer)
    assert viewer_client.get(url("dashboard:overview", merchant)).status_code == 200
    membership = membership_of(viewer, merchant)

    response = owner_client.post(url("dashboard:member-role", merchant, membership), {
        "role": Role.RESTRICTED, "code": fresh_code(clock, owner),
    })

    assert response.status_code == 302 and response["Location"] == url("dashboard:members", merchant)
    assert membership_of(viewer, merchant).role == Role.RESTRICTED
    assert member_events() == [(
        AuditAction.MEMBERSHIP_ROLE_CHANGED, AuditOutcome.SUCCEEDED, "user:viewer@acme.test",
        {"from": "view", "to": "restricted"},
    )]
    assert viewer_client.get(url("dashboard:overview", merchant)).status_code == 403
    listed = owner_client.get(response["Location"])
    assert "viewer@acme.test now has the Restricted role." in [str(m) for m in listed.context["messages"]]
    activity = owner_client.get(url("dashboard:activity", merchant)).content.decode()
    assert "Member role changed" in activity and "View → Restricted" in activity


@pytest.mark.parametrize(("posted", "field", "message"), [
    ({"role": "owner"}, "role", "Choose one of the roles listed."),
    ({"role": "superuser"}, "role", "Choose one of the roles listed."),
    ({"role": ""}, "role", "Choose a role."),
    ({"role": "exchange", "code": "12"}, "code", None),
    ({"role": "exchange", "code": "000000"}, "code",
     "That code is not right. Check your authenticator app and try again."),
])
def test_a_bad_role_change_is_refused_next_to_its_field_and_changes_nothing(
    owner_client, owner, viewer, merchant, clock, posted, field, message
):
    membership = membership_of(viewer, merchant)
    before = memberships()
    data = {"code": fresh_code(clock, owner), **posted}

    response = owner_client.post(url("dashboard:member-role", merchant, membership), data)

    assert response.status_code == 200
    errors = response.context["form"].errors[field]
    assert errors and (message is None or errors == [message])
    assert memberships() == before
    assert not any(action == AuditAction.MEMBERSHIP_ROLE_CHANGED and outcome == AuditOutcome.SUCCEEDED
                   for action, outcome, *_ in member_events())


def test_giving_the_same_role_again_is_said_and_changes_nothing(owner_client, owner, viewer, merchant, clock):
    before = memberships()

    response = owner_client.post(url("dashboard:member-role", merchant, membership_of(viewer, merchant)), {
        "role": Role.VIEW, "code": fresh_code(clock, owner),
    })

    assert response.context["form"].non_field_errors() == ["viewer@acme.test already has the View role."]
    assert memberships() == before


def test_an_owners_role_cannot_be_changed_nor_the_owner_removed_by_another_owner(
    owner_client, owner, merchant, clock
):
    second = membership_of(helpers.create_member(merchant, Role.OWNER, "second@acme.test"), merchant)
    before = memberships()

    page = owner_client.get(url("dashboard:member-role-form", merchant, second)).content.decode()
    assert "Only platform staff change or remove an Owner" in page and 'name="code"' not in page
    for name, data in (("dashboard:member-role", {"role": Role.VIEW}), ("dashboard:member-remove", {})):
        response = owner_client.post(url(name, merchant, second), {**data, "code": fresh_code(clock, owner)})
        assert response.context["form"].non_field_errors() == [
            "Only platform staff change or remove an Owner: contact support."
        ]

    assert memberships() == before
    assert [(action, outcome, details) for action, outcome, _, details in member_events()] == [
        (AuditAction.MEMBERSHIP_ROLE_CHANGED, AuditOutcome.REFUSED, {"reason": "owner_member"}),
        (AuditAction.MEMBERSHIP_REMOVED, AuditOutcome.REFUSED, {"reason": "owner_member"}),
    ]


def test_an_owner_cannot_reach_a_membership_of_another_merchant(owner_client, owner, merchant, clock):
    other = helpers.create_merchant("Other Merchant")
    stranger = membership_of(helpers.create_member(other, Role.VIEW), other)
    before = memberships()

    assert owner_client.get(url("dashboard:member-role-form", merchant, stranger)).status_code == 404
    response = owner_client.post(url("dashboard:member-remove", merchant, stranger), {"code": fresh_code(clock, owner)})

    assert response.status_code == 404
    assert memberships() == before


def test_a_get_to_an_action_changes_nothing_and_leads_to_its_form(owner_client, viewer, merchant):
    membership = membership_of(viewer, merchant)

    response = owner_client.get(url("dashboard:member-remove", merchant, membership))

    assert response.status_code == 405
    assert url("dashboard:member-remove-form", merchant, membership) in response.content.decode()
    assert membership_of(viewer, merchant).role == Role.VIEW


# Removing a member


def test_an_owner_removes_a_member_who_then_cannot_open_the_merchant(owner_client, owner, viewer, merchant, clock):
    viewer_client = Client()
    helpers.sign_in_verified(viewer_client, viewer)
    membership = membership_of(viewer, merchant)

    response = owner_client.post(
        url("dashboard:member-remove", merchant, membership), {"code": fresh_code(clock, owner)},
    )

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert viewer.__class__.objects.filter(pk=viewer.pk).exists()
    assert member_events() == [
        (AuditAction.MEMBERSHIP_REMOVED, AuditOutcome.SUCCEEDED, "user:viewer@acme.test", {"role": "view"}),
    ]
    assert viewer_client.get(url("dashboard:overview", merchant)).status_code == 404


def test_a_wrong_code_removes_no_one(owner_client, viewer, merchant):
    before = memberships()

    response = owner_client.post(url("dashboard:member-remove", merchant, membership_of(viewer, merchant)), {
        "code": "000000",
    })

    assert response.context["form"].errors["code"]
    assert memberships() == before


# The services, called by someone who is no longer an Owner


def test_a_demoted_owner_is_refused_by_the_service_and_it_is_audited(owner, viewer, merchant, clock):
    Membership.objects.filter(user=owner, merchant=merchant).update(role=Role.VIEW)
    before = memberships()

    with pytest.raises(members.MemberChangeRefused) as refused:
        members.remove_member(
            actor=owner, merchant=merchant, membership_id=membership_of(viewer, merchant).pk,
            code=fresh_code(clock, owner), context=CTX,
        )

    assert refused.value.code == "not_owner"
    assert memberships() == before
    assert member_events() == [(AuditAction.MEMBERSHIP_REMOVED, AuditOutcome.REFUSED, "", {"reason": "not_owner"})]


def test_the_service_never_gives_the_owner_role(owner, viewer, merchant, clock):
    before = memberships()

    with pytest.raises(members.MemberChangeRefused) as refused:
        members.change_role(
            actor=owner, merchant=merchant, membership_id=membership_of(viewer, merchant).pk, role=Role.OWNER,
            code=fresh_code(clock, owner), context=CTX,
        )

    assert refused.value.code == "owner_role"
    assert memberships() == before
