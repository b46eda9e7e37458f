"""Inviting a person to a merchant by email, and their acceptance.

An Owner invites an address with a role (never Owner) and a fresh 2FA code; the email carries a link with a
token, kept here only as its SHA-256, that works once for INVITATION_LIFETIME. Whoever opens the link for an
address without an account chooses its password there, and sets up an authenticator at their first sign-in; an
address with an account accepts once signed in with both factors as that account. The page of the link says
nothing of the address that another visitor could not read in the email itself.

Every change here first locks the merchant's row, as the key services do, then the invitation, then a
membership: one order for all of them, so two changes never wait for each other (a deadlock, a 500).
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import members
from .audit import RequestContext, record
from .members import MemberChangeRefused
from .models import AuditAction, AuditOutcome, Invitation, Membership, Merchant, User
from .two_factor import verify_fresh_code

logger = logging.getLogger("dashboard.invitations")

INVITATION_LIFETIME = timedelta(days=7)
# Longer than any token made here; a longer one is not looked up at all.
MAX_TOKEN_LENGTH = 100


class InvitationGone(MemberChangeRefused):
    def __init__(self):
        super().__init__(
            "This invitation link no longer works: it was used, withdrawn, replaced by a newer one, or is more than "
            "7 days old. Ask an Owner of the merchant to invite you again.",
            code="invitation_gone",
        )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalized_email(email: str) -> str:
    # As accounts store theirs (UserManager): the whole address in lower case.
    return User.objects.normalize_email(email.strip()).lower()


def invite(
    *, actor, merchant: Merchant, email: str, role: str, code: str, context: RequestContext,
    link_for: Callable[[str], str],
) -> tuple[Invitation, bool]:
    """Invite ``email`` with ``role``; ``link_for(token)`` is the absolute address of the link the email carries.
    Returns the invitation and whether its email went out (if not, it stands, and inviting again sends a new link)."""
    action = AuditAction.MEMBER_INVITED
    email = normalized_email(email)
    members.require_owner(action, actor=actor, merchant=merchant, context=context)
    if role not in members.ASSIGNABLE_ROLES:
        raise members.refuse(action, MemberChangeRefused(
            "Only platform staff give the Owner role: invite with another role, then contact support.",
            code="owner_role",
        ), actor=actor, merchant=merchant, context=context, target=f"user:{email}")
    already_member = MemberChangeRefused(f"{email} is already a member of {merchant.name}.", code="already_member")
    if Membership.objects.filter(merchant=merchant, user__email__iexact=email).exists():
        raise members.refuse(action, already_member, actor=actor, merchant=merchant, context=context,
                             target=f"user:{email}")
    verify_fresh_code(actor, code, context=context, merchant=merchant, purpose="invite a member")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    refusal = None
    try:
        with transaction.atomic():
            members.lock_merchant(merchant)
            if not members.is_owner_now(actor, merchant):
                refusal = members.NotOwner()
            elif Membership.objects.filter(merchant=merchant, user__email__iexact=email).exists():
                refusal = already_member  # joined, with an earlier invitation, while the code was checked
            else:
                replaced = Invitation.objects.unanswered().filter(merchant=merchant, email=email).update(
                    withdrawn_at=now)
                invitation = Invitation.objects.create(
                    merchant=merchant, email=email, role=role, token_digest=token_digest(token), invited_by=actor,
                    created_at=now, expires_at=now + INVITATION_LIFETIME,
                )
                details = {"role": role, **({"replaces_earlier_invitation": True} if replaced else {})}
                record(action, actor=actor, merchant=merchant, target=f"user:{email}", context=context,
                       details=details)
    except IntegrityError:
        # Another Owner invited the same address at the same moment: theirs stands.
        refusal = MemberChangeRefused(
            f"{email} was invited by someone else just now: see the pending invitations.", code="invited_meanwhile",
        )
    if refusal is not None:
        raise members.refuse(action, refusal, actor=actor, merchant=merchant, context=context, target=f"user:{email}")
    # Sent once the invitation is committed, so no link names a token the database does not hold.
    return invitation, _send(invitation, link_for(token))


def withdraw(*, actor, merchant: Merchant, invitation_id: int, code: str, context: RequestContext) -> Invitation:
    """Make an invitation's link stop working."""
    action = AuditAction.INVITATION_WITHDRAWN
    members.require_owner(action, actor=actor, merchant=merchant, context=context)
    verify_fresh_code(actor, code, context=context, merchant=merchant, purpose="withdraw an invitation")
    refusal = None
    with transaction.atomic():
        members.lock_merchant(merchant)
        invitation = (
            Invitation.objects.still_open().select_for_update().filter(merchant=merchant, pk=invitation_id).first()
        )
        if not members.is_owner_now(actor, merchant):
            invitation, refusal = None, members.NotOwner()
        elif invitation is None:
            refusal = members.MemberNotFound()
        else:
            invitation.withdrawn_at = timezone.now()
            invitation.save(update_fields=["withdrawn_at"])
            record(action, actor=actor, merchant=merchant, target=f"user:{invitation.email}", context=context,
                   details={"role": invitation.role})
    if refusal is not None:
        raise members.refuse(action, refusal, actor=actor, merchant=merchant, context=context)
    return invitation


def withdraw_as_staff(*, actor, invitation_ids: list[int], context: RequestContext) -> int:
    """Platform staff make the links of these invitations stop working (the admin); returns how many still worked."""
    with transaction.atomic():
        merchant_ids = Invitation.objects.filter(pk__in=invitation_ids).values_list("merchant_id", flat=True)
        for merchant_id in sorted(set(merchant_ids)):  # in one order, as any two callers take them
            members.lock_merchant(Merchant(pk=merchant_id))
        withdrawn = list(
            Invitation.objects.still_open().select_for_update(of=("self",)).select_related("merchant")
            .filter(pk__in=invitation_ids)
        )
        now = timezone.now()
        for invitation in withdrawn:
            invitation.withdrawn_at = now
            invitation.save(update_fields=["withdrawn_at"])
            record(AuditAction.INVITATION_WITHDRAWN, actor=actor, merchant=invitation.merchant,
                   target=f"user:{invitation.email}", context=context,
                   details={"role": invitation.role, "by_staff": True})
    return len(withdrawn)


def digest_of_link(token: str) -> str | None:
    """The digest a link's token is looked up by; None for what no link of ours carries. The token itself is
    kept nowhere, the session included: callers keep the digest."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token_digest(token)


def open_invitation(digest: str | None) -> Invitation | None:
    """The invitation of this token digest, if it still works."""
    if not digest:
        return None
    invitation = (
        Invitation.objects.still_open().select_related("merchant", "invited_by").filter(token_digest=digest).first()
    )
    return None if _unusable(invitation, lock=False) else invitation


def accept(*, user, digest: str, context: RequestContext) -> Membership:
    """``user``, signed in with both factors as the invited address, joins the merchant."""
    with transaction.atomic():
        invitation = _locked_open_invitation(digest)
        refusal = _unusable(invitation)
        if refusal is None and invitation.email != user.email.lower():
            refusal = MemberChangeRefused(
                f"This invitation is for {invitation.email}: sign in as that account to accept it.",
                code="other_account",
            )
        if refusal is None:
            try:
                return _join(invitation, user, context)
            except MemberChangeRefused as refused:
                refusal = refused
    raise _refuse_joining(refusal, invitation, actor=user, context=context)


def create_account_and_accept(*, digest: str, password: str, context: RequestContext) -> User:
    """A new account for the invited address, with ``password`` (already validated), member of the merchant.
    It has no authenticator yet: its first sign-in sets one up before any page opens."""
    has_account = MemberChangeRefused("This address has an account already: sign in to accept the invitation.",
                                      code="has_account")
    with transaction.atomic():
        invitation = _locked_open_invitation(digest)
        refusal = _unusable(invitation)
        if refusal is None and User.objects.filter(email__iexact=invitation.email).exists():
            refusal = has_account
        if refusal is None:
            try:
                with transaction.atomic():
                    user = User.objects.create_user(email=invitation.email, password=password)
                    _join(invitation, user, context)
                return user
            except (IntegrityError, ValidationError):
                # The same address's account, made at the same moment by another request: found by the model's
                # own uniqueness check (ValidationError) if that one committed first, else by the database.
                refusal = has_account
    raise _refuse_joining(refusal, invitation, actor=None, context=context)


def _locked_open_invitation(digest: str | None) -> Invitation | None:
    """The open invitation of ``digest``, locked after its merchant's row (the module's lock order)."""
    if not digest:
        return None
    merchant_id = Invitation.objects.filter(token_digest=digest).values_list("merchant_id", flat=True).first()
    if merchant_id is None:
        return None
    members.lock_merchant(Merchant(pk=merchant_id))
    return (
        # Only the invitation's row: its inviter may be gone (an outer join PostgreSQL will not lock).
        Invitation.objects.still_open().select_for_update(of=("self",)).select_related("merchant", "invited_by")
        .filter(token_digest=digest).first()
    )


def _unusable(invitation: Invitation | None, *, lock: bool = True) -> MemberChangeRefused | None:
    """Why the link does not work, if it does not: gone, or its sender is no longer an Owner of the merchant (a
    demoted or removed Owner's invitations stop working with their role)."""
    if invitation is None or invitation.invited_by is None:
        return InvitationGone()
    if not members.is_owner_now(invitation.invited_by, invitation.merchant, lock=lock):
        return InvitationGone()
    return None


def _join(invitation: Invitation, user, context: RequestContext) -> Membership:
    try:
        with transaction.atomic():
            membership = Membership.objects.create(user=user, merchant=invitation.merchant, role=invitation.role)
    except IntegrityError:
        raise MemberChangeRefused(
            f"You are already a member of {invitation.merchant.name}.", code="already_member",
        ) from None
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    record(AuditAction.MEMBERSHIP_ADDED, actor=user, merchant=invitation.merchant, target=f"user:{user.email}",
           context=context, details={"role": invitation.role, "invited_by": invitation.invited_by.email})
    return membership


def _refuse_joining(refusal: MemberChangeRefused, invitation: Invitation | None, *, actor,
                    context: RequestContext) -> MemberChangeRefused:
    """Audit a refused use of an invitation that exists (after the rollback: in its own transaction), and hand the
    refusal back to raise. A made-up link is not audited: anyone could fill the trail with them."""
    if invitation is not None:
        record(
            AuditAction.MEMBERSHIP_ADDED, actor=actor, merchant=invitation.merchant, outcome=AuditOutcome.REFUSED,
            target=f"user:{invitation.email}", context=context, details={"reason": refusal.code},
        )
    return refusal


def _send(invitation: Invitation, link: str) -> bool:
    merchant = invitation.merchant
    expires = invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"{invitation.invited_by.email} invites you to {merchant.name} on the processing sandbox dashboard, with the "
        f"{invitation.get_role_display()} role.\n\n"
        f"Accept here (the link works once, until {expires}):\n{link}\n\n"
        "Without an account for this address you choose a password there, then set up an authenticator app at "
        "your first sign-in. If you did not expect this, ignore this email.\n"
    )
    try:
        send_mail(f"[{merchant.name}] You are invited to the sandbox dashboard", body, settings.DEFAULT_FROM_EMAIL,
                  [invitation.email])
    except OSError:
        logger.exception("could not send the invitation email merchant=%s", merchant.slug)
        return False
    return True
