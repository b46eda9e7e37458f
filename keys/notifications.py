"""Emails to every Owner of a merchant when one of its keys changes in a way that matters."""
from __future__ import annotations

import logging
import zoneinfo
from datetime import datetime
from datetime import timezone as dt_timezone

from django.core.mail import send_mass_mail
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard.audit import RequestContext
from dashboard.models import AuditAction, Membership

logger = logging.getLogger("keys.notifications")

NOTIFIED_EVENTS = {
    AuditAction.KEY_ACTIVATED: "activated",
    AuditAction.KEY_DEACTIVATED: "deactivated",
    AuditAction.KEY_ARCHIVED: "archived",
    AuditAction.KEY_ALLOWLIST_CHANGED: "given new IP addresses",
}


def _when(at: datetime, time_zone: str) -> str:
    """The time in the recipient's chosen zone, as the dashboard shows it to them, and in UTC."""
    utc = at.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        # A zone saved around the form's check (a shell, a data load) or gone from this host's tz database: the
        # email, sent within the key action's transaction, must not undo the action.
        return utc
    if time_zone == "UTC":
        return utc
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M:%S} {time_zone} ({utc})"


def _message(key, what: str, actor, context: RequestContext, when: str, staff_reason: str) -> tuple[str, str]:
    subject = f"[{key.merchant.name}] API key {what}"
    allowed = ", ".join(key.allowed_networks) or "any IP address"
    if staff_reason:
        by = f"By: {actor.email} (platform staff)\nReason: {staff_reason}\n"
        closing = "Platform staff did this for you: to go on, generate and activate a new key. Questions: contact support.\n"
    else:
        by = f"By: {actor.email}\n"
        closing = "If you did not expect this, deactivate the key and contact support.\n"
    # Never the secret: only what identifies the key and the change.
    body = (
        f"An API key of {key.merchant.name} was {what}.\n\n"
        f"API key: {key.public_key}\n"
        f"Name: {key.name or '(no name)'}\n"
        f"Status now: {key.get_status_display()}\n"
        f"Allowed IP addresses: {allowed}\n"
        f"{by}"
        f"When: {when}\n"
        f"From address: {context.ip_address or 'unknown'}\n\n"
        f"{closing}"
    )
    return subject, body


def notify_owners(*, key, action: AuditAction, actor, context: RequestContext, staff_reason: str = "") -> None:
    """Queue one email per Owner, sent only once the change has committed. ``staff_reason``: platform staff made
    the change, for this reason."""
    what = NOTIFIED_EVENTS.get(action)
    if what is None:
        return
    recipients = Membership.objects.owners_of(key.merchant).values_list("user__email", "user__time_zone")
    now = timezone.now()
    messages = [
        (*_message(key, what, actor, context, _when(now, time_zone), staff_reason), settings.DEFAULT_FROM_EMAIL, [email])
        for email, time_zone in recipients
    ]

    def send() -> None:
        try:
            send_mass_mail(messages, fail_silently=False)
        except OSError:
            # The change is done and audited; a mail server being down must not turn it into an error.
            logger.exception("could not send key notification action=%s", action.value)

    transaction.on_commit(send)
