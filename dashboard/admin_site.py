"""The admin panel site: staff only, and only after both factors."""
from functools import wraps
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

    def admin_view(self, view, cacheable=False):
        """Every admin view, with NUL characters taken out of the query string first.

        The changelist's search and filters reach the database as typed; PostgreSQL refuses text with NUL
        in it, which would be a 500. Form fields already refuse NUL with a message next to the field.
        """
        guarded = super().admin_view(view, cacheable)

        @wraps(guarded)
        def without_nul(request, *args, **kwargs):
            if any("\x00" in value for _name, values in request.GET.lists() for value in values):
                cleaned = request.GET.copy()
                for name in list(cleaned):
                    cleaned.setlist(name, [value.replace("\x00", "") for value in cleaned.getlist(name)])
                request.GET = cleaned
            return guarded(request, *args, **kwargs)

        return without_nul
