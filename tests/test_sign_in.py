"""Sign-in: email and password, then a 2FA code; what each refusal says; expiry, `next`, sign-out, the audit rows."""
import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY

from dashboard.forms import SIGN_IN_REFUSED_MESSAGE
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Role
from dashboard.two_factor import MALFORMED_CODE_MESSAGE, backup_code_digest
from dashboard.views import PENDING_SIGN_IN_KEY

from . import helpers

IP = "198.51.100.23"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) pytest-browser/1.0"
REUSED_MESSAGE = "That code has already been used. Wait for your app to show a new code."
WRONG_MESSAGE = "That code is not right. Check your authenticator app and try again."
TIMED_OUT_MESSAGE = "Your sign-in timed out. Enter your email and password again."
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.fixture
def browser(db):
    """A client that, like a browser, sends an address and a user agent with every request."""
    return Client(REMOTE_ADDR=IP, HTTP_USER_AGENT=USER_AGENT)


def password_step(client, email, password=helpers.PASSWORD, next_url=None):
    data = {"email": email, "password": password}
    if next_url is not None:
        data["next"] = next_url
    return client.post(reverse("dashboard:sign-in"), data)


def code_step(client, code):
    return client.post(reverse("dashboard:sign-in-code"), {"code": code})


def is_verified(client) -> bool:
    session = client.session
    return SESSION_KEY in session and DEVICE_ID_SESSION_KEY in session


def is_authenticated(client) -> bool:
    return SESSION_KEY in client.session


def wrong_code(user) -> str:
    """Six digits that no step in the device's tolerance window accepts."""
    device = helpers.totp_device(user)
    valid = {helpers.current_code(user, steps_ahead=s) for s in range(-device.tolerance - 1, device.tolerance + 2)}
    return next(f"{n:06d}" for n in range(1000, 10**6) if f"{n:06d}" not in valid)


def form_errors(response) -> list[str]:
    form = response.context["form"]
    return [message for messages in form.errors.values() for message in messages]


def merchant_url(name, merchant):
    return reverse(name, kwargs={"merchant_slug": merchant.slug})


# The whole sign-in


def test_password_then_code_signs_in_and_opens_the_dashboard(client, owner, merchant, clock):
    response = password_step(client, "Owner@ACME.test")

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:sign-in-code")
    assert not is_authenticated(client)
    page = client.get(reverse("dashboard:sign-in-code"))
    assert "owner@acme.test" in page.content.decode()

    response = code_step(client, helpers.current_code(owner))

    assert response.status_code == 302
    assert is_verified(client)
    assert int(client.session[SESSION_KEY]) == owner.pk
    assert PENDING_SIGN_IN_KEY not in client.session
    home = client.get(response["Location"])
    assert home["Location"] == merchant_url("dashboard:merchant-home", merchant)
    keys_page = client.get(merchant_url("keys:list", merchant))
    assert keys_page.status_code == 200


def test_a_code_typed_with_a_space_in_the_middle_is_accepted(client, owner, clock):
    password_step(client, owner.email)
    code = helpers.current_code(owner)

    code_step(client, f" {code[:3]} {code[3:]} ")

    assert is_verified(client)


def test_a_session_planted_before_sign_in_is_worthless_after_it(client, owner, merchant, clock):
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    planted = SessionStore()
    planted["planted"] = True
    planted.create()
    client.cookies[settings.SESSION_COOKIE_NAME] = planted.session_key

    password_step(client, owner.email)
    after_password = client.session.session_key
    code_step(client, helpers.current_code(owner))

    assert is_verified(client)
    assert planted.session_key not in (after_password, client.session.session_key)
    attacker = Client()
    attacker.cookies[settings.SESSION_COOKIE_NAME] = planted.session_key
    assert attacker.get(merchant_url("keys:list", merchant)).status_code == 302
    assert SESSION_KEY not in attacker.session


# No page on the password alone

PROTECTED_PAGES = [
    pytest.param("dashboard:home", False, id="home"),
    pytest.param("dashboard:account-security", False, id="account-security"),
    pytest.param("dashboard:merchant-home", True, id="merchant-home"),
    pytest.param("dashboard:overview", True, id="overview"),
    pytest.param("dashboard:activity", True, id="activity"),
    pytest.param("dashboard:support", True, id="support"),
    pytest.param("keys:list", True, id="keys-list"),
    pytest.param("keys:generate", True, id="keys-generate"),
    pytest.param("admin:index", False, id="admin"),
]


def _url(name, needs_merchant, merchant):
    return merchant_url(name, merchant) if needs_merchant else reverse(name)


@pytest.mark.parametrize(("name", "needs_merchant"), PROTECTED_PAGES)
def test_after_the_password_step_every_page_sends_back_to_sign_in(client, merchant, clock, name, needs_merchant):
    staff_owner = helpers.create_user("staff-owner@acme.test", staff=True)
    merchant.memberships.create(user=staff_owner, role=Role.OWNER)
    password_step(client, staff_owner.email)
    url = _url(name, needs_merchant, merchant)

    response = client.get(url, follow=True)

    assert response.status_code == 200
    assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")
    assert all(status == 302 for _, status in response.redirect_chain)
    assert not is_authenticated(client)


@pytest.mark.parametrize(("name", "needs_merchant"), PROTECTED_PAGES)
def test_a_session_authenticated_without_a_device_opens_no_page(client, merchant, name, needs_merchant):
    staff_owner = helpers.create_user("staff-owner@acme.test", staff=True)
    merchant.memberships.create(user=staff_owner, role=Role.OWNER)
    client.force_login(staff_owner)  # the password, and nothing else

    response = client.get(_url(name, needs_merchant, merchant), follow=True)

    assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")
    assert response.redirect_chain, "the page itself must not be served"


def test_a_post_to_a_merchant_page_on_the_password_alone_changes_nothing(client, owner, merchant, clock):
    from keys.models import ApiKey

    password_step(client, owner.email)

    response = client.post(merchant_url("keys:generate", merchant), {"name": "Sneaky", "code": "000000"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))
    assert ApiKey.objects.count() == 0


# Refused credentials: one message, no account enumeration


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("owner@acme.test", "wrong password, long enough", id="wrong password"),
        pytest.param("nobody@acme.test", helpers.PASSWORD, id="unknown email"),
        pytest.param("owner@acme.test", helpers.PASSWORD.upper(), id="password in the wrong case"),
        pytest.param("owner@acme.test", helpers.PASSWORD + " ", id="password with a trailing space"),
    ],
)
def test_refused_credentials_get_one_message_and_nothing_is_started(client, owner, email, password):
    response = password_step(client, email, password)

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [SIGN_IN_REFUSED_MESSAGE]
    assert SIGN_IN_REFUSED_MESSAGE in response.content.decode()
    assert PENDING_SIGN_IN_KEY not in client.session
    assert not is_authenticated(client)
    assert client.get(reverse("dashboard:sign-in-code"))["Location"] == reverse("dashboard:sign-in")


def test_unknown_email_and_wrong_password_pages_are_identical(client, owner):
    def page(email, password):
        html = password_step(client, email, password).content.decode()
        html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)
        return html.replace(email, "EMAIL")

    assert page("nobody@acme.test", helpers.PASSWORD) == page("owner@acme.test", "wrong password, long enough")


def test_an_inactive_user_is_refused_with_the_same_message(client, owner):
    owner.is_active = False
    owner.save()

    response = password_step(client, owner.email)

    assert response.context["form"].non_field_errors() == [SIGN_IN_REFUSED_MESSAGE]
    assert PENDING_SIGN_IN_KEY not in client.session


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        pytest.param("", helpers.PASSWORD, "Enter your email address.", id="empty email"),
        pytest.param("owner@acme.test", "", "Enter your password.", id="empty password"),
        pytest.param("not an email", helpers.PASSWORD, "Enter a valid email address.", id="not an email"),
        pytest.param("a" * 300 + "@acme.test", helpers.PASSWORD, None, id="email too long"),
        pytest.param("owner@acme.test", "x" * 5000, None, id="password too long"),
        pytest.param("owner\x00@acme.test", helpers.PASSWORD, None, id="null character"),
    ],
)
def test_malformed_sign_in_input_gets_a_message_not_a_500(client, owner, email, password, message):
    response = password_step(client, email, password)

    assert response.status_code == 200
    errors = form_errors(response)
    assert errors
    if message:
        assert message in errors
        assert message in response.content.decode()
    assert PENDING_SIGN_IN_KEY not in client.session


# Refused codes: a clear message each, never a 500


def _code_attacks():
    return [
        pytest.param(lambda code: "", "Enter your 2FA code.", id="empty"),
        pytest.param(lambda code: code[:5], MALFORMED_CODE_MESSAGE, id="too short"),
        pytest.param(lambda code: code + "1", MALFORMED_CODE_MESSAGE, id="seven digits"),
        pytest.param(lambda code: "0" + code, MALFORMED_CODE_MESSAGE, id="extra leading zero"),
        pytest.param(lambda code: code * 6, MALFORMED_CODE_MESSAGE, id="too long"),
        pytest.param(lambda code: code + " " * 40 + "1", MALFORMED_CODE_MESSAGE, id="padded past the limit"),
        pytest.param(lambda code: code.translate(FULL_WIDTH), MALFORMED_CODE_MESSAGE, id="full-width digits"),
        pytest.param(lambda code: code.translate(ARABIC_INDIC), MALFORMED_CODE_MESSAGE, id="arabic-indic digits"),
        pytest.param(lambda code: "+" + code, MALFORMED_CODE_MESSAGE, id="plus sign"),
        pytest.param(lambda code: f"{int(code):x}", MALFORMED_CODE_MESSAGE, id="hexadecimal"),
        pytest.param(lambda code: code + "\x00", None, id="null character"),
    ]


@pytest.mark.parametrize(("tamper", "message"), _code_attacks())
def test_a_malformed_code_gets_a_clear_message_and_consumes_nothing(client, owner, clock, tamper, message):
    password_step(client, owner.email)
    device = helpers.totp_device(owner)
    code = helpers.current_code(owner)

    response = code_step(client, tamper(code))

    assert response.status_code == 200
    errors = form_errors(response)
    assert errors
    if message:
        assert errors == [message]
        assert message in response.content.decode()
    assert not is_authenticated(client)
    device.refresh_from_db()
    assert device.throttling_failure_count == 0
    assert device.last_t == -1
    # The genuine code still works: the malformed attempt neither used it up nor throttled the device.
    assert code_step(client, code).status_code == 302
    assert is_verified(client)


def test_a_wrong_code_is_refused_and_counted(client, owner, clock):
    password_step(client, owner.email)

    response = code_step(client, wrong_code(owner))

    assert response.status_code == 200
    assert form_errors(response) == [WRONG_MESSAGE]
    assert not is_authenticated(client)
    assert helpers.totp_device(owner).throttling_failure_count == 1


def test_a_code_used_to_sign_in_is_refused_the_second_time(owner, clock):
    first, second = Client(), Client()
    code = helpers.current_code(owner)
    password_step(first, owner.email)
    code_step(first, code)
    assert is_verified(first)

    password_step(second, owner.email)
    response = code_step(second, code)

    assert form_errors(response) == [REUSED_MESSAGE]
    assert REUSED_MESSAGE in response.content.decode()
    assert not is_authenticated(second)
    # The next code the app shows is accepted.
    clock.next_code_step()
    code_step(second, helpers.current_code(owner))
    assert is_verified(second)


def test_a_code_from_an_earlier_step_is_refused_after_a_later_one_was_used(owner, clock):
    earlier = helpers.current_code(owner)
    clock.next_code_step()
    first, second = Client(), Client()
    password_step(first, owner.email)
    code_step(first, helpers.current_code(owner))

    password_step(second, owner.email)
    response = code_step(second, earlier)

    assert "code" in response.context["form"].errors
    assert not is_authenticated(second)


def test_throttling_starts_after_wrong_codes_and_says_when_to_retry(client, owner, clock):
    password_step(client, owner.email)
    wrong, right = wrong_code(owner), helpers.current_code(owner)

    assert form_errors(code_step(client, wrong)) == [WRONG_MESSAGE]  # 12:00:00, 1st failure
    response = code_step(client, right)
    assert form_errors(response) == ["After a wrong code the next one must wait. Try again in 1 second (at 12:00:01 UTC)."]

    clock.advance(1)
    assert form_errors(code_step(client, wrong)) == [WRONG_MESSAGE]  # 12:00:01, 2nd failure
    response = code_step(client, right)
    assert form_errors(response) == ["After a wrong code the next one must wait. Try again in 2 seconds (at 12:00:03 UTC)."]
    assert "Try again in 2 seconds" in response.content.decode()

    clock.advance(1)
    response = code_step(client, right)
    assert form_errors(response) == ["After a wrong code the next one must wait. Try again in 1 second (at 12:00:03 UTC)."]
    assert not is_authenticated(client)
    device = helpers.totp_device(owner)
    assert device.throttling_failure_count == 2  # being throttled does not count as a failure
    assert device.last_t == -1

    clock.advance(1)
    code_step(client, right)
    assert is_verified(client)
    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_the_retry_delay_doubles_with_each_failure(client, owner, clock):
    password_step(client, owner.email)
    wrong = wrong_code(owner)
    seen = []
    for _ in range(4):
        code_step(client, wrong)
        message = form_errors(code_step(client, wrong))[0]
        seen.append(re.search(r"Try again in (\d+) seconds?", message).group(1))
        clock.advance(int(seen[-1]))

    assert seen == ["1", "2", "4", "8"]


def test_a_backup_code_signs_in_once(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890", "2345678901"])
    first, second = Client(), Client()
    password_step(first, owner.email)
    code_step(first, "12345-67890")
    assert is_verified(first)

    password_step(second, owner.email)
    response = code_step(second, "1234567890")

    assert form_errors(response) == ["That backup code is not right or has already been used: each one works once."]
    assert not is_authenticated(second)
    assert list(owner.staticdevice_set.get().token_set.values_list("token", flat=True)) == [backup_code_digest("2345678901")]
    clock.advance(1)  # the refused backup code throttles the backup-code device for a second
    code_step(second, "23456 78901")
    assert is_verified(second)


# The pending sign-in


@pytest.mark.parametrize(("seconds", "signed_in"), [(599, True), (600, True), (601, False), (3600, False)])
def test_a_pending_sign_in_expires_after_ten_minutes(client, owner, clock, seconds, signed_in):
    password_step(client, owner.email)
    clock.advance(seconds)

    response = client.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(owner)}, follow=True)

    assert is_verified(client) is signed_in
    if not signed_in:
        assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")
        assert TIMED_OUT_MESSAGE in response.content.decode()
        # The code was not spent on the expired attempt.
        assert helpers.totp_device(owner).last_t == -1


def test_the_code_page_without_a_password_step_sends_to_sign_in(client, owner):
    response = client.get(reverse("dashboard:sign-in-code"))

    assert response["Location"] == reverse("dashboard:sign-in")


def test_signing_in_as_someone_else_ends_the_previous_verified_session(owner_client, merchant, clock):
    other = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")

    password_step(owner_client, other.email)

    assert not is_authenticated(owner_client)
    assert owner_client.get(reverse("dashboard:home"))["Location"].startswith(reverse("dashboard:sign-in"))


# `next`: only same-site addresses


@pytest.mark.parametrize(
    "next_url",
    [
        "/account/security/",
        "/account/security/?tab=1#codes",
        "http://testserver/account/security/",
    ],
)
def test_next_is_honoured_for_same_site_addresses(client, owner, clock, next_url):
    password_step(client, owner.email, next_url=next_url)

    response = code_step(client, helpers.current_code(owner))

    assert response["Location"] == next_url


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "https:evil.example",
        "http://testserver.evil.example/",
        "http://evil.example\\@testserver/",
        "javascript:alert(1)",
        " //evil.example/",
    ],
)
def test_next_pointing_to_another_site_is_refused(client, owner, clock, next_url):
    password_step(client, owner.email, next_url=next_url)

    response = code_step(client, helpers.current_code(owner))

    assert is_verified(client)
    assert response["Location"] == reverse("dashboard:home")


def test_next_from_the_login_redirect_leads_back_to_the_page_asked_for(client, owner, merchant, clock):
    activity = merchant_url("dashboard:activity", merchant)
    sign_in_page = client.get(activity, follow=True)
    assert sign_in_page.request["PATH_INFO"] == reverse("dashboard:sign-in")
    assert f'name="next" value="{activity}"' in sign_in_page.content.decode()

    password_step(client, owner.email, next_url=activity)
    response = code_step(client, helpers.current_code(owner))

    assert response["Location"] == activity
    assert client.get(activity).status_code == 200


@pytest.mark.parametrize(("next_url", "landing"), [("/account/security/", "/account/security/"),
                                                   ("https://evil.example/", "/")])
def test_the_sign_in_page_sends_a_verified_user_on_safely(owner_client, next_url, landing):
    response = owner_client.get(reverse("dashboard:sign-in"), {"next": next_url})

    assert response.status_code == 302
    assert response["Location"] == landing


# Sign-out


def test_sign_out_by_get_is_not_allowed_and_keeps_the_session(owner_client):
    response = owner_client.get(reverse("dashboard:sign-out"))

    assert response.status_code == 405
    assert is_verified(owner_client)
    assert not AuditEvent.objects.filter(action=AuditAction.SIGN_OUT).exists()


def test_sign_out_ends_the_session(owner_client, owner, merchant):
    session_key = owner_client.session.session_key

    response = owner_client.post(reverse("dashboard:sign-out"), follow=True)

    assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")
    assert "You have signed out." in response.content.decode()
    assert not is_authenticated(owner_client)
    assert owner_client.session.session_key != session_key
    assert owner_client.get(merchant_url("keys:list", merchant))["Location"].startswith(reverse("dashboard:sign-in"))
    event = AuditEvent.objects.get(action=AuditAction.SIGN_OUT)
    assert event.actor == owner


def test_the_sign_out_form_is_a_post_on_every_dashboard_page(owner_client, merchant):
    html = owner_client.get(merchant_url("dashboard:support", merchant)).content.decode()

    forms = re.findall(r"<form[^>]*>", html)
    sign_out = [tag for tag in forms if f'action="{reverse("dashboard:sign-out")}"' in tag]
    assert sign_out and all('method="post"' in tag.lower() for tag in sign_out)


# The audit trail of sign-ins


def test_a_successful_sign_in_is_audited_with_address_and_user_agent(browser, owner, clock):
    password_step(browser, owner.email)
    code_step(browser, helpers.current_code(owner))

    event = AuditEvent.objects.get(action=AuditAction.SIGN_IN)
    assert (event.actor, event.actor_email, event.outcome) == (owner, owner.email, AuditOutcome.SUCCEEDED)
    assert (event.ip_address, event.user_agent) == (IP, USER_AGENT)
    verified = AuditEvent.objects.get(action=AuditAction.OTP_VERIFIED)
    assert (verified.actor, verified.ip_address, verified.user_agent) == (owner, IP, USER_AGENT)
    assert verified.details == {"purpose": "sign-in", "kind": "totp"}


@pytest.mark.parametrize(
    ("email", "password", "reason", "known"),
    [
        ("owner@acme.test", "wrong password, long enough", "wrong password", True),
        ("nobody@acme.test", helpers.PASSWORD, "unknown email", False),
    ],
)
def test_a_refused_password_is_audited_with_address_and_user_agent(browser, owner, email, password, reason, known):
    password_step(browser, email, password)

    event = AuditEvent.objects.get()
    assert event.action == AuditAction.SIGN_IN_FAILED
    assert event.outcome == AuditOutcome.REFUSED
    assert event.actor == (owner if known else None)
    assert event.actor_email == email
    assert (event.ip_address, event.user_agent) == (IP, USER_AGENT)
    assert event.details == {"reason": reason}
    assert password not in str(event.details)


def test_refused_and_throttled_codes_at_sign_in_are_audited(browser, owner, clock):
    password_step(browser, owner.email)
    code_step(browser, wrong_code(owner))
    code_step(browser, helpers.current_code(owner))
    code_step(browser, "12x456")

    events = list(AuditEvent.objects.order_by("id"))
    assert [(e.action, e.outcome) for e in events] == [
        (AuditAction.OTP_FAILED, AuditOutcome.REFUSED),
        (AuditAction.OTP_THROTTLED, AuditOutcome.REFUSED),
        (AuditAction.SIGN_IN_FAILED, AuditOutcome.REFUSED),
    ]
    assert [e.details.get("reason") for e in events] == ["wrong", "throttled", "malformed 2FA code"]
    assert all((e.actor, e.ip_address, e.user_agent) == (owner, IP, USER_AGENT) for e in events)


def test_a_very_long_user_agent_is_cut_to_fit(owner, clock):
    client = Client(HTTP_USER_AGENT="A" * 1000)
    password_step(client, owner.email)
    code_step(client, helpers.current_code(owner))

    assert AuditEvent.objects.get(action=AuditAction.SIGN_IN).user_agent == "A" * 300



def test_a_user_agent_with_nul_characters_is_audited_without_them_never_a_500(client, owner):
    # PostgreSQL refuses text containing NUL; the audit trail stores the User-Agent header as sent.
    response = client.post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "not the password at all"},
                           HTTP_USER_AGENT="Mozilla/5.0\x00<script>")

    assert response.status_code == 200
    assert SIGN_IN_REFUSED_MESSAGE in response.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.SIGN_IN_FAILED)
    assert event.user_agent == "Mozilla/5.0<script>"
