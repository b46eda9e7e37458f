"""Staff see every key, its status and allowlist; never its secret. The one change they make here is to
deactivate a key (``keys.services.deactivate_key_as_staff``): with a reason and their own fresh 2FA code."""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from dashboard.admin_site import StaffModelAdminMixin
from dashboard.audit import RequestContext
from dashboard.two_factor import CodeRefused

from . import services
from .forms import StaffDeactivationForm
from .models import ApiKey, KeyAction


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

    @staticmethod
    def may_deactivate(request) -> bool:
        return request.user.has_perm(services.STAFF_DEACTIVATION_PERMISSION)

    def get_urls(self):
        return [
            path("<int:key_id>/deactivate/", self.admin_site.admin_view(self.deactivate_view),
                 name="keys_apikey_deactivate"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        key = self.get_object(request, object_id)
        deactivate_url = None
        if key is not None and key.allows(KeyAction.DEACTIVATE) and self.may_deactivate(request):
            deactivate_url = reverse("admin:keys_apikey_deactivate", args=[key.pk], current_app=self.admin_site.name)
        return super().change_view(
            request, object_id, form_url, extra_context={**(extra_context or {}), "deactivate_url": deactivate_url},
        )

    @method_decorator(sensitive_post_parameters("code"))
    def deactivate_view(self, request, key_id: int):
        if not self.may_deactivate(request):
            raise PermissionDenied("Deactivating a merchant's API key needs the staff permission to do so.")
        key = ApiKey.objects.select_related("merchant").filter(pk=key_id).first()
        if key is None:
            raise Http404("No such API key.")
        form = StaffDeactivationForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                key = services.deactivate_key_as_staff(
                    actor=request.user, key_id=key.pk, reason=form.cleaned_data["reason"],
                    code=form.cleaned_data["code"], context=RequestContext.from_request(request),
                )
            except services.KeyNotFound:
                raise Http404("No such API key.") from None
            except CodeRefused as refusal:
                form.add_refusal(refusal)
            except services.KeyActionRefused as refusal:
                form.add_error(None, refusal.message)
            else:
                self.message_user(
                    request,
                    f"API key {key.public_key} of {key.merchant.name} is deactivated: requests with it are refused "
                    "from now on. Its Owners were emailed the reason.",
                    messages.SUCCESS,
                )
                return redirect("admin:keys_apikey_change", key.pk)
        unavailable = None
        if not key.allows(KeyAction.DEACTIVATE):
            unavailable = services.wrong_status_refusal(key, KeyAction.DEACTIVATE).message
        context = {
            **self.admin_site.each_context(request),
            "title": "Deactivate an API key",
            "opts": self.model._meta,
            "key": key,
            "form": form,
            "unavailable": unavailable,
        }
        return TemplateResponse(request, "admin/keys/apikey/deactivate.html", context)
