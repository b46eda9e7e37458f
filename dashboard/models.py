"""Who a user is, which merchants they act for with which role, and the audit trail."""
from __future__ import annotations

import functools
import zoneinfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

@functools.cache
def time_zones() -> tuple[str, ...]:
    """The IANA time zones a user may choose; read from disk once, when first needed, not at import."""
    return tuple(sorted(zoneinfo.available_timezones() - {"localtime"}))


def validate_time_zone(value: str) -> None:
    if value not in time_zones():
        raise ValidationError("Choose a time zone from the list.", code="invalid_time_zone")


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, email: str) -> User:
        # The email is the login name and matches whatever case it is typed in.
        return self.get(email__iexact=email)

    def _create(self, email: str, password: str | None, **extra) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", max_length=254, unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(
        default=False, help_text="Platform staff: may sign in to the admin panel."
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    time_zone = models.CharField(
        max_length=64, default="UTC", validators=[validate_time_zone],
        help_text="Dates in the dashboard are shown in this time zone.",
    )
    last_merchant = models.ForeignKey(
        "Merchant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The merchant the user last worked on; the dashboard opens there.",
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_unique_case_insensitive"),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_short_name(self) -> str:
        return self.full_name or self.email


class Merchant(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True, help_text="Appears in dashboard URLs: /m/acme-payments/ for the slug acme-payments.")
    support_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    VIEW = "view", "View"
    EXCHANGE = "exchange", "Exchange"
    LIMITS = "limits", "Limits"
    OWNER = "owner", "Owner"
    RESTRICTED = "restricted", "Restricted"


class MembershipQuerySet(models.QuerySet):
    def for_user(self, user) -> MembershipQuerySet:
        return self.filter(user=user).select_related("merchant")

    def owners_of(self, merchant: Merchant) -> MembershipQuerySet:
        return self.filter(merchant=merchant, role=Role.OWNER).select_related("user")


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["merchant__name", "user__email"]
        constraints = [
            models.UniqueConstraint(fields=["user", "merchant"], name="one_membership_per_user_and_merchant"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="membership_role_is_known"),
        ]

    def __str__(self) -> str:
        return f"{self.user} at {self.merchant} ({self.get_role_display()})"

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


class InvitationQuerySet(models.QuerySet):
    def unanswered(self) -> InvitationQuerySet:
        """Neither accepted nor withdrawn, whatever its time: those one_open_invitation_per_address counts."""
        return self.filter(accepted_at__isnull=True, withdrawn_at__isnull=True)

    def still_open(self) -> InvitationQuerySet:
        """Neither accepted nor withdrawn, and not past its time."""
        return self.unanswered().filter(expires_at__gt=timezone.now())

    def sent_by_an_owner(self) -> InvitationQuerySet:
        """Those whose sender is an Owner of the invitation's merchant now: the others' links no longer work."""
        return self.filter(invited_by__memberships__merchant=models.F("merchant"),
                           invited_by__memberships__role=Role.OWNER)


class Invitation(models.Model):
    """An Owner's invitation of a person, by email address, to join the merchant with a role (never Owner).

    The link in the email carries a token; only its SHA-256 is kept. It works once, until ``expires_at``.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=20, choices=Role.choices)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The platform's rule: Owners do not make Owners.
            models.CheckConstraint(
                condition=models.Q(role__in=[role for role in Role.values if role != Role.OWNER]),
                name="invitation_role_is_not_owner",
            ),
            # A new invitation to the same address withdraws the one before.
            models.UniqueConstraint(
                fields=["merchant", "email"],
                condition=models.Q(accepted_at__isnull=True, withdrawn_at__isnull=True),
                name="one_open_invitation_per_address",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.merchant}"


class AuditAction(models.TextChoices):
    SIGN_IN = "sign_in", "Sign-in"
    SIGN_IN_FAILED = "sign_in_failed", "Sign-in refused"
    SIGN_OUT = "sign_out", "Sign-out"
    OTP_VERIFIED = "otp_verified", "2FA code accepted"
    OTP_FAILED = "otp_failed", "2FA code refused"
    OTP_THROTTLED = "otp_throttled", "2FA throttled"
    DEVICE_ENROLLED = "device_enrolled", "Authenticator enrolled"
    DEVICE_RESET = "device_reset", "Authenticator reset by staff"
    BACKUP_CODES_GENERATED = "backup_codes_generated", "Backup codes generated"
    MEMBER_INVITED = "member_invited", "Member invited"
    INVITATION_WITHDRAWN = "invitation_withdrawn", "Invitation withdrawn"
    MEMBERSHIP_ADDED = "membership_added", "Member added"
    MEMBERSHIP_ROLE_CHANGED = "membership_role_changed", "Member role changed"
    MEMBERSHIP_REMOVED = "membership_removed", "Member removed"
    KEY_GENERATED = "key_generated", "API key generated"
    KEY_ACTIVATED = "key_activated", "API key activated"
    KEY_DEACTIVATED = "key_deactivated", "API key deactivated"
    KEY_ALLOWLIST_CHANGED = "key_allowlist_changed", "API key IP addresses changed"
    KEY_RENAMED = "key_renamed", "API key renamed"
    KEY_ARCHIVED = "key_archived", "API key archived"


class AuditOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    REFUSED = "refused", "Refused"


class AuditEventQuerySet(models.QuerySet):
    def for_merchant(self, merchant: Merchant) -> AuditEventQuerySet:
        return self.filter(merchant=merchant)

    def sign_ins_of(self, user) -> AuditEventQuerySet:
        return self.filter(actor=user, action__in=[AuditAction.SIGN_IN, AuditAction.SIGN_IN_FAILED])

    def delete(self):
        raise RuntimeError("Audit events are append-only.")


# The reasons a refusal is recorded with (details["reason"]), in the Activity page's words.
REFUSAL_REASONS = {
    "malformed": "not a 2FA code",
    "malformed 2FA code": "not a 2FA code",
    "wrong": "wrong 2FA code",
    "reused": "2FA code already used",
    "throttled": "too many wrong 2FA codes",
    "no_device": "no authenticator set up",
    "hourly limit": "too many failures in the last hour",
    "wrong password": "wrong password",
    "unknown email": "unknown email",
    "another_key_active": "another key was active",
    "wrong_status": "not allowed for a key in that status",
    "limit_reached": "too many keys",
    "not_owner": "needs the Owner role",
    "not_found": "no such key",
    "not_permitted": "needs the staff permission",
    "no_member": "no such member",
    "owner_role": "only platform staff give the Owner role",
    "owner_member": "only platform staff change an Owner",
    "same_role": "already had that role",
    "already_member": "already a member",
    "invited_meanwhile": "invited by someone else at the same moment",
}
# What an event was about (target, "kind:value"), in the Activity page's words.
TARGET_KINDS = {"api_key": "API key", "user": "User"}


def _changed_value_display(value) -> str:
    """One side of a recorded change (details "from" / "to"): a name, a list of IP addresses, a role."""
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "any IP address"
    if value in Role.values:
        return Role(value).label
    return f"“{value}”" if value else "no name"


class AuditEvent(models.Model):
    """One thing that happened. Rows are only ever added: saving an existing row or deleting one raises."""

    merchant = models.ForeignKey(Merchant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the trail still says who it was after the user is deleted.
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    outcome = models.CharField(max_length=10, choices=AuditOutcome.choices, default=AuditOutcome.SUCCEEDED)
    target = models.CharField(max_length=200, blank=True, help_text="What the action was about, e.g. an API key.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["merchant", "-created_at", "-id"], name="audit_merchant_newest")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.get_outcome_display()}) by {self.actor_email or 'nobody'}"

    @property
    def reason_display(self) -> str:
        """Why it was refused, in words; a reason without words of its own as recorded."""
        reason = self.details.get("reason", "") if isinstance(self.details, dict) else ""
        return REFUSAL_REASONS.get(reason, reason)

    @property
    def change_display(self) -> str:
        """What changed, for the events that record it (a rename, new IP addresses, a new role): "from → to"."""
        details = self.details if isinstance(self.details, dict) else {}
        if "from" not in details or "to" not in details:
            return ""
        return f"{_changed_value_display(details['from'])} → {_changed_value_display(details['to'])}"

    @property
    def staff_reason(self) -> str:
        """Why platform staff did it, for the actions staff take on a merchant's behalf (a key deactivated)."""
        return self.details.get("staff_reason", "") if isinstance(self.details, dict) else ""

    @property
    def target_display(self) -> str:
        kind, separator, value = self.target.partition(":")
        return f"{TARGET_KINDS[kind]} {value}" if separator and kind in TARGET_KINDS else self.target

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise RuntimeError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RuntimeError("Audit events are append-only.")
