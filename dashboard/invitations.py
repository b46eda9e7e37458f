"""Inviting a person to a merchant by email, and their acceptance.

An Owner invites an address with a role (never Owner) and a fresh 2FA code; the email carries a link with a
token, kept here only as its SHA-256, that works once for INVITATION_LIFETIME. Whoever opens the link for an
address without an account chooses its password there, and sets up an authenticator at their first sign-in; an
address with an account accepts once signed in with both factors as that account. The page of the link says
nothing of the address that another visitor could not read in the email itself.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import members
from .audit import RequestContext, record
from .members import MemberChangeRefused
from .models import AuditAction, Invitation, Membership, Merchant, User

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
) -> Invitation:
    """Invite ``email`` with ``role``; ``link_for(token)`` is the absolute address of the link the email carries."""
    action = AuditAction.MEMBER_INVITED
    email = normalized_email(email)
    members.require_owner(action, actor=actor, merchant=merchant, context=context)
    if role not in members.ASSIGNABLE_ROLES:
        raise members.refuse(action, MemberChangeRefused(
            "Only platform staff give the Owner role: invite with another role, then contact support.",
            code="owner_role",
        ), actor=actor, merchant=merchant, context=context, target=f"user:{email}")
    if Membership.objects.filter(merchant=merchant, user__email__iexact=email).exists():
        raise members.refuse(action, MemberChangeRefused(
            f"{email} is already a member of {merchant.name}.", code="already_member",
        ), actor=actor, merchant=merchant, context=context, target=f"user:{email}")
    members.verify_code(actor=actor, merchant=merchant, code=code, context=context, purpose="invite a member")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    try:
        with transaction.atomic():
            Invitation.objects.filter(
                merchant=merchant, email=email, accepted_at__isnull=True, withdrawn_at__isnull=True,
            ).update(withdrawn_at=now)
            invitation = Invitation.objects.create(
                merchant=merchant, email=email, role=role, token_digest=token_digest(token), invited_by=actor,
                created_at=now, expires_at=now + INVITATION_LIFETIME,
            )
            record(action, actor=actor, merchant=merchant, target=f"user:{email}", context=context,
                   details={"role": role})
            link = link_for(token)
            transaction.on_commit(lambda: _send(invitation, link))
    except IntegrityError:
        # Another Owner invited the same address at the same moment: theirs stands.
        raise members.refuse(action, MemberChangeRefused(
            f"{email} was invited by someone else just now: see the pending invitations.", code="invited_meanwhile",
        ), actor=actor, merchant=merchant, context=context, target=f"user:{email}") from None
    return invitation


def withdraw(*, actor, merchant: Merchant, invitation_id: int, code: str, context: RequestContext) -> Invitation:
    """Make an invitation's link stop working."""
    action = AuditAction.INVITATION_WITHDRAWN
    members.require_owner(action, actor=actor, merchant=merchant, context=context)
    members.verify_code(actor=actor, merchant=merchant, code=code, context=context, purpose="withdraw an invitation")
    with transaction.atomic():
        invitation = (
            Invitation.objects.still_open().select_for_update().filter(merchant=merchant, pk=invitation_id).first()
        )
        if invitation is not None:
            invitation.withdrawn_at = timezone.now()
            invitation.save(update_fields=["withdrawn_at"])
            record(action, actor=actor, merchant=merchant, target=f"user:{invitation.email}", context=context,
                   details={"role": invitation.role})
    if invitation is None:
        raise members.refuse(action, members.MemberNotFound(), actor=actor, merchant=merchant, context=context)
    return invitation


def open_invitation(token: str) -> Invitation | None:
    """The invitation this token opens, if it still works."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return Invitation.objects.still_open().select_related("merchant").filter(token_digest=token_digest(token)).first()


def accept(*, user, token: str, context: RequestContext) -> Membership:
    """``user``, signed in with both factors as the invited address, joins the merchant."""
    with transaction.atomic():
        invitation = _locked_open_invitation(token)
        if invitation.email != user.email.lower():
            raise MemberChangeRefused(
                f"This invitation is for {invitation.email}: sign in as that account to accept it.",
                code="other_account",
            )
        return _join(invitation, user, context)


def create_account_and_accept(*, token: str, password: str, context: RequestContext) -> User:
    """A new account for the invited address, with ``password`` (already validated), member of the merchant.
    It has no authenticator yet: its first sign-in sets one up before any page opens."""
    with transaction.atomic():
        invitation = _locked_open_invitation(token)
        if User.objects.filter(email__iexact=invitation.email).exists():
            raise MemberChangeRefused(
                f"{invitation.email} has an account already: sign in to accept the invitation.", code="has_account",
            )
        user = User.objects.create_user(email=invitation.email, password=password)
        _join(invitation, user, context)
    return user


def _locked_open_invitation(token: str) -> Invitation:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvitationGone()
    invitation = (
        # Only the invitation's row: its inviter may be gone (an outer join PostgreSQL will not lock).
        Invitation.objects.still_open().select_for_update(of=("self",)).select_related("merchant", "invited_by")
        .filter(token_digest=token_digest(token)).first()
    )
    if invitation is None:
        raise InvitationGone()
    return invitation


def _join(invitation: Invitation, user, context: RequestContext) -> Membership:
    if Membership.objects.filter(user=user, merchant=invitation.merchant).exists():
        raise MemberChangeRefused(f"You are already a member of {invitation.merchant.name}.", code="already_member")
    membership = Membership.objects.create(user=user, merchant=invitation.merchant, role=invitation.role)
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    inviter = invitation.invited_by.email if invitation.invited_by else ""
    record(AuditAction.MEMBERSHIP_ADDED, actor=user, merchant=invitation.merchant, target=f"user:{user.email}",
           context=context, details={"role": invitation.role, "invited_by": inviter})
    return membership


def _send(invitation: Invitation, link: str) -> None:
    merchant = invitation.merchant
    inviter = invitation.invited_by.email if invitation.invited_by else "An Owner"
    expires = invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"{inviter} invites you to {merchant.name} on the processing sandbox dashboard, with the "
        f"{invitation.get_role_display()} role.\n\n"
        f"Accept here (the link works once, until {expires}):\n{link}\n\n"
        "Without an account for this address you choose a password there, then set up an authenticator app at "
        "your first sign-in. If you did not expect this, ignore this email.\n"
    )
    try:
        send_mail(f"[{merchant.name}] You are invited to the sandbox dashboard", body, settings.DEFAULT_FROM_EMAIL,
                  [invitation.email])
    except OSError:
        # The invitation stands and is listed; the Owner can invite again to send a new link.
        logger.exception("could not send the invitation email merchant=%s", merchant.slug)
