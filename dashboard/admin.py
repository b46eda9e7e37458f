"""Staff's view of users, merchants and memberships, authenticators and the audit trail."""
from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.db.models import Count, Q
from django.forms.models import BaseInlineFormSet
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import invitations
from .admin_site import StaffModelAdminMixin
from .audit import RequestContext, record
from .models import AuditAction, AuditEvent, Invitation, Membership, Merchant, Role, User


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class EmailInAnyCaseMixin:
    """The email as sign-in matches it: stored lower-case, and taken if another user has it in any case (the
    database's constraint says so too, but only as an error at the top of the form, in its own words)."""

    def clean_email(self):
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("Another user already has this email address.", code="unique")
        return email


class UserCreationForm(EmailInAnyCaseMixin, AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserEditForm(EmailInAnyCaseMixin, UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(StaffModelAdminMixin, DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "has_authenticator", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "full_name"]
    readonly_fields = ["last_login", "date_joined", "last_merchant"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name", "time_zone", "last_merchant"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "usable_password", "password1", "password2"]})]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            confirmed_devices=Count("totpdevice", filter=Q(totpdevice__confirmed=True))
        )

    @admin.display(boolean=True, description="2FA set up")
    def has_authenticator(self, obj):
        return obj.confirmed_devices > 0


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(StaffModelAdminMixin, DjangoGroupAdmin):
    pass


class MembershipFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        if self.instance.pk is None or not Membership.objects.owners_of(self.instance).exists():
            return
        owners = [form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")
                  and form.cleaned_data.get("role") == Role.OWNER]
        if not owners:
            # No one left to manage its keys and members: only Owners do (staff can only deactivate a key).
            raise forms.ValidationError(
                "A merchant keeps at least one Owner: make another member Owner before removing or changing the last."
            )


class MembershipInline(StaffModelAdminMixin, admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


def _audit_membership_changes(request, merchant: Merchant, formset) -> None:
    context = RequestContext.from_request(request)
    for membership in formset.new_objects:
        record(
            AuditAction.MEMBERSHIP_ADDED, actor=request.user, merchant=merchant, target=f"user:{membership.user.email}",
            context=context, details={"role": membership.role},
        )
    for membership, changed in formset.changed_objects:
        if "role" in changed:
            record(
                AuditAction.MEMBERSHIP_ROLE_CHANGED, actor=request.user, merchant=merchant,
                target=f"user:{membership.user.email}", context=context,
                details={"from": formset.initial_roles.get(membership.pk), "to": membership.role},
            )
    for membership in formset.deleted_objects:
        record(
            AuditAction.MEMBERSHIP_REMOVED, actor=request.user, merchant=merchant, target=f"user:{membership.user.email}",
            context=context, details={"role": membership.role},
        )


def is_kept_for_its_history(merchant: Merchant) -> bool:
    """Whether rows that are never deleted (its API keys, its audit events) refer to the merchant."""
    return merchant.api_keys.exists() or AuditEvent.objects.filter(merchant=merchant).exists()


@admin.register(Invitation)
class InvitationAdmin(StaffModelAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who was invited where, and what became of it; never the link (only its digest is kept, not shown either)."""

    list_display = [
        "email", "merchant", "role", "invited_by", "created_at", "expires_at", "accepted_at", "withdrawn_at",
    ]
    list_filter = ["role"]
    search_fields = ["email", "merchant__name", "merchant__slug"]
    list_select_related = ["merchant", "invited_by"]
    fields = ["email", "merchant", "role", "invited_by", "created_at", "expires_at", "accepted_at", "withdrawn_at"]
    readonly_fields = fields
    actions = ["withdraw_invitations"]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_withdraw_permission(self, request) -> bool:
        return request.user.has_perm("dashboard.change_invitation")

    @admin.action(description="Withdraw the selected invitations (their links stop working)",
                  permissions=["withdraw"])
    def withdraw_invitations(self, request, queryset):
        count = invitations.withdraw_as_staff(
            actor=request.user, invitation_ids=list(queryset.values_list("pk", flat=True)),
            context=RequestContext.from_request(request),
        )
        self.message_user(request, f"Withdrawn: {count} invitation(s) whose link still worked; the Owners see it in "
                                   "their Activity.")


@admin.register(Merchant)
class MerchantAdmin(StaffModelAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "owner_count", "member_count", "created_at"]
    search_fields = ["name", "slug", "memberships__user__email"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            members=Count("memberships", distinct=True),
            owners=Count("memberships", filter=Q(memberships__role=Role.OWNER), distinct=True),
        )

    def has_delete_permission(self, request, obj=None):
        # A merchant with API keys or audit events is kept for its audit trail: those rows protect it and are never
        # deleted. Django's page said staff lacked a permission to delete them, which no one has, after collecting
        # every row the merchant would take along (a request log and audit trail of 100,000 rows each).
        if obj is not None and self.kept_for_its_history(request, obj):
            return False
        return super().has_delete_permission(request, obj)

    @staticmethod
    def kept_for_its_history(request, merchant: Merchant) -> bool:
        """``is_kept_for_its_history``, worked out once a request: the change page asks, and so does each of the
        delete-permission checks Django makes while it renders (two queries each time)."""
        known = request.__dict__.setdefault("merchants_kept_for_their_history", {})
        if merchant.pk not in known:
            known[merchant.pk] = is_kept_for_its_history(merchant)
        return known[merchant.pk]

    def get_actions(self, request):
        # Deleting in bulk would meet the same protected rows, reported as a missing permission.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        merchant = self.get_object(request, object_id)
        kept = merchant is not None and self.kept_for_its_history(request, merchant)
        extra_context = {**(extra_context or {}), "kept_for_its_history": kept}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Owners", ordering="owners")
    def owner_count(self, obj):
        return obj.owners

    @admin.display(description="Members", ordering="members")
    def member_count(self, obj):
        return obj.members

    def save_formset(self, request, form, formset, change):
        if formset.model is Membership:
            # The roles before the edit, to say in the trail what a change was from.
            formset.initial_roles = dict(
                Membership.objects.filter(merchant=form.instance).values_list("pk", "role")
            )
        super().save_formset(request, form, formset, change)
        if formset.model is Membership:
            _audit_membership_changes(request, form.instance, formset)


def _audit_device_reset(request, device) -> None:
    record(
        AuditAction.DEVICE_RESET, actor=request.user, target=f"user:{device.user.email}",
        context=RequestContext.from_request(request), details={"device": device.name, "kind": device._meta.model_name},
    )


class DeviceAdmin(StaffModelAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Staff see who has which second factor and may delete one (a 2FA reset); never its key or codes."""

    list_select_related = ["user"]
    search_fields = ["user__email"]
    list_filter = ["confirmed"]

    def delete_model(self, request, obj):
        _audit_device_reset(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for device in queryset.select_related("user"):
            _audit_device_reset(request, device)
        super().delete_queryset(request, queryset)


admin.site.unregister(TOTPDevice)
admin.site.unregister(StaticDevice)


@admin.register(TOTPDevice)
class AuthenticatorAdmin(DeviceAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    readonly_fields = fields


@admin.register(StaticDevice)
class BackupCodesAdmin(DeviceAdmin):
    list_display = ["user", "name", "codes_left", "created_at", "last_used_at"]
    fields = ["user", "name", "codes_left", "created_at", "last_used_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(remaining=Count("token_set"))

    @admin.display(description="Unused codes")
    def codes_left(self, obj):
        return obj.remaining


@admin.register(AuditEvent)
class AuditEventAdmin(StaffModelAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "action", "outcome", "actor_email", "merchant", "target", "ip_address"]
    list_filter = ["action", "outcome", "merchant", "created_at"]
    search_fields = ["actor_email", "target", "ip_address"]
    date_hierarchy = "created_at"
    list_select_related = ["merchant"]
    fields = [
        "created_at", "action", "outcome", "actor", "actor_email", "merchant", "target",
        "ip_address", "user_agent", "details",
    ]
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None):
        return False
