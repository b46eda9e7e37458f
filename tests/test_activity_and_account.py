"""The audit trail: append-only rows, the Owner's Activity tab; and the Account security page."""
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django_otp.plugins.otp_static.models import StaticToken

from dashboard.audit import RequestContext, record
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Role

from dashboard.two_factor import backup_code_digest

from . import helpers

BACKUP_CODE_SHAPE = re.compile(r"<code>(\d{5}-\d{5})</code>")
REUSED_MESSAGE = "That code has already been used. Wait for your app to show a new code."
WRONG_MESSAGE = "That code is not right. Check your authenticator app and try again."
WRONG_BACKUP_CODE_MESSAGE = "That backup code is not right or has already been used: each one works once."


def activity(merchant):
    return reverse("dashboard:activity", kwargs={"merchant_slug": merchant.slug})


def regenerate(client, code):
    return client.post(reverse("dashboard:backup-codes"), {"code": code})


def backup_tokens(user) -> list[str]:
    return sorted(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))


def wrong_code(user) -> str:
    valid = {helpers.current_code(user, steps_ahead=s) for s in range(-2, 3)}
    return next(f"{n:06d}" for n in range(1000, 10**6) if f"{n:06d}" not in valid)


# Append-only


@pytest.fixture
def event(owner, merchant):
    return record(AuditAction.SIGN_IN, actor=owner, merchant=merchant, context=RequestContext("198.51.100.1", "ua"))


def test_an_audit_event_cannot_be_saved_again(event):
    event.action = AuditAction.SIGN_OUT
    event.actor_email = "someone-else@acme.test"

    with pytest.raises(RuntimeError, match="append-only"):
        event.save()

    fresh = AuditEvent.objects.get(pk=event.pk)
    assert (fresh.action, fresh.actor_email) == (AuditAction.SIGN_IN, "owner@acme.test")


def test_an_audit_event_cannot_be_deleted(event):
    with pytest.raises(RuntimeError, match="append-only"):
        event.delete()

    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_events_cannot_be_deleted_in_bulk(event):
    with pytest.raises(RuntimeError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).delete()

    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_trail_keeps_who_it_was_after_the_user_is_deleted(event, owner):
    owner.delete()

    fresh = AuditEvent.objects.get(pk=event.pk)
    assert fresh.actor is None
    assert fresh.actor_email == "owner@acme.test"


def test_the_audit_rows_text_names_no_secret(event):
    assert str(event) == "Sign-in (Succeeded) by owner@acme.test"


# Activity tab


def make_events(merchant, count, *, prefix="event"):
    start = timezone.now() - timedelta(hours=count)
    return AuditEvent.objects.bulk_create(
        AuditEvent(
            merchant=merchant, action=AuditAction.KEY_RENAMED, actor_email="owner@acme.test",
            target=f"{prefix}-{n:02d}", created_at=start + timedelta(minutes=n),
        )
        for n in range(1, count + 1)
    )


def targets(response):
    return [e.target for e in response.context["events"]]


def test_activity_lists_the_merchants_events_newest_first_in_pages_of_50(owner_client, merchant, clock):
    events = make_events(merchant, 51)

    first = owner_client.get(activity(merchant))
    html = first.content.decode()
    older_link = f'href="?before={events[1].pk}"'
    second = owner_client.get(activity(merchant), {"before": events[1].pk})

    assert first.status_code == second.status_code == 200
    assert targets(first) == [f"event-{n:02d}" for n in range(51, 1, -1)]
    assert older_link in html and "Newer" not in html
    assert html.index("event-51") < html.index("event-50") < html.index("event-02")
    assert "event-01" not in html
    assert targets(second) == ["event-01"]
    assert f'href="?after={events[0].pk}"' in second.content.decode() and "Older" not in second.content.decode()
    # Back from the oldest page: the newest page again.
    assert targets(owner_client.get(activity(merchant), {"after": events[0].pk})) == targets(first)


def walk(client, merchant, direction: str, start: dict) -> list[list[str]]:
    """Follow the Older (or Newer) links from the page ``start`` opens, collecting each page's targets."""
    pages, query = [], start
    while True:
        response = client.get(activity(merchant), query)
        pages.append(targets(response))
        link = response.context["page"].older_than if direction == "older" else response.context["page"].newer_than
        if link is None:
            return pages
        query = {"before" if direction == "older" else "after": link}


def test_older_and_newer_links_walk_every_event_once_in_order_even_with_equal_times(owner_client, merchant, clock):
    # 120 events, three at each instant: the (time, id) order decides within an instant.
    at = timezone.now() - timedelta(days=1)
    AuditEvent.objects.bulk_create(
        AuditEvent(merchant=merchant, action=AuditAction.KEY_RENAMED, target=f"e{n:03d}",
                   created_at=at + timedelta(seconds=n // 3))
        for n in range(120)
    )
    newest_first = [f"e{n:03d}" for n in range(119, -1, -1)]

    down = walk(owner_client, merchant, "older", {})
    assert [len(page) for page in down] == [50, 50, 20]
    assert sum(down, []) == newest_first

    up = walk(owner_client, merchant, "newer", {"before": AuditEvent.objects.get(target="e020").pk})
    assert up[0] == newest_first[-20:]
    assert sum(reversed(up), []) == newest_first


@pytest.mark.parametrize("query", [
    {"before": "abc"}, {"before": "-5"}, {"before": "１２"}, {"before": "9" * 40}, {"before": ""},
    {"after": "999999"}, {"before": "999999"}, {"after": "1e3"},
])
def test_a_mangled_or_unknown_page_link_opens_the_newest_page(owner_client, merchant, clock, query):
    make_events(merchant, 3)

    response = owner_client.get(activity(merchant), query)

    assert response.status_code == 200
    assert targets(response) == ["event-03", "event-02", "event-01"]


def test_a_link_naming_another_merchants_event_shows_nothing_of_theirs(owner_client, merchant, clock):
    other = helpers.create_merchant("Rival Payments")
    theirs = make_events(other, 60, prefix="theirs")
    make_events(merchant, 2, prefix="ours")

    for query in ({"before": theirs[30].pk}, {"after": theirs[30].pk}):
        response = owner_client.get(activity(merchant), query)
        assert targets(response) == ["ours-02", "ours-01"]


def test_events_at_the_same_instant_are_ordered_by_arrival(owner_client, merchant, clock):
    for n in range(1, 4):
        AuditEvent.objects.create(merchant=merchant, action=AuditAction.KEY_RENAMED, target=f"same-{n}")

    assert targets(owner_client.get(activity(merchant))) == ["same-3", "same-2", "same-1"]


def test_activity_shows_no_other_merchants_events_nor_sign_ins(owner_client, owner, merchant, clock):
    other = helpers.create_merchant("Rival Payments")
    make_events(merchant, 2, prefix="ours")
    make_events(other, 3, prefix="theirs")
    record(AuditAction.SIGN_IN, actor=owner)
    record(AuditAction.OTP_FAILED, actor=owner, outcome=AuditOutcome.REFUSED)

    response = owner_client.get(activity(merchant))

    assert targets(response) == ["ours-02", "ours-01"]
    assert "theirs" not in response.content.decode()


@pytest.mark.parametrize("page", ["0", "-1", "999", "abc", "1.5", "", "2' OR 1=1"])
def test_an_odd_page_number_shows_a_page_not_an_error(owner_client, merchant, clock, page):
    make_events(merchant, 51)

    response = owner_client.get(activity(merchant), {"page": page})

    assert response.status_code == 200
    assert targets(response) in (targets(owner_client.get(activity(merchant))), ["event-01"])


def test_activity_with_no_events_says_so(owner_client, merchant):
    response = owner_client.get(activity(merchant))

    assert "No activity yet." in response.content.decode()


def test_activity_escapes_what_users_typed(owner_client, merchant, clock):
    AuditEvent.objects.create(merchant=merchant, action=AuditAction.KEY_RENAMED, target="<script>alert(1)</script>")

    html = owner_client.get(activity(merchant)).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_activity_says_what_an_event_was_about_and_why_it_was_refused_in_words(owner_client, owner, merchant, clock):
    public_key = "sbx_" + "c" * 40
    for reason in ("another_key_active", "wrong", "a reason of the future"):
        AuditEvent.objects.create(merchant=merchant, action=AuditAction.KEY_ACTIVATED, outcome=AuditOutcome.REFUSED,
                                  target=f"api_key:{public_key}", details={"reason": reason})
    AuditEvent.objects.create(merchant=merchant, action=AuditAction.MEMBERSHIP_ADDED, target="user:new@acme.test")

    html = owner_client.get(activity(merchant)).content.decode()

    assert f"API key {public_key}" in html and f"api_key:{public_key}" not in html
    assert "User new@acme.test" in html
    assert "(another key was active)" in html and "(wrong 2FA code)" in html
    assert "(a reason of the future)" in html  # one the page has no words for yet, as recorded


@pytest.mark.parametrize("action, details, shown", [
    (AuditAction.KEY_RENAMED, {"from": "", "to": "Checkout"}, "no name → “Checkout”"),
    (AuditAction.KEY_RENAMED, {"from": "Checkout", "to": ""}, "“Checkout” → no name"),
    (AuditAction.KEY_ALLOWLIST_CHANGED, {"from": [], "to": ["203.0.113.7", "2001:db8::/32"]},
     "any IP address → 203.0.113.7, 2001:db8::/32"),
    (AuditAction.MEMBERSHIP_ROLE_CHANGED, {"from": "view", "to": "owner"}, "View → Owner"),
])
def test_activity_says_what_a_change_was_from_and_to(owner_client, merchant, action, details, shown):
    AuditEvent.objects.create(merchant=merchant, action=action, target="api_key:sbx_" + "d" * 40, details=details)

    html = owner_client.get(activity(merchant)).content.decode()

    assert f'<span class="muted">{escape(shown)}</span>' in html


# Account security: recent sign-ins


def test_account_security_lists_the_users_recent_sign_ins(owner, merchant, clock):
    other = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    browser = Client(REMOTE_ADDR="198.51.100.77", HTTP_USER_AGENT="Firefox/140 (pytest)")
    browser.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "not the password at all"})
    browser.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    browser.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(owner)})
    record(AuditAction.SIGN_IN, actor=other, context=RequestContext("203.0.113.200", "someone else's browser"))

    response = browser.get(reverse("dashboard:account-security"))

    sign_ins = list(response.context["sign_ins"])
    assert [(e.action, e.outcome) for e in sign_ins] == [
        (AuditAction.SIGN_IN, AuditOutcome.SUCCEEDED),
        (AuditAction.SIGN_IN_FAILED, AuditOutcome.REFUSED),
    ]
    html = response.content.decode()
    assert "198.51.100.77" in html and "Firefox/140 (pytest)" in html
    assert "203.0.113.200" not in html


def test_account_security_shows_the_ten_latest_sign_ins(owner_client, owner, clock):
    for n in range(12):
        record(AuditAction.SIGN_IN, actor=owner, context=RequestContext(f"198.51.100.{n}", ""))

    response = owner_client.get(reverse("dashboard:account-security"))

    assert [e.ip_address for e in response.context["sign_ins"]] == [f"198.51.100.{n}" for n in range(11, 1, -1)]


# Account security: regenerating backup codes


def test_regenerating_backup_codes_with_a_fresh_code_replaces_the_old_ones(owner_client, owner, clock):
    helpers.give_backup_codes(owner, ["1234567890", "2345678901"])

    response = regenerate(owner_client, helpers.current_code(owner))

    assert response.status_code == 200
    shown = BACKUP_CODE_SHAPE.findall(response.content.decode())
    assert len(shown) == 10 == len(set(shown))
    assert sorted(backup_code_digest(code.replace("-", "")) for code in shown) == backup_tokens(owner)
    assert "Your previous backup codes no longer work." in response.content.decode()
    assert AuditEvent.objects.filter(action=AuditAction.BACKUP_CODES_GENERATED, actor=owner).count() == 1
    # The old codes no longer sign in; a new one does.
    later = Client()
    later.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    refused = later.post(reverse("dashboard:sign-in-code"), {"code": "12345-67890"})
    assert refused.context["form"].errors["code"] == [WRONG_BACKUP_CODE_MESSAGE]
    clock.advance(1)
    later.post(reverse("dashboard:sign-in-code"), {"code": shown[0]})
    assert later.get(reverse("dashboard:account-security")).status_code == 200
    assert "9 of 10" in later.get(reverse("dashboard:account-security")).content.decode()


def test_regenerated_codes_are_not_shown_again(owner_client, owner, clock):
    shown = BACKUP_CODE_SHAPE.findall(regenerate(owner_client, helpers.current_code(owner)).content.decode())

    html = owner_client.get(reverse("dashboard:account-security")).content.decode()

    assert "10 of 10" in html
    assert not any(code in html or code.replace("-", "") in html for code in shown)


def test_the_code_used_to_sign_in_cannot_regenerate_backup_codes(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890"])
    client = Client()
    code = helpers.current_code(owner)
    client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": helpers.PASSWORD})
    client.post(reverse("dashboard:sign-in-code"), {"code": code})

    response = regenerate(client, code)

    assert response.status_code == 200
    assert response.context["form"].errors["code"] == [REUSED_MESSAGE]
    assert REUSED_MESSAGE in response.content.decode()
    assert backup_tokens(owner) == [backup_code_digest("1234567890")]
    assert not AuditEvent.objects.filter(action=AuditAction.BACKUP_CODES_GENERATED).exists()
    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED, details__reason="reused").count() == 1


@pytest.mark.parametrize(
    ("make_code", "message"),
    [
        pytest.param(wrong_code, WRONG_MESSAGE, id="wrong"),
        pytest.param(lambda user: "", "Enter your 2FA code.", id="empty"),
        pytest.param(lambda user: "12345", None, id="too short"),
        pytest.param(lambda user: "１２３４５６", None, id="full-width digits"),
        pytest.param(lambda user: "9" * 40, None, id="too long"),
    ],
)
def test_a_refused_code_keeps_the_old_backup_codes(owner_client, owner, clock, make_code, message):
    helpers.give_backup_codes(owner, ["1234567890"])

    response = regenerate(owner_client, make_code(owner))

    assert response.status_code == 200
    errors = response.context["form"].errors["code"]
    assert errors
    if message:
        assert errors == [message]
    assert not BACKUP_CODE_SHAPE.findall(response.content.decode())
    assert backup_tokens(owner) == [backup_code_digest("1234567890")]
    assert not AuditEvent.objects.filter(action=AuditAction.BACKUP_CODES_GENERATED).exists()


def test_regenerating_is_throttled_after_a_wrong_code(owner_client, owner, clock):
    regenerate(owner_client, wrong_code(owner))

    response = regenerate(owner_client, helpers.current_code(owner))

    assert response.context["form"].errors["code"] == [
        "After a wrong code the next one must wait. Try again in 1 second (at 12:00:01 UTC)."
    ]
    assert backup_tokens(owner) == []
    clock.advance(1)
    regenerate(owner_client, helpers.current_code(owner))
    assert len(backup_tokens(owner)) == 10


def test_account_security_needs_both_factors(client, owner):
    client.force_login(owner)

    get = client.get(reverse("dashboard:account-security"))
    post = regenerate(client, "123456")

    assert get["Location"].startswith(reverse("dashboard:sign-in"))
    assert post["Location"].startswith(reverse("dashboard:sign-in"))
    assert backup_tokens(owner) == []
