"""Who may open which dashboard page: one declarative rule per view."""
from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from .audit import escape_for_log
from .models import Membership, Role

logger = logging.getLogger("dashboard.access")


class RoleRequired(PermissionDenied):
    """Raised when the user is a member of the merchant, but with a role the page does not allow."""

    def __init__(self, membership: Membership, allowed_roles: frozenset[str]):
        names = " or ".join(Role(role).label for role in Role if role in allowed_roles)
        super().__init__(
            f"This page needs the {names} role. Your role at {membership.merchant.name} is "
            f"{membership.get_role_display()}."
        )


@method_decorator(never_cache, name="dispatch")
class VerifiedUserRequiredMixin:
    """Signed in with both factors: a password alone opens nothing."""

    def dispatch(self, request, *args, **kwargs):
        user = request.user
        if not (user.is_authenticated and user.is_verified()):
            if request.method not in ("GET", "HEAD"):
                # A session that ended while its form was open: say why nothing happened.
                messages.warning(request, "Your session had ended, so that was not done. Sign in, then send the "
                                          "form again.")
            return redirect_to_login(self.page_to_return_to())
        self.authorize(request, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def page_to_return_to(self) -> str:
        """Where signing in leads back to: this page."""
        return self.request.get_full_path()

    def authorize(self, request, **kwargs) -> None:
        """Raise Http404 or PermissionDenied when the verified user may not open this page."""


class MerchantMemberRequiredMixin(VerifiedUserRequiredMixin):
    """A page of one merchant, named by ``merchant_slug`` in its URL.

    A merchant the user is not a member of answers 404, so its existence is not revealed; a member whose
    role is not in ``allowed_roles`` gets the 403 page naming the role needed.
    """

    allowed_roles: frozenset[str] = frozenset({Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.OWNER})

    def authorize(self, request, **kwargs) -> None:
        user = request.user
        membership = (
            Membership.objects.select_related("merchant")
            .filter(user=user, merchant__slug=kwargs["merchant_slug"])
            .first()
        )
        if membership is None:
            logger.warning("access refused reason=not_member user=%s merchant=%s", user.pk,
                           escape_for_log(kwargs["merchant_slug"]))
            raise Http404("No such merchant.")
        request.membership = self.membership = membership
        request.merchant = self.merchant = membership.merchant
        if membership.role not in self.allowed_roles:
            logger.warning("access refused reason=role user=%s merchant=%s role=%s path=%s", user.pk,
                           membership.merchant.slug, membership.role, escape_for_log(request.path))
            raise RoleRequired(membership, self.allowed_roles)
        if user.last_merchant_id != membership.merchant_id:
            user.last_merchant = membership.merchant
            user.save(update_fields=["last_merchant"])

    def get_context_data(self, **kwargs):
        kwargs.setdefault("merchant", self.merchant)
        kwargs.setdefault("membership", self.membership)
        return super().get_context_data(**kwargs)


class OwnerRequiredMixin(MerchantMemberRequiredMixin):
    allowed_roles = frozenset({Role.OWNER})


class RestrictedAllowedMixin(MerchantMemberRequiredMixin):
    """Pages every member sees, the Restricted role included (contact support)."""

    allowed_roles = frozenset(Role.values)


class ActionMixin:
    """A view whose URL changes something: it answers POST, and any other method gets the 405 page.

    Its form lives on a page of its own (``form_url``), so an address typed, bookmarked or prefetched never
    lands on an action. Listed before the access mixin in a view's bases, so ``page_to_return_to`` is its own.
    """

    http_method_names = ["post"]

    def form_url(self) -> str:
        raise NotImplementedError

    def page_to_return_to(self) -> str:
        # An action answers POST only: signing in again leads back to its form, not to a 405.
        return self.request.get_full_path() if self.request.method in ("GET", "HEAD") else self.form_url()

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = render(request, "405.html", {"form_url": self.form_url()}, status=405)
        response["Allow"] = ", ".join(method.upper() for method in self.http_method_names)
        return response
