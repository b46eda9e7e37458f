"""Staff see every key, its status and allowlist; never its secret, and they change nothing here."""
from django.contrib import admin

from dashboard.admin_site import StaffModelAdminMixin

from .models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(StaffModelAdminMixin, admin.ModelAdmin):
    list_display = ["public_key", "name", "merchant", "status", "secret_fingerprint", "created_at", "last_used_at"]
    list_filter = ["status", "merchant"]
    search_fields = ["public_key", "name", "merchant__name", "merchant__slug"]
    list_select_related = ["merchant"]
    date_hierarchy = "created_at"
    # SECURITY: the sealed secret is not a field here at all, not even read-only.
    fields = [
        "merchant", "public_key", "name", "status", "secret_fingerprint", "allowed_networks",
        "created_at", "created_by", "first_activated_at", "activated_at", "activated_by",
        "deactivated_at", "deactivated_by", "allowlist_changed_at", "allowlist_changed_by",
        "archived_at", "archived_by", "last_used_at", "last_used_ip",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
