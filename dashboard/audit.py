"""Writing the audit trail: one function, used by every service."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .models import AuditAction, AuditEvent, AuditOutcome, Merchant
from .net import client_ip

logger = logging.getLogger("dashboard.audit")

USER_AGENT_MAX_LENGTH = 300


@dataclass(frozen=True)
class RequestContext:
    """Where an action came from, as recorded in the audit trail."""

    ip_address: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request) -> RequestContext:
        return cls(
            ip_address=client_ip(request),
            # NUL is not text PostgreSQL will store; a client may send it in any header.
            user_agent=request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")[:USER_AGENT_MAX_LENGTH],
        )


def escape_for_log(value: object) -> str:
    """User-controlled text in a log line, with CR/LF escaped so it cannot forge extra lines."""
    return str(value).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def record(
    action: AuditAction,
    *,
    actor=None,
    actor_email: str = "",
    merchant: Merchant | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
    target: str = "",
    context: RequestContext | None = None,
    details: dict | None = None,
) -> AuditEvent:
    """Append one event. Callers pass no secrets in ``details``: the trail is shown to Owners and staff."""
    context = context or RequestContext()
    event = AuditEvent.objects.create(
        merchant=merchant,
        actor=actor if actor is not None and actor.pk else None,
        actor_email=(actor.email if actor is not None and actor.pk else actor_email)[:254],
        action=action,
        outcome=outcome,
        target=target[:200],
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        details=details or {},
    )
    logger.info(
        "audit action=%s outcome=%s actor=%s merchant=%s target=%s ip=%s details=%s",
        action.value if hasattr(action, "value") else action,
        outcome.value if hasattr(outcome, "value") else outcome,
        escape_for_log(event.actor_email),
        merchant.slug if merchant else "-",
        escape_for_log(event.target),
        context.ip_address,
        escape_for_log(event.details),
    )
    return event
