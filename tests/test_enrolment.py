"""Enrolment: a user without an authenticator scans a QR code or types the key, confirms a code, gets backup codes."""
import re
from base64 import b32decode
from urllib.parse import unquote

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.forms import AUTHENTICATOR_CODE_MESSAGE
from dashboard.models import AuditAction, AuditEvent, Role
from dashboard.two_factor import backup_code_digest, pending_authenticator

from . import helpers

BACKUP_CODE_SHAPE = re.compile(r"<code>(\d{5}-\d{5})</code>")
WRONG_MESSAGE = "That code is not right. Check your authenticator app and try again."

@pytest.fixture
def newcomer(merchant):
    """A member who has never set up an authenticator."""
    user = helpers.create_user("newcomer@acme.test", with_device=False)
    merchant.memberships.create(user=user, role=Role.OWNER)
    return user


def password_step(client, user):
    return client.post(reverse("dashboard:sign-in"), {"email": user.email, "password": helpers.PASSWORD})


def start_enrolment(client, user) -> TOTPDevice:
    """The password step, and the device the enrolment page would show (without drawing its QR code)."""
    assert password_step(client, user)["Location"] == reverse("dashboard:enrol")
    return pending_authenticator(user)


def pending_device(user) -> TOTPDevice:
    return TOTPDevice.objects.get(user=user, confirmed=False)


def code_of(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def wrong_code_for(device: TOTPDevice) -> str:
    valid = {
        f"{TOTP(device.bin_key, drift=d).token():06d}" for d in range(-device.tolerance - 1, device.tolerance + 2)
    }
    return next(f"{n:06d}" for n in range(1000, 10**6) if f"{n:06d}" not in valid)


def confirm(client, code):
    return client.post(reverse("dashboard:enrol"), {"code": code})


def is_verified(client) -> bool:
    return SESSION_KEY in client.session and DEVICE_ID_SESSION_KEY in client.session


def test_the_password_step_sends_a_user_without_an_authenticator_to_enrolment(client, newcomer, clock):
    response = password_step(client, newcomer)

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:enrol")
    assert client.get(reverse("dashboard:sign-in-code"))["Location"] == reverse("dashboard:enrol")


def test_the_enrolment_page_shows_an_inline_qr_code_and_the_key_to_type(client, newcomer, clock):
    password_step(client, newcomer)

    response = client.get(reverse("dashboard:enrol"))

    assert response.status_code == 200
    html = response.content.decode()
    device = pending_device(newcomer)
    assert re.search(r"<svg[^>]*>.*</svg>", html, re.S)
    assert not re.search(r'src="(https?:)?//', html)  # drawn here: no image or script from another site
    manual_key = response.context["manual_key"]
    assert manual_key in html
    assert b32decode(manual_key.replace(" ", "") + "=" * (-len(manual_key.replace(" ", "")) % 8)) == device.bin_key
    assert "newcomer@acme.test" in html
    assert response.context["form"]["code"].field.widget.attrs["autocomplete"] == "one-time-code"


def test_reloading_the_enrolment_page_keeps_the_same_key(client, newcomer, clock):
    password_step(client, newcomer)

    first = client.get(reverse("dashboard:enrol")).context["manual_key"]
    second = client.get(reverse("dashboard:enrol")).context["manual_key"]

    assert first == second
    assert TOTPDevice.objects.filter(user=newcomer).count() == 1


def test_enrolment_on_the_password_alone_opens_no_dashboard_page(client, newcomer, merchant, clock):
    password_step(client, newcomer)
    client.get(reverse("dashboard:enrol"))

    for url in (reverse("dashboard:home"), reverse("keys:list", kwargs={"merchant_slug": merchant.slug})):
        assert client.get(url)["Location"].startswith(reverse("dashboard:sign-in"))
    assert SESSION_KEY not in client.session


@pytest.mark.parametrize(
    ("make_code", "message"),
    [
        pytest.param(wrong_code_for, WRONG_MESSAGE, id="wrong code"),
        # The app's code only: there are no backup codes yet, so the message does not mention them.
        pytest.param(lambda device: code_of(device)[:5], AUTHENTICATOR_CODE_MESSAGE, id="five digits"),
        pytest.param(lambda device: "", AUTHENTICATOR_CODE_MESSAGE, id="empty"),
        pytest.param(lambda device: code_of(device) + "0000", AUTHENTICATOR_CODE_MESSAGE, id="backup-code shape"),
        pytest.param(lambda device: "１２３４５６", AUTHENTICATOR_CODE_MESSAGE, id="full-width digits"),
        pytest.param(lambda device: "abcd-efgh", AUTHENTICATOR_CODE_MESSAGE, id="letters"),
    ],
)
def test_a_refused_code_leaves_the_device_unconfirmed(client, newcomer, clock, make_code, message):
    device = start_enrolment(client, newcomer)

    response = confirm(client, make_code(device))

    assert response.status_code == 200
    assert response.context["form"].errors["code"] == [message]
    assert message in response.content.decode()
    assert response.context["manual_key"]  # the page is shown again, to try once more
    device.refresh_from_db()
    assert device.confirmed is False
    assert not StaticToken.objects.filter(device__user=newcomer).exists()
    assert SESSION_KEY not in client.session
    assert not AuditEvent.objects.filter(action=AuditAction.DEVICE_ENROLLED).exists()


def test_the_right_code_confirms_shows_ten_backup_codes_and_signs_in(client, newcomer, merchant, clock):
    device = start_enrolment(client, newcomer)

    response = confirm(client, code_of(device))

    assert response.status_code == 200
    device.refresh_from_db()
    assert device.confirmed is True
    shown = BACKUP_CODE_SHAPE.findall(response.content.decode())
    assert len(shown) == 10 == len(set(shown))
    stored = StaticToken.objects.filter(device__user=newcomer, device__confirmed=True).values_list("token", flat=True)
    assert sorted(backup_code_digest(code.replace("-", "")) for code in shown) == sorted(stored)
    assert is_verified(client)
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    home = client.get(reverse("dashboard:home"))
    assert home["Location"] == reverse("dashboard:merchant-home", kwargs={"merchant_slug": merchant.slug})
    assert [e.action for e in AuditEvent.objects.order_by("id")] == [
        AuditAction.DEVICE_ENROLLED, AuditAction.BACKUP_CODES_GENERATED, AuditAction.SIGN_IN,
    ]


def test_backup_codes_are_shown_once_only(client, newcomer, clock):
    shown = BACKUP_CODE_SHAPE.findall(confirm(client, code_of(start_enrolment(client, newcomer))).content.decode())
    assert len(shown) == 10

    again = client.get(reverse("dashboard:enrol"))
    dashboard = client.get(again["Location"], follow=True)
    security = client.get(reverse("dashboard:account-security"))

    assert again["Location"] == reverse("dashboard:sign-in")  # the enrolment is over
    assert dashboard.status_code == security.status_code == 200
    for page in (again, dashboard, security):
        html = page.content.decode()
        assert not any(code in html or code.replace("-", "") in html for code in shown)
    assert "10 of 10" in security.content.decode()
    session_values = str(dict(client.session.items()))
    assert not any(code.replace("-", "") in session_values for code in shown)



def form_token(browser, url) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', browser.get(url).content.decode())[1]


def test_reloading_the_backup_codes_page_says_they_were_shown_once_and_where_to_make_new(newcomer, clock):
    browser = Client(enforce_csrf_checks=True)  # as a browser: each form carries the token of its page
    signed_in = browser.post(reverse("dashboard:sign-in"), {
        "csrfmiddlewaretoken": form_token(browser, reverse("dashboard:sign-in")),
        "email": newcomer.email, "password": helpers.PASSWORD,
    })
    assert signed_in["Location"] == reverse("dashboard:enrol")
    form = {"csrfmiddlewaretoken": form_token(browser, reverse("dashboard:enrol")),
            "code": code_of(pending_authenticator(newcomer))}
    shown = BACKUP_CODE_SHAPE.findall(browser.post(reverse("dashboard:enrol"), form).content.decode())
    assert len(shown) == 10
    events = AuditEvent.objects.count()

    reloaded = browser.post(reverse("dashboard:enrol"), form)  # a reload sends the same form again

    page = reloaded.content.decode()
    assert reloaded.status_code == 403
    assert "your backup codes, which are shown once only" in page
    assert f'href="{reverse("dashboard:account-security")}"' in page
    assert not any(code in page for code in shown)
    assert is_verified(browser) and AuditEvent.objects.count() == events
    assert StaticToken.objects.filter(device__user=newcomer).count() == 10


def test_a_form_that_expired_elsewhere_still_says_to_go_back_and_reload(owner, clock):
    browser = Client(enforce_csrf_checks=True)
    helpers.sign_in_verified(browser, owner)

    page = browser.post(reverse("dashboard:time-zone"), {"time_zone": "UTC"}).content.decode()

    assert "Go back, reload the page and try again." in page and "backup codes" not in page

def test_a_backup_code_from_enrolment_works_at_the_next_sign_in(client, newcomer, clock):
    shown = BACKUP_CODE_SHAPE.findall(confirm(client, code_of(start_enrolment(client, newcomer))).content.decode())

    later = Client()
    assert password_step(later, newcomer)["Location"] == reverse("dashboard:sign-in-code")
    later.post(reverse("dashboard:sign-in-code"), {"code": shown[3]})

    assert is_verified(later)
    assert StaticToken.objects.filter(device__user=newcomer).count() == 9


def test_the_code_that_confirmed_enrolment_cannot_sign_in_again(client, newcomer, clock):
    code = code_of(start_enrolment(client, newcomer))
    confirm(client, code)

    later = Client()
    password_step(later, newcomer)
    response = later.post(reverse("dashboard:sign-in-code"), {"code": code})

    assert response.context["form"].errors["code"] == [
        "That code has already been used. Wait for your app to show a new code."
    ]
    assert SESSION_KEY not in later.session


def test_wrong_codes_at_enrolment_are_throttled(client, newcomer, clock):
    device = start_enrolment(client, newcomer)
    confirm(client, wrong_code_for(device))

    response = confirm(client, code_of(device))

    assert response.context["form"].errors["code"] == ["After a wrong code the next one must wait. Try again in 1 second (at 12:00:01 UTC)."]
    device.refresh_from_db()
    assert device.confirmed is False
    clock.advance(1)
    confirm(client, code_of(device))
    device.refresh_from_db()
    assert device.confirmed is True


def test_a_user_with_an_authenticator_cannot_enrol_another_on_the_password_alone(client, owner, clock):
    password_step(client, owner)

    page = client.get(reverse("dashboard:enrol"))
    post = client.post(reverse("dashboard:enrol"), {"code": "123456"})

    assert page["Location"] == reverse("dashboard:sign-in-code")
    assert post["Location"] == reverse("dashboard:sign-in-code")
    assert list(TOTPDevice.objects.filter(user=owner).values_list("confirmed", flat=True)) == [True]


def test_the_enrolment_page_without_a_password_step_sends_to_sign_in(client, newcomer):
    assert client.get(reverse("dashboard:enrol"))["Location"] == reverse("dashboard:sign-in")
    assert not TOTPDevice.objects.filter(user=newcomer).exists()


def test_an_abandoned_enrolment_expires_after_ten_minutes(client, newcomer, clock):
    device = start_enrolment(client, newcomer)
    clock.advance(601)

    response = confirm(client, code_of(device))

    assert response["Location"] == reverse("dashboard:sign-in")
    device.refresh_from_db()
    assert device.confirmed is False
    assert SESSION_KEY not in client.session


def test_after_a_staff_reset_the_user_enrols_a_new_key(client, owner, clock):
    old_key = helpers.totp_device(owner).key
    TOTPDevice.objects.filter(user=owner).delete()

    device = start_enrolment(client, owner)
    confirm(client, code_of(device))

    assert device.key != old_key
    assert is_verified(client)
    assert list(TOTPDevice.objects.filter(user=owner).values_list("pk", "confirmed")) == [(device.pk, True)]


def reset_in_the_admin(device) -> None:
    """Platform staff delete one of the user's devices in the admin panel: a 2FA reset."""
    staff = helpers.create_user("staff@platform.test", staff=True)
    staff_client = Client()
    helpers.sign_in_verified(staff_client, staff)
    opts = device._meta
    response = staff_client.post(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[device.pk]), {"post": "yes"}
    )
    assert response.status_code == 302


def test_after_a_staff_reset_the_enrolment_page_says_who_reset_it_and_when(clock, client, owner):
    reset_in_the_admin(helpers.totp_device(owner))
    reset = AuditEvent.objects.get(action=AuditAction.DEVICE_RESET)
    clock.advance(300)

    start_enrolment(client, owner)
    page = client.get(reverse("dashboard:enrol")).content.decode()

    assert "Your two-factor authentication was reset by platform staff on" in page
    assert f'<time datetime="{reset.created_at.isoformat()}">' in page
    assert "If you did not ask support for this" in page


def test_a_first_enrolment_says_nothing_of_a_reset(client, newcomer, owner, clock):
    reset_in_the_admin(helpers.totp_device(owner))  # another user's reset

    start_enrolment(client, newcomer)
    page = client.get(reverse("dashboard:enrol")).content.decode()

    assert "Set up two-factor authentication" in page
    assert "reset by platform staff" not in page


def test_a_reset_of_backup_codes_alone_leaves_the_authenticator_and_asks_for_its_code(client, owner, clock):
    reset_in_the_admin(helpers.give_backup_codes(owner, ["1234567890"]))

    response = password_step(client, owner)

    assert response["Location"] == reverse("dashboard:sign-in-code")


def test_the_backup_codes_page_offers_them_as_a_text_file_and_for_print(client, newcomer, clock):
    page = confirm(client, code_of(start_enrolment(client, newcomer))).content.decode()
    shown = BACKUP_CODE_SHAPE.findall(page)

    link = re.search(r'<a class="button" href="data:text/plain;charset=utf-8,([^"]*)" download="([^"]+)">', page)
    assert link is not None
    text = unquote(link.group(1))
    assert link.group(2) == "sandbox-backup-codes.txt"
    assert text.startswith("Processing sandbox: backup codes for newcomer@acme.test\nMade 2026-11-27 12:00 UTC.")
    assert text.splitlines()[3:] == shown
    assert '<button type="button" class="button" data-print hidden>Print</button>' in page


def test_a_reset_of_an_earlier_account_with_the_same_address_is_not_mentioned(clock, client, owner, merchant):
    reset_in_the_admin(helpers.totp_device(owner))
    owner.delete()
    clock.advance(60)
    successor = helpers.create_member(merchant, Role.VIEW, "owner@acme.test")
    TOTPDevice.objects.filter(user=successor).delete()

    start_enrolment(client, successor)
    page = client.get(reverse("dashboard:enrol")).content.decode()

    assert "reset by platform staff" not in page
