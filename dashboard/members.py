"""An Owner's changes to the merchant's other members: a new role, or leaving the merchant.

As the key lifecycle (keys.services): keyword-only functions taking the acting user and a fresh 2FA code, each
change holding its merchant's row lock first. The actor must be an Owner (read again here); Owners' memberships
and the Owner role itself are the platform staff's to change (admin), never an Owner's. The change and its audit
event commit together, holding a lock on the membership; a refusal is audited after it, and nothing changes.
"""
from __future__ import annotations

from django.db import transaction

from .audit import RequestContext, record
from .models import AuditAction, AuditOutcome, Membership, Merchant, Role
from .two_factor import verify_fresh_code

# The roles an Owner may give: every one but Owner.
ASSIGNABLE_ROLES = [role for role in Role if role != Role.OWNER]
# What each role may do on the platform (its documentation), in the words the Members page uses.
ROLE_SUMMARIES = {
    Role.VIEW: "sees account information, transactions, limits and contacts; creates payment requests",
    Role.EXCHANGE: "what View does, and exchanges funds",
    Role.LIMITS: "what View does, and manages hot-wallet limits and cold-wallet transfers",
    Role.OWNER: "everything, API keys and members included",
    Role.RESTRICTED: "can only contact support",
}


class MemberChangeRefused(Exception):
    """Nothing changed. ``code`` is stable, ``message`` is for the user."""

    def __init__(self, message: str, *, code: str):
        self.message = message
        self.code = code
        super().__init__(message)


class MemberNotFound(MemberChangeRefused):
    def __init__(self):
        super().__init__("No such member of this merchant.", code="no_member")


def change_role(
    *, actor, merchant: Merchant, membership_id: int, role: str, code: str, context: RequestContext
) -> Membership:
    """Give the member ``role`` (any but Owner); from the next request on, they see what it allows."""
    action = AuditAction.MEMBERSHIP_ROLE_CHANGED
    require_owner(action, actor=actor, merchant=merchant, context=context)
    if role not in ASSIGNABLE_ROLES:
        raise refuse(action, MemberChangeRefused(
            "Only platform staff give the Owner role: contact support.", code="owner_role",
        ), actor=actor, merchant=merchant, context=context)
    verify_fresh_code(actor, code, context=context, merchant=merchant, purpose="change a member's role")

    def change(membership: Membership) -> dict:
        if membership.role == role:
            raise MemberChangeRefused(
                f"{membership.user.email} already has the {membership.get_role_display()} role.", code="same_role",
            )
        before = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        return {"from": before, "to": role}

    return _change(action, actor=actor, merchant=merchant, membership_id=membership_id, context=context, change=change)


def remove_member(*, actor, merchant: Merchant, membership_id: int, code: str, context: RequestContext) -> Membership:
    """Take the member off the merchant: their next request to its pages is a 404. Their account stays."""
    action = AuditAction.MEMBERSHIP_REMOVED
    require_owner(action, actor=actor, merchant=merchant, context=context)
    verify_fresh_code(actor, code, context=context, merchant=merchant, purpose="remove a member")

    def change(membership: Membership) -> dict:
        membership.delete()
        return {"role": membership.role}

    return _change(action, actor=actor, merchant=merchant, membership_id=membership_id, context=context, change=change)


class NotOwner(MemberChangeRefused):
    def __init__(self):
        super().__init__("Managing members needs the Owner role.", code="not_owner")


def lock_merchant(merchant: Merchant) -> None:
    """Serialise the changes of one merchant's API keys (keys.services), members and invitations: each takes this
    lock first, so none waits for another holding a row it needs (a deadlock). NO KEY UPDATE: rows being written
    that refer to the merchant (an audit event, a request-log row) check their foreign key without waiting for it."""
    Merchant.objects.select_for_update(no_key=True).filter(pk=merchant.pk).first()


def is_owner_now(user, merchant: Merchant, *, lock: bool = True) -> bool:
    """Whether ``user`` is an Owner of ``merchant``. With ``lock``, inside the caller's transaction, holding the
    membership's row: a demotion by staff waits for the change in progress, and one that came first is seen."""
    # No ordering: Membership's default joins the merchant and the user, and FOR UPDATE would lock their rows too
    # (the user's then waited for a 2FA check committing an audit event of that user: a deadlock).
    owners = Membership.objects.filter(user=user, merchant=merchant, role=Role.OWNER).order_by()
    if lock:
        return owners.select_for_update(of=("self",)).first() is not None
    return owners.exists()


def require_owner(action: AuditAction, *, actor, merchant: Merchant, context: RequestContext) -> None:
    # Read again here, not trusted from the view: a demoted Owner is refused on the very next request.
    if not is_owner_now(actor, merchant, lock=False):
        raise refuse(action, NotOwner(), actor=actor, merchant=merchant, context=context)


def _change(action: AuditAction, *, actor, merchant: Merchant, membership_id: int, context: RequestContext,
            change) -> Membership:
    refusal, target = None, ""
    with transaction.atomic():
        lock_merchant(merchant)
        membership = (
            Membership.objects.select_for_update(of=("self",)).select_related("user")
            .filter(merchant=merchant, pk=membership_id).first()
        )
        if not is_owner_now(actor, merchant):
            refusal = NotOwner()
        elif membership is None:
            refusal = MemberNotFound()
        else:
            target = f"user:{membership.user.email}"
            if membership.role == Role.OWNER:
                refusal = MemberChangeRefused(
                    "Only platform staff change or remove an Owner: contact support.", code="owner_member",
                )
            else:
                try:
                    with transaction.atomic():
                        details = change(membership)
                except MemberChangeRefused as refused:
                    refusal = refused
                else:
                    record(action, actor=actor, merchant=merchant, target=target, context=context, details=details)
    if refusal is not None:
        raise refuse(action, refusal, actor=actor, merchant=merchant, context=context, target=target)
    return membership


def refuse(action: AuditAction, refusal: MemberChangeRefused, *, actor, merchant: Merchant, context: RequestContext,
            target: str = "") -> MemberChangeRefused:
    """Audit a refusal in its own transaction, then hand the exception back for the caller to raise."""
    record(action, actor=actor, merchant=merchant, outcome=AuditOutcome.REFUSED, target=target, context=context,
           details={"reason": refusal.code})
    return refusal
