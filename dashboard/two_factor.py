"""Second factor: enrolment of an authenticator app, backup codes, and the fresh-code check.

Every sensitive action calls ``verify_fresh_code``. It accepts a TOTP code once only (RFC 6238
section 5.2: django-otp's ``last_t`` refuses any time step at or before the last accepted one, so a
code used at sign-in cannot be used again for an action), or an unused backup code; failures are
throttled by django-otp with growing delays, and every outcome is audited.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from base64 import b32encode
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_otp.models import Device
from django_otp.oath import hotp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import rate_limit
from .audit import RequestContext, record
from .models import AuditAction, AuditEvent, AuditOutcome, Merchant

TOTP_DEVICE_NAME = "Authenticator app"
BACKUP_DEVICE_NAME = "Backup codes"
BACKUP_CODE_COUNT = 10
BACKUP_CODE_DIGITS = 10

# Authenticator apps display "123 456": whitespace is dropped first. Then exactly six ASCII digits, or a
# backup code as the sheet prints it ("12345-67890") or without its hyphen; nothing else.
_WHITESPACE = re.compile(r"\s")
_TOTP_CODE = re.compile(r"[0-9]{6}")
_BACKUP_CODE = re.compile(r"([0-9]{%d})-?([0-9]{%d})" % (BACKUP_CODE_DIGITS // 2, BACKUP_CODE_DIGITS // 2))
MAX_CODE_INPUT_LENGTH = 32

MALFORMED_CODE_MESSAGE = "Enter the 6-digit code from your authenticator app, or a 10-digit backup code."


class CodeKind(enum.Enum):
    TOTP = "totp"
    BACKUP = "backup"


@dataclass(frozen=True)
class ParsedCode:
    kind: CodeKind
    value: str


def parse_code(raw: str) -> ParsedCode:
    """Normalise what the user typed; raise ValidationError(code="malformed") for anything else.

    Only ASCII digits reach a device: no signs, no full-width digits, no extra leading zeros.
    """
    if raw is None or len(raw) > MAX_CODE_INPUT_LENGTH:
        raise ValidationError(MALFORMED_CODE_MESSAGE, code="malformed")
    value = _WHITESPACE.sub("", raw)
    if _TOTP_CODE.fullmatch(value):
        return ParsedCode(CodeKind.TOTP, value)
    backup = _BACKUP_CODE.fullmatch(value)
    if backup:
        return ParsedCode(CodeKind.BACKUP, backup.group(1) + backup.group(2))
    raise ValidationError(MALFORMED_CODE_MESSAGE, code="malformed")


class RefusalReason(enum.Enum):
    MALFORMED = "malformed"
    WRONG = "wrong"
    REUSED = "reused"
    THROTTLED = "throttled"  # django-otp's growing wait after a wrong code
    TOO_MANY_FAILURES = "too_many_failures"  # the account's ceiling on failures (dashboard.rate_limit)
    NO_DEVICE = "no_device"


class CodeRefused(Exception):
    """A 2FA code was not accepted. ``message`` says why, in words for the user."""

    def __init__(self, reason: RefusalReason, retry_at: datetime | None = None, kind: CodeKind | None = None):
        self.reason = reason
        self.retry_at = retry_at
        self.kind = kind
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.reason is RefusalReason.REUSED:
            return "That code has already been used. Wait for your app to show a new code."
        if self.reason is RefusalReason.THROTTLED:
            return f"After a wrong code the next one must wait. {_retry_phrase(self.retry_at)}"
        if self.reason is RefusalReason.TOO_MANY_FAILURES:
            return f"Too many wrong codes for this account. {_retry_phrase(self.retry_at)}"
        if self.reason is RefusalReason.NO_DEVICE:
            return "Your account has no authenticator set up for this kind of code."
        if self.reason is RefusalReason.MALFORMED:
            return MALFORMED_CODE_MESSAGE
        if self.kind is CodeKind.BACKUP:
            # A used backup code is deleted, so it cannot be told apart from one that never existed.
            return "That backup code is not right or has already been used: each one works once."
        return "That code is not right. Check your authenticator app and try again."


def _retry_phrase(retry_at: datetime | None) -> str:
    if retry_at is None:
        return "Try again later."
    seconds = max(1, int((retry_at - timezone.now()).total_seconds() + 0.999))
    if seconds < 120:
        when = f"{seconds} second{'s' if seconds != 1 else ''}"
    else:
        when = f"{(seconds + 59) // 60} minutes"
    return f"Try again in {when} (at {retry_at:%H:%M:%S} UTC)."


def _was_already_used(device: TOTPDevice, token: str) -> bool:
    """True when ``token`` is valid now but for a time step that was already accepted."""
    now_t = (int(time.time()) - device.t0) // device.step + device.drift
    for t in range(now_t - device.tolerance, now_t + device.tolerance + 1):
        if t <= device.last_t and hotp(device.bin_key, t, digits=device.digits) == int(token):
            return True
    return False


def _try_code(device: Device | None, code: ParsedCode) -> CodeRefused | None:
    """Offer ``code`` to the locked ``device`` (which saves its throttle and ``last_t``); None if accepted."""
    if device is None:
        return CodeRefused(RefusalReason.NO_DEVICE)
    allowed, why = device.verify_is_allowed()
    if not allowed:
        return CodeRefused(RefusalReason.THROTTLED, retry_at=(why or {}).get("locked_until"))
    token = code.value if code.kind is CodeKind.TOTP else _stored_backup_token(device, code.value)
    if device.verify_token(token):
        return None
    reused = code.kind is CodeKind.TOTP and _was_already_used(device, code.value)
    return CodeRefused(RefusalReason.REUSED if reused else RefusalReason.WRONG, kind=code.kind)


def _locked_device(user, kind: CodeKind) -> Device | None:
    model = TOTPDevice if kind is CodeKind.TOTP else StaticDevice
    return model.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk").first()


def verify_fresh_code(
    user,
    raw_code: str,
    *,
    context: RequestContext,
    purpose: str,
    merchant: Merchant | None = None,
) -> Device:
    """Accept ``raw_code`` for ``user`` once, or raise CodeRefused.

    The outcome (throttle count, ``last_t``, the audit row) is committed in its own transaction before
    the caller's action runs, so a failed action never rolls back a failure count (as django-otp's
    ``OTPAuthenticationFormMixin.clean_otp`` does). Returns the device that accepted the code.
    """
    attempt = rate_limit.begin_attempt(user.email)
    if attempt.retry_at is not None:
        refusal = CodeRefused(RefusalReason.TOO_MANY_FAILURES, retry_at=attempt.retry_at)
        record(
            AuditAction.OTP_THROTTLED, actor=user, merchant=merchant, outcome=AuditOutcome.REFUSED,
            context=context, details={"purpose": purpose, "reason": "hourly limit"},
        )
        raise refusal
    try:
        code = parse_code(raw_code)
    except ValidationError:
        refusal = CodeRefused(RefusalReason.MALFORMED)
        record(
            AuditAction.OTP_FAILED, actor=user, merchant=merchant, outcome=AuditOutcome.REFUSED,
            context=context, details={"purpose": purpose, "reason": refusal.reason.value},
        )
        raise refusal from None

    with transaction.atomic():
        # SECURITY: the row lock makes two submissions of one code queue, so only the first can win.
        device = _locked_device(user, code.kind)
        refusal = _try_code(device, code)
        details = {"purpose": purpose, "kind": code.kind.value}
        if refusal is None:
            record(AuditAction.OTP_VERIFIED, actor=user, merchant=merchant, context=context, details=details)
        else:
            details["reason"] = refusal.reason.value
            action = AuditAction.OTP_THROTTLED if refusal.reason is RefusalReason.THROTTLED else AuditAction.OTP_FAILED
            record(action, actor=user, merchant=merchant, outcome=AuditOutcome.REFUSED, context=context, details=details)
    if refusal is None or refusal.reason not in (RefusalReason.WRONG, RefusalReason.REUSED, RefusalReason.NO_DEVICE):
        # Accepted, or held back by django-otp's own delay: not a failure of this account's ceiling.
        rate_limit.attempt_succeeded(attempt)
    if refusal is not None:
        raise refusal
    return device


def has_confirmed_authenticator(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def authenticator_reset_at(user) -> datetime | None:
    """When platform staff last took the user's authenticator app away (a 2FA reset in the admin), if ever: the
    enrolment page then says why it asks for one again."""
    # Since this account was made: an address can belong to an earlier, deleted account.
    return (
        AuditEvent.objects.filter(
            action=AuditAction.DEVICE_RESET, target=f"user:{user.email}", details__kind=TOTPDevice._meta.model_name,
            created_at__gte=user.date_joined,
        )
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)
        .first()
    )


def pending_authenticator(user) -> TOTPDevice:
    """The unconfirmed device shown on the enrolment page; the same one across reloads."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
    return device


def confirm_authenticator(user, raw_code: str, *, context: RequestContext) -> tuple[TOTPDevice, list[str]]:
    """Confirm the pending device with a code from it; returns it and a first set of backup codes."""
    code = parse_code(raw_code)
    if code.kind is not CodeKind.TOTP:
        raise CodeRefused(RefusalReason.MALFORMED)
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk").first()
        refusal = _try_code(device, code)
        if refusal is not None:
            record(
                AuditAction.OTP_FAILED, actor=user, outcome=AuditOutcome.REFUSED, context=context,
                details={"purpose": "enrolment", "reason": refusal.reason.value},
            )
    if refusal is not None:
        raise refusal
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        record(AuditAction.DEVICE_ENROLLED, actor=user, context=context, details={"device": device.name})
        codes = _replace_backup_codes(user, context=context)
    return device, codes


def backup_code_digest(code: str, secret_key: str | None = None) -> str:
    """How a backup code is stored: a keyed hash, so the database alone does not reveal usable codes.

    Keyed with SECRET_KEY unless ``secret_key`` is given. Truncated to fit django-otp's 16-character token
    column: 80 bits, far beyond the 33 bits of a code.
    """
    key = settings.SECRET_KEY if secret_key is None else secret_key
    digest = hmac.new(key.encode(), f"backup-code:{code}".encode(), hashlib.sha256).digest()
    return b32encode(digest).decode()[:16].lower()


def _stored_backup_token(device: StaticDevice, code: str) -> str:
    """The token ``device`` holds for ``code``: its digest under SECRET_KEY, or under a key it replaced.

    After a rotation (the old key moved to SECRET_KEY_FALLBACKS) codes issued before it still work. One token
    goes to django-otp, so a wrong code counts as one failure, not one per key.
    """
    digests = [backup_code_digest(code, key) for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)]
    held = set(device.token_set.filter(token__in=digests).values_list("token", flat=True))
    return next((digest for digest in digests if digest in held), digests[0])


def _replace_backup_codes(user, *, context: RequestContext) -> list[str]:
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name=BACKUP_DEVICE_NAME, defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    codes = [f"{secrets.randbelow(10 ** BACKUP_CODE_DIGITS):0{BACKUP_CODE_DIGITS}d}" for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=backup_code_digest(code)) for code in codes)
    record(AuditAction.BACKUP_CODES_GENERATED, actor=user, context=context, details={"count": len(codes)})
    return codes


def regenerate_backup_codes(user, raw_code: str, *, context: RequestContext) -> list[str]:
    """Replace every backup code after a fresh 2FA code; the old ones stop working at once."""
    verify_fresh_code(user, raw_code, context=context, purpose="regenerate backup codes")
    with transaction.atomic():
        return _replace_backup_codes(user, context=context)


def remaining_backup_codes(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def format_backup_code(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def backup_codes_file(email: str, codes: list[str], made_at: datetime) -> str:
    """The text file the backup codes page offers for download, the codes as the page shows them."""
    made = made_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Processing sandbox: backup codes for {email}\n"
        f"Made {made}. Each code works once, wherever a 2FA code is asked for; making new codes ends these.\n\n"
        + "".join(f"{format_backup_code(code)}\n" for code in codes)
    )


def format_manual_key(device: TOTPDevice) -> str:
    """The base32 key in groups of four, for typing into an app by hand."""
    key = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))
