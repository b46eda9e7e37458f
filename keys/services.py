"""The API-key lifecycle: generate, activate, deactivate, edit the allowlist, rename, archive.

Every function here is keyword-only and takes the acting user. It checks, in this order:
the user is an Owner of the merchant; the 2FA code is fresh (dashboard.two_factor, which commits its
own outcome first so a refused action never rolls back a throttle count); then, in one transaction
holding a lock on the merchant row, the key's status allows the action. Success and refusal each
write exactly one audit event (a refused 2FA code is audited by the 2FA check itself). Callers show
``KeyActionRefused.message`` to the user and need no other check of their own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.audit import RequestContext, record
from dashboard.members import is_owner_now, lock_merchant
from dashboard.models import AuditAction, AuditOutcome, Merchant
from dashboard.two_factor import verify_fresh_code

from . import conf, crypto, notifications
from .allowlist import Allowlist
from .models import ApiKey, KeyAction, KeyStatus
from .secret_store import seal_secret

logger = logging.getLogger("keys.services")

STAFF_DEACTIVATION_PERMISSION = "keys.deactivate_apikey"
# The reason staff give is emailed to the merchant's Owners and kept in its audit trail.
STAFF_REASON_MAX_LENGTH = 500
STAFF_REASON_REQUIRED_MESSAGE = "Say why the key is deactivated: its Owners are told."
STAFF_REASON_TOO_LONG_MESSAGE = f"Use at most {STAFF_REASON_MAX_LENGTH} characters."

ANOTHER_KEY_ACTIVE_MESSAGE = "Another API key is already active. Deactivate it first."
# Most often a form sent twice: the first answer, the only one with the secret key, was replaced by this one.
ALREADY_ACTIVE_MESSAGE = (
    "This API key is already active. Its secret key is shown only once, when it is first activated: if you do not "
    "have it, deactivate this key and generate a new pair."
)


class KeyActionRefused(Exception):
    """The action was not done; nothing changed. ``code`` is stable, ``message`` is for the user."""

    def __init__(self, message: str, *, code: str):
        self.message = message
        self.code = code
        super().__init__(message)


class KeyNotFound(KeyActionRefused):
    def __init__(self):
        super().__init__("No such API key for this merchant.", code="not_found")


@dataclass(frozen=True)
class ActivationResult:
    key: ApiKey
    # The plaintext secret on the first activation only; None on a reactivation.
    secret: str | None


_ACTION_EVENTS = {
    KeyAction.ACTIVATE: AuditAction.KEY_ACTIVATED,
    KeyAction.DEACTIVATE: AuditAction.KEY_DEACTIVATED,
    KeyAction.EDIT_ALLOWLIST: AuditAction.KEY_ALLOWLIST_CHANGED,
    KeyAction.RENAME: AuditAction.KEY_RENAMED,
    KeyAction.ARCHIVE: AuditAction.KEY_ARCHIVED,
}


def _target(key: ApiKey | None, key_id: int | None = None) -> str:
    if key is not None:
        return f"api_key:{key.public_key}"
    return f"api_key:#{key_id}" if key_id is not None else ""


def _refuse(action: AuditAction, refusal: KeyActionRefused, *, actor, merchant, context, key=None, key_id=None):
    """Audit a refusal in its own transaction, then hand the exception back for the caller to raise."""
    record(
        action, actor=actor, merchant=merchant, outcome=AuditOutcome.REFUSED, target=_target(key, key_id),
        context=context, details={"reason": refusal.code},
    )
    logger.info("key action refused action=%s merchant=%s reason=%s", action.value, merchant.slug, refusal.code)
    return refusal


def _require_owner(action: AuditAction, *, actor, merchant: Merchant, context, key_id=None) -> None:
    # Read again here, not trusted from the view: a demoted Owner is refused on the very next request.
    if not is_owner_now(actor, merchant, lock=False):
        raise _refuse(
            action, KeyActionRefused("Managing API keys needs the Owner role.", code="not_owner"),
            actor=actor, merchant=merchant, context=context, key_id=key_id,
        )


_CODE_PURPOSES = {
    AuditAction.KEY_GENERATED: "generate an API key",
    AuditAction.KEY_ACTIVATED: "activate an API key",
    AuditAction.KEY_DEACTIVATED: "deactivate an API key",
    AuditAction.KEY_ALLOWLIST_CHANGED: "change the IP addresses of an API key",
    AuditAction.KEY_RENAMED: "rename an API key",
    AuditAction.KEY_ARCHIVED: "archive an API key",
}


def _verify_code(action: AuditAction, *, actor, merchant, code: str, context, key_id=None) -> None:
    purpose = _CODE_PURPOSES[action]
    verify_fresh_code(
        actor, code, context=context, merchant=merchant, purpose=f"{purpose} #{key_id}" if key_id else purpose
    )


def _locked_key(merchant: Merchant, key_id: int) -> ApiKey | None:
    # NO KEY UPDATE: the request log goes on recording the requests of the key being changed.
    return ApiKey.objects.select_for_update(no_key=True).filter(merchant=merchant, pk=key_id).first()


def wrong_status_refusal(key: ApiKey, action: KeyAction) -> KeyActionRefused:
    if key.status == KeyStatus.ARCHIVED:
        message = "This API key is archived; archived keys cannot be changed."
    elif action is KeyAction.ACTIVATE and key.status == KeyStatus.ACTIVE:
        message = ALREADY_ACTIVE_MESSAGE
    else:
        message = f"You cannot {action.label} an API key that is {key.get_status_display().lower()}."
    return KeyActionRefused(message, code="wrong_status")


def _transition(
    action: KeyAction, *, actor, merchant: Merchant, key_id: int, context: RequestContext, change,
    staff_reason: str = "",
) -> ApiKey:
    """Run ``change(key)`` on the locked key if its status allows ``action``; audit either way.

    ``change`` returns the audit details (or raises KeyActionRefused); the write and the success event
    commit together, a refusal is audited after the rollback. ``staff_reason``: why platform staff acted, for
    the Owners' email.
    """
    event = _ACTION_EVENTS[action]
    refusal = None
    with transaction.atomic():
        # SECURITY: the merchant's lock serialises every transition of its keys, so "is another key active?"
        # cannot change between the check and the write.
        lock_merchant(merchant)
        key = _locked_key(merchant, key_id)
        if key is None:
            refusal = KeyNotFound()
        elif not key.allows(action):
            refusal = wrong_status_refusal(key, action)
        else:
            try:
                with transaction.atomic():
                    audit_details = change(key)
            except KeyActionRefused as refused:
                refusal = refused
            else:
                record(
                    event, actor=actor, merchant=merchant, target=_target(key), context=context,
                    details=audit_details,
                )
                notifications.notify_owners(
                    key=key, action=event, actor=actor, context=context, staff_reason=staff_reason
                )
    if refusal is not None:
        raise _refuse(event, refusal, actor=actor, merchant=merchant, context=context, key=key, key_id=key_id)
    return key


def generate_key(*, actor, merchant: Merchant, name: str = "", code: str, context: RequestContext) -> ApiKey:
    """Make a new key pair's public half, status generated. Its secret is made at the first activation."""
    _require_owner(AuditAction.KEY_GENERATED, actor=actor, merchant=merchant, context=context)
    _verify_code(AuditAction.KEY_GENERATED, actor=actor, merchant=merchant, code=code, context=context)
    limit = conf.max_unarchived_keys()
    refusal = None
    with transaction.atomic():
        lock_merchant(merchant)  # SECURITY: "how many keys?" cannot change between the count and the insert
        if ApiKey.objects.for_merchant(merchant).not_archived().count() >= limit:
            refusal = KeyActionRefused(
                f"This merchant already has {limit} API keys that are not archived, the most allowed. "
                "Archive a key you no longer need, then generate a new one.",
                code="limit_reached",
            )
        else:
            key = ApiKey.objects.create(
                merchant=merchant, public_key=crypto.generate_public_key(), name=name, created_by=actor
            )
            record(
                AuditAction.KEY_GENERATED, actor=actor, merchant=merchant, target=_target(key), context=context,
                details={"name": name},
            )
    if refusal is not None:
        raise _refuse(AuditAction.KEY_GENERATED, refusal, actor=actor, merchant=merchant, context=context)
    return key


def activate_key(
    *, actor, merchant: Merchant, key_id: int, allowlist: Allowlist, code: str, context: RequestContext
) -> ActivationResult:
    """Make the key the merchant's active one, with ``allowlist`` (empty: any address).

    The first activation makes the secret and returns it, to be shown once and never again; a
    reactivation returns ``secret=None``. Refused while another key of the merchant is active.
    """
    _require_owner(AuditAction.KEY_ACTIVATED, actor=actor, merchant=merchant, context=context, key_id=key_id)
    _verify_code(AuditAction.KEY_ACTIVATED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id)
    revealed: list[str] = []

    def change(key: ApiKey) -> dict:
        if ApiKey.objects.for_merchant(merchant).active().exclude(pk=key.pk).exists():
            raise KeyActionRefused(ANOTHER_KEY_ACTIVE_MESSAGE, code="another_key_active")
        now = timezone.now()
        first = not key.has_secret
        if first:
            secret = crypto.generate_secret()
            key.encrypted_secret = seal_secret(key.public_key, secret)
            key.secret_fingerprint = crypto.fingerprint(secret)
            key.first_activated_at = now
            revealed.append(crypto.RevealedSecret(secret))
        key.status = KeyStatus.ACTIVE
        key.allowed_networks = list(allowlist.entries)
        key.activated_at, key.activated_by = now, actor
        try:
            key.save()
        except IntegrityError:
            # The database's one-active constraint caught a race the check above could not see.
            raise KeyActionRefused(ANOTHER_KEY_ACTIVE_MESSAGE, code="another_key_active") from None
        return {"first_activation": first, "allowed_networks": key.allowed_networks}

    key = _transition(KeyAction.ACTIVATE, actor=actor, merchant=merchant, key_id=key_id, context=context, change=change)
    return ActivationResult(key=key, secret=revealed[0] if revealed else None)


def deactivate_key(*, actor, merchant: Merchant, key_id: int, code: str, context: RequestContext) -> ApiKey:
    """Stop the key at once: the very next API request with it is refused."""
    _require_owner(AuditAction.KEY_DEACTIVATED, actor=actor, merchant=merchant, context=context, key_id=key_id)
    _verify_code(AuditAction.KEY_DEACTIVATED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id)

    return _transition(
        KeyAction.DEACTIVATE, actor=actor, merchant=merchant, key_id=key_id, context=context,
        change=_deactivation(actor, details={}),
    )


def deactivate_key_as_staff(*, actor, key_id: int, reason: str, code: str, context: RequestContext) -> ApiKey:
    """Platform staff stop a merchant's key, as its Owners would (a compromise reported to support, an Owner
    who cannot sign in): with the staff member's own fresh 2FA code and a reason, audited on the merchant's
    Activity and emailed to its Owners. Staff need the ``keys.deactivate_apikey`` permission."""
    key = ApiKey.objects.select_related("merchant").filter(pk=key_id).first()
    if key is None:
        raise KeyNotFound()
    merchant = key.merchant
    # Read again here, not trusted from the view: a permission taken away is refused on the very next request.
    if not (actor.is_active and actor.is_staff and actor.has_perm(STAFF_DEACTIVATION_PERMISSION)):
        raise _refuse(
            AuditAction.KEY_DEACTIVATED,
            KeyActionRefused(
                "Deactivating a merchant's API key needs the staff permission to do so.", code="not_permitted",
            ),
            actor=actor, merchant=merchant, context=context, key=key,
        )
    reason = " ".join(reason.split())
    if not reason:
        raise KeyActionRefused(STAFF_REASON_REQUIRED_MESSAGE, code="reason_required")
    if len(reason) > STAFF_REASON_MAX_LENGTH:
        raise KeyActionRefused(STAFF_REASON_TOO_LONG_MESSAGE, code="reason_too_long")
    _verify_code(AuditAction.KEY_DEACTIVATED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id)
    return _transition(
        KeyAction.DEACTIVATE, actor=actor, merchant=merchant, key_id=key_id, context=context,
        change=_deactivation(actor, details={"staff_reason": reason}), staff_reason=reason,
    )


def _deactivation(actor, *, details: dict):
    def change(key: ApiKey) -> dict:
        key.status = KeyStatus.DEACTIVATED
        key.deactivated_at, key.deactivated_by = timezone.now(), actor
        key.save()
        return details

    return change


def update_allowlist(
    *, actor, merchant: Merchant, key_id: int, allowlist: Allowlist, code: str, context: RequestContext
) -> ApiKey:
    """Replace the key's allowed addresses; the next API request is checked against the new list."""
    _require_owner(AuditAction.KEY_ALLOWLIST_CHANGED, actor=actor, merchant=merchant, context=context, key_id=key_id)
    _verify_code(
        AuditAction.KEY_ALLOWLIST_CHANGED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id
    )

    def change(key: ApiKey) -> dict:
        before = list(key.allowed_networks)
        key.allowed_networks = list(allowlist.entries)
        key.allowlist_changed_at, key.allowlist_changed_by = timezone.now(), actor
        key.save()
        return {"from": before, "to": key.allowed_networks}

    return _transition(
        KeyAction.EDIT_ALLOWLIST, actor=actor, merchant=merchant, key_id=key_id, context=context, change=change
    )


def rename_key(*, actor, merchant: Merchant, key_id: int, name: str, code: str, context: RequestContext) -> ApiKey:
    """Give the key a name of the Owner's choosing. A name grants nothing, but it is what Owners and the Activity
    tell keys by, and the platform asks a fresh 2FA code for any change in the dashboard."""
    _require_owner(AuditAction.KEY_RENAMED, actor=actor, merchant=merchant, context=context, key_id=key_id)
    _verify_code(AuditAction.KEY_RENAMED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id)

    def change(key: ApiKey) -> dict:
        before = key.name
        key.name = name
        key.save(update_fields=["name"])
        return {"from": before, "to": name}

    return _transition(KeyAction.RENAME, actor=actor, merchant=merchant, key_id=key_id, context=context, change=change)


def archive_key(*, actor, merchant: Merchant, key_id: int, code: str, context: RequestContext) -> ApiKey:
    """Put away a key that is not active, for good: archived keys never come back."""
    _require_owner(AuditAction.KEY_ARCHIVED, actor=actor, merchant=merchant, context=context, key_id=key_id)
    _verify_code(AuditAction.KEY_ARCHIVED, actor=actor, merchant=merchant, code=code, context=context, key_id=key_id)

    def change(key: ApiKey) -> dict:
        key.status = KeyStatus.ARCHIVED
        key.archived_at, key.archived_by = timezone.now(), actor
        key.save()
        return {}

    return _transition(KeyAction.ARCHIVE, actor=actor, merchant=merchant, key_id=key_id, context=context, change=change)
