"""Staff edit the currencies and each merchant's sandbox balances; the request log is read-only."""
from django.contrib import admin

from dashboard.admin_site import StaffModelAdminMixin

from .models import ApiRequest, Balance, Currency


@admin.register(Currency)
class CurrencyAdmin(StaffModelAdminMixin, admin.ModelAdmin):
    list_display = ["id", "code", "type", "minimum_amount", "deposit_fee_percent", "withdrawal_fee_percent", "precision"]
    list_filter = ["type"]
    search_fields = ["code"]


@admin.register(Balance)
class BalanceAdmin(StaffModelAdminMixin, admin.ModelAdmin):
    list_display = ["merchant", "currency", "amount"]
    list_filter = ["currency", "merchant"]
    search_fields = ["merchant__name", "merchant__slug", "currency__code"]
    list_select_related = ["merchant", "currency"]
    autocomplete_fields = ["merchant"]


@admin.register(ApiRequest)
class ApiRequestAdmin(StaffModelAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "merchant", "api_key", "ip_address", "method", "path", "status", "error_code"]
    list_filter = ["status", "error_code", "merchant"]
    search_fields = ["api_key__public_key", "ip_address", "path"]
    list_select_related = ["merchant", "api_key"]
    readonly_fields = list_display

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
