"""The admin panel site: staff only, and only after both factors."""
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django_otp.admin import OTPAdminSite


class StaffAdminSite(OTPAdminSite):
    site_header = "Processing sandbox: staff"
    site_title = "Sandbox staff"
    index_title = "Platform administration"

    def login(self, request, extra_context=None):
        """Staff sign in through the dashboard's own two-step sign-in, never a password-only form."""
        user = request.user
        if user.is_authenticated and user.is_verified() and not user.is_staff:
            raise PermissionDenied("The admin panel is for platform staff.")
        next_url = request.GET.get("next") or reverse("admin:index", current_app=self.name)
        return redirect(f"{reverse('dashboard:sign-in')}?{urlencode({'next': next_url})}")
