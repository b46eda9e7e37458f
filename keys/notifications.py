"""Emails to every Owner of a merchant when one of its keys changes in a way that matters."""
from __future__ import annotations

import logging

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


def _message(key, what: str, actor, context: RequestContext) -> tuple[str, str]:
    when = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    subject = f"[{key.merchant.name}] API key {what}"
    allowed = ", ".join(key.allowed_networks) or "any IP address"
    # Never the secret: only what identifies the key and the change.
    body = (
        f"An API key of {key.merchant.name} was {what}.\n\n"
        f"API key: {key.public_key}\n"
        f"Name: {key.name or '(no name)'}\n"
        f"Status now: {key.get_status_display()}\n"
        f"Allowed IP addresses: {allowed}\n"
        f"By: {actor.email}\n"
        f"When: {when}\n"
        f"From address: {context.ip_address or 'unknown'}\n\n"
        "If you did not expect this, deactivate the key and contact support.\n"
    )
    return subject, body


def notify_owners(*, key, action: AuditAction, actor, context: RequestContext) -> None:
    """Queue one email per Owner, sent only once the change has committed."""
    what = NOTIFIED_EVENTS.get(action)
    if what is None:
        return
    recipients = list(Membership.objects.owners_of(key.merchant).values_list("user__email", flat=True))
    subject, body = _message(key, what, actor, context)
    messages = [(subject, body, settings.DEFAULT_FROM_EMAIL, [email]) for email in recipients]

    def send() -> None:
        try:
            send_mass_mail(messages, fail_silently=False)
        except OSError:
            # The change is done and audited; a mail server being down must not turn it into an error.
            logger.exception("could not send key notification action=%s", action.value)

    transaction.on_commit(send)
