"""dashboard.two_factor: parsing codes, the fresh-code check every sensitive action calls, backup codes."""
import threading
from datetime import datetime, timezone

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django_otp.plugins.otp_static.models import StaticToken

from dashboard.audit import RequestContext
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Role
from dashboard.two_factor import (
    MALFORMED_CODE_MESSAGE,
    CodeKind,
    CodeRefused,
    RefusalReason,
    backup_code_digest,
    format_backup_code,
    format_manual_key,
    parse_code,
    regenerate_backup_codes,
    remaining_backup_codes,
    verify_fresh_code,
)

from . import helpers

CONTEXT = RequestContext(ip_address="203.0.113.9", user_agent="pytest-agent/2.0")


def verify(user, code, **kwargs):
    kwargs.setdefault("purpose", "test action")
    return verify_fresh_code(user, code, context=CONTEXT, **kwargs)


def refusal_of(user, code, **kwargs) -> CodeRefused:
    with pytest.raises(CodeRefused) as caught:
        verify(user, code, **kwargs)
    return caught.value


def wrong_code(user) -> str:
    valid = {helpers.current_code(user, steps_ahead=s) for s in range(-2, 3)}
    return next(f"{n:06d}" for n in range(1000, 10**6) if f"{n:06d}" not in valid)


# parse_code


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("123456", CodeKind.TOTP, "123456"),
        ("000000", CodeKind.TOTP, "000000"),
        ("123 456", CodeKind.TOTP, "123456"),
        (" 123456\n", CodeKind.TOTP, "123456"),
        ("1234567890", CodeKind.BACKUP, "1234567890"),
        ("12345-67890", CodeKind.BACKUP, "1234567890"),
        ("12345 67890", CodeKind.BACKUP, "1234567890"),
        ("0000000001", CodeKind.BACKUP, "0000000001"),
    ],
)
def test_parse_code_accepts_what_apps_and_the_backup_sheet_show(raw, kind, value):
    parsed = parse_code(raw)

    assert (parsed.kind, parsed.value) == (kind, value)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("12345", id="five digits"),
        pytest.param("1234567", id="seven digits"),
        pytest.param("123456789", id="nine digits"),
        pytest.param("12345678901", id="eleven digits"),
        pytest.param("+123456", id="plus sign"),
        pytest.param("-123456", id="minus sign"),
        pytest.param("123456-", id="trailing hyphen"),
        pytest.param("12345--67890", id="double hyphen"),
        pytest.param("123-456", id="hyphen in an authenticator code"),
        pytest.param("1234-567890", id="hyphen off its place in a backup code"),
        pytest.param("12345-6789-0", id="two hyphens in a backup code"),
        pytest.param("+12345", id="plus and five digits"),
        pytest.param("１２３４５６", id="full-width digits"),
        pytest.param("١٢٣٤٥٦", id="arabic-indic digits"),
        pytest.param("१२३४५६", id="devanagari digits"),
        pytest.param("12345٦", id="one non-ascii digit"),
        pytest.param("12a456", id="letter"),
        pytest.param("0x1E240", id="hexadecimal"),
        pytest.param("123456.0", id="decimal"),
        pytest.param("1_23456", id="underscore"),
        pytest.param("123456\x00", id="null"),
        pytest.param("1" * 33, id="too long"),
        pytest.param("123456" + " " * 30, id="padded past the limit"),
        pytest.param("1" * 10_000, id="huge"),
        pytest.param(None, id="None"),
    ],
)
def test_parse_code_refuses_everything_else_as_malformed(raw):
    with pytest.raises(ValidationError) as caught:
        parse_code(raw)

    assert caught.value.code == "malformed"
    assert caught.value.messages == [MALFORMED_CODE_MESSAGE]


# verify_fresh_code


def test_a_current_code_is_accepted_once_and_audited(owner, merchant, clock):
    code = helpers.current_code(owner)

    device = verify(owner, code, merchant=merchant, purpose="activate key")

    assert device == helpers.totp_device(owner)
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.actor, event.merchant) == (
        AuditAction.OTP_VERIFIED, AuditOutcome.SUCCEEDED, owner, merchant,
    )
    assert (event.ip_address, event.user_agent) == (CONTEXT.ip_address, CONTEXT.user_agent)
    assert event.details == {"purpose": "activate key", "kind": "totp"}
    assert code not in str(event.details)


@pytest.mark.parametrize("steps", [-1, 1], ids=["previous step", "next step"])
def test_a_code_of_an_adjacent_step_is_accepted_for_clock_drift(owner, clock, steps):
    verify(owner, helpers.current_code(owner, steps_ahead=steps))


def test_a_code_two_steps_old_is_refused_as_wrong(owner, clock):
    old = helpers.current_code(owner)
    clock.advance(60)

    assert refusal_of(owner, old).reason is RefusalReason.WRONG


def test_a_code_accepted_for_one_purpose_is_refused_for_another(owner, clock):
    code = helpers.current_code(owner)
    verify(owner, code, purpose="sign-in")

    refusal = refusal_of(owner, code, purpose="regenerate backup codes")

    assert refusal.reason is RefusalReason.REUSED
    assert refusal.message == "That code has already been used. Wait for your app to show a new code."
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.outcome) == (AuditAction.OTP_FAILED, AuditOutcome.REFUSED)
    assert event.details == {"purpose": "regenerate backup codes", "kind": "totp", "reason": "reused"}


def test_after_a_code_is_used_earlier_codes_are_refused_and_the_next_one_is_accepted(owner, clock):
    earlier = helpers.current_code(owner)
    clock.next_code_step()
    verify(owner, helpers.current_code(owner))

    assert refusal_of(owner, earlier).reason is RefusalReason.REUSED
    clock.next_code_step()
    clock.advance(2)  # past the throttle delay of the refused attempt
    verify(owner, helpers.current_code(owner))


def test_a_wrong_code_is_refused_counted_and_audited(owner, merchant, clock):
    refusal = refusal_of(owner, wrong_code(owner), merchant=merchant)

    assert refusal.reason is RefusalReason.WRONG
    assert refusal.message == "That code is not right. Check your authenticator app and try again."
    assert helpers.totp_device(owner).throttling_failure_count == 1
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.merchant) == (AuditAction.OTP_FAILED, AuditOutcome.REFUSED, merchant)
    assert (event.ip_address, event.user_agent) == (CONTEXT.ip_address, CONTEXT.user_agent)
    assert event.details["reason"] == "wrong"


def test_a_malformed_code_is_refused_and_audited_without_touching_the_device(owner, clock):
    refusal = refusal_of(owner, "１２３４５６")

    assert refusal.reason is RefusalReason.MALFORMED
    assert refusal.message == MALFORMED_CODE_MESSAGE
    device = helpers.totp_device(owner)
    assert (device.throttling_failure_count, device.last_t) == (0, -1)
    event = AuditEvent.objects.get()
    assert (event.action, event.details) == (AuditAction.OTP_FAILED, {"purpose": "test action", "reason": "malformed"})


def test_throttling_refuses_even_the_right_code_until_the_delay_has_passed(owner, clock):
    refusal_of(owner, wrong_code(owner))

    refusal = refusal_of(owner, helpers.current_code(owner))

    assert refusal.reason is RefusalReason.THROTTLED
    assert refusal.retry_at == datetime(2026, 11, 27, 12, 0, 1, tzinfo=timezone.utc)
    assert refusal.message == "After a wrong code the next one must wait. Try again in 1 second (at 12:00:01 UTC)."
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.outcome) == (AuditAction.OTP_THROTTLED, AuditOutcome.REFUSED)
    assert (event.ip_address, event.user_agent) == (CONTEXT.ip_address, CONTEXT.user_agent)
    assert event.details["reason"] == "throttled"
    clock.advance(1)
    verify(owner, helpers.current_code(owner))


def test_the_throttle_message_counts_in_minutes_past_two_minutes(owner, clock):
    device = helpers.totp_device(owner)
    device.throttling_failure_count = 9  # a 256-second delay
    device.throttling_failure_timestamp = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    device.save()

    refusal = refusal_of(owner, helpers.current_code(owner))

    assert refusal.message == "After a wrong code the next one must wait. Try again in 5 minutes (at 12:04:16 UTC)."


def test_a_user_without_a_device_is_refused(merchant, clock):
    user = helpers.create_user(with_device=False)

    assert refusal_of(user, "123456").reason is RefusalReason.NO_DEVICE
    assert refusal_of(user, "1234567890").reason is RefusalReason.NO_DEVICE
    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED, details__reason="no_device").count() == 2


def test_an_unconfirmed_device_accepts_nothing_not_even_its_own_code(db, clock):
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = helpers.create_user(with_device=False)
    device = TOTPDevice.objects.create(user=user, name="Half set up", confirmed=False)
    code = f"{TOTP(device.bin_key).token():06d}"

    assert refusal_of(user, code).reason is RefusalReason.NO_DEVICE
    device.refresh_from_db()
    assert device.last_t == -1


def test_another_users_code_is_refused(merchant, owner, clock):
    other = helpers.create_member(merchant, Role.OWNER)
    code = helpers.current_code(other)
    if code == helpers.current_code(owner):  # pragma: no cover - a one-in-a-million coincidence
        pytest.skip("both devices show the same code")

    assert refusal_of(owner, code).reason is RefusalReason.WRONG


# Backup codes


def test_a_backup_code_is_accepted_once(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890", "5555555555"])

    verify(owner, "12345-67890")

    refusal = refusal_of(owner, "1234567890")
    assert refusal.reason is RefusalReason.WRONG
    assert refusal.message == "That backup code is not right or has already been used: each one works once."
    assert remaining_backup_codes(owner) == 1
    assert AuditEvent.objects.filter(action=AuditAction.OTP_VERIFIED, details__kind="backup").count() == 1


def test_regenerating_backup_codes_replaces_every_old_one(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890", "5555555555"])

    codes = regenerate_backup_codes(owner, helpers.current_code(owner), context=CONTEXT)

    assert len(codes) == 10 == len(set(codes))
    assert all(len(code) == 10 and code.isascii() and code.isdigit() for code in codes)
    assert sorted(StaticToken.objects.filter(device__user=owner).values_list("token", flat=True)) == sorted(map(backup_code_digest, codes))
    clock.advance(1)
    assert refusal_of(owner, "5555555555").reason is RefusalReason.WRONG
    clock.advance(2)
    verify(owner, codes[0])
    generated = AuditEvent.objects.get(action=AuditAction.BACKUP_CODES_GENERATED)
    assert generated.details == {"count": 10}
    assert not any(code in str(event.details) for event in AuditEvent.objects.all() for code in codes)


def test_regenerating_with_a_refused_code_keeps_the_old_codes(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890"])

    with pytest.raises(CodeRefused):
        regenerate_backup_codes(owner, wrong_code(owner), context=CONTEXT)

    assert list(StaticToken.objects.filter(device__user=owner).values_list("token", flat=True)) == [backup_code_digest("1234567890")]
    assert not AuditEvent.objects.filter(action=AuditAction.BACKUP_CODES_GENERATED).exists()


def test_a_backup_code_can_regenerate_the_backup_codes(owner, clock):
    helpers.give_backup_codes(owner, ["1234567890"])

    codes = regenerate_backup_codes(owner, "12345-67890", context=CONTEXT)

    assert "1234567890" not in codes
    assert remaining_backup_codes(owner) == 10


# Rotating SECRET_KEY

OLD_SECRET_KEY = "the-secret-key-before-the-rotation"


def test_after_a_rotation_backup_codes_issued_under_the_old_key_still_work(owner, clock, settings):
    settings.SECRET_KEY = OLD_SECRET_KEY
    helpers.give_backup_codes(owner, ["1234567890", "5555555555"])
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-secret-key-after-the-rotation", [OLD_SECRET_KEY]

    verify(owner, "12345-67890")

    assert remaining_backup_codes(owner) == 1
    assert refusal_of(owner, "1234567890").reason is RefusalReason.WRONG  # used once, gone
    assert AuditEvent.objects.filter(action=AuditAction.OTP_VERIFIED, details__kind="backup").count() == 1


def test_once_the_old_key_leaves_the_fallbacks_its_backup_codes_are_refused(owner, clock, settings):
    settings.SECRET_KEY = OLD_SECRET_KEY
    helpers.give_backup_codes(owner, ["1234567890"])
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-secret-key-after-the-rotation", []

    assert refusal_of(owner, "1234567890").reason is RefusalReason.WRONG

    assert remaining_backup_codes(owner) == 1


def test_a_wrong_backup_code_counts_as_one_failure_whatever_the_number_of_keys(owner, clock, settings):
    device = helpers.give_backup_codes(owner, ["1234567890"])
    settings.SECRET_KEY_FALLBACKS = ["an-older-key", "an-even-older-key"]

    assert refusal_of(owner, "9999999999").reason is RefusalReason.WRONG

    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    assert remaining_backup_codes(owner) == 1


def test_codes_regenerated_after_a_rotation_are_keyed_with_the_new_key(owner, clock, settings):
    settings.SECRET_KEY_FALLBACKS = [OLD_SECRET_KEY]

    codes = regenerate_backup_codes(owner, helpers.current_code(owner), context=CONTEXT)

    stored = sorted(StaticToken.objects.filter(device__user=owner).values_list("token", flat=True))
    assert stored == sorted(backup_code_digest(code, settings.SECRET_KEY) for code in codes)
    assert not set(stored) & {backup_code_digest(code, OLD_SECRET_KEY) for code in codes}


# Formatting


def test_backup_codes_are_shown_in_two_groups_of_five():
    assert format_backup_code("0123456789") == "01234-56789"


def test_the_manual_key_is_the_base32_key_in_groups_of_four(owner):
    import base64

    device = helpers.totp_device(owner)

    key = format_manual_key(device)

    assert all(len(group) == 4 for group in key.split(" ")[:-1])
    assert base64.b32decode(key.replace(" ", "") + "=" * (-len(key.replace(" ", "")) % 8)) == device.bin_key


# Concurrency: two submissions of one code, only one may win (PostgreSQL: real row locks)


@pytest.mark.django_db(transaction=True)
def test_only_one_of_several_concurrent_submissions_of_a_code_wins(clock):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (DATABASE_URL=postgres://...)")
    owner = helpers.create_user("racer@acme.test")
    code = helpers.current_code(owner)
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt():
        try:
            barrier.wait()
            verify(owner, code)
            outcomes.append("accepted")
        except CodeRefused as refusal:
            outcomes.append(refusal.reason.value)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("accepted") == 1
    assert AuditEvent.objects.filter(action=AuditAction.OTP_VERIFIED).count() == 1
