"""The "API keys" tab: Owners only. Views parse input, call one service, and show the outcome."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import TemplateView

from dashboard.access import ActionMixin, OwnerRequiredMixin
from dashboard.audit import RequestContext
from dashboard.forms import CodeForm
from dashboard.pagination import requested_page
from dashboard.qr import qr_code_svg
from dashboard.two_factor import CodeRefused

from . import services
from .allowlist import is_address_allowed
from .forms import ActivateKeyForm, AddressCheckForm, AllowlistForm, GenerateKeyForm, RenameKeyForm
from .models import ApiKey, KeyAction

ARCHIVED_PAGE_SIZE = 50
# Above the default limit of keys that are not archived, so the list is normally one page.
KEYS_PAGE_SIZE = 50

logger = logging.getLogger("keys.views")


@dataclass(frozen=True)
class RowAction:
    label: str
    url: str
    danger: bool = False


# The buttons of a key's row, in order, each shown only when the key's status allows it.
ROW_ACTIONS = [
    (KeyAction.ACTIVATE, "Activate", "keys:activate-form", False),
    (KeyAction.EDIT_ALLOWLIST, "IP addresses", "keys:allowlist-form", False),
    (KeyAction.RENAME, "Rename", "keys:rename-form", False),
    (KeyAction.DEACTIVATE, "Deactivate", "keys:deactivate-form", True),
    (KeyAction.ARCHIVE, "Archive", "keys:archive-form", True),
]


def row_actions(key: ApiKey, merchant_slug: str) -> list[RowAction]:
    return [
        RowAction(label, reverse(url, kwargs={"merchant_slug": merchant_slug, "key_id": key.pk}), danger)
        for action, label, url, danger in ROW_ACTIONS
        if key.allows(action)
    ]


class KeyListView(OwnerRequiredMixin, TemplateView):
    template_name = "keys/list.html"

    def get_context_data(self, **kwargs):
        keys = (
            ApiKey.objects.for_merchant(self.merchant).not_archived()
            .select_related("created_by", "activated_by")
            .order_by("-created_at", "-id")
        )
        page = requested_page(Paginator(keys, KEYS_PAGE_SIZE), self.request.GET.get("page"))
        rows = [(key, row_actions(key, self.merchant.slug)) for key in page.object_list]
        return super().get_context_data(
            rows=rows,
            page=page,
            archived_count=ApiKey.objects.for_merchant(self.merchant).archived().count(),
            client_address=RequestContext.from_request(self.request).ip_address,
            **kwargs,
        )


class ArchivedKeyListView(OwnerRequiredMixin, TemplateView):
    template_name = "keys/archived.html"

    def get_context_data(self, **kwargs):
        keys = (
            ApiKey.objects.for_merchant(self.merchant).archived()
            .select_related("archived_by").order_by("-archived_at", "-id")
        )
        page = requested_page(Paginator(keys, ARCHIVED_PAGE_SIZE), self.request.GET.get("page"))
        return super().get_context_data(page=page, keys=page.object_list, **kwargs)


def _show_refusal(form, refusal: Exception) -> None:
    if isinstance(refusal, CodeRefused):
        form.add_refusal(refusal)
    else:
        form.add_error(None, refusal.message)


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
class GenerateKeyView(ActionMixin, OwnerRequiredMixin, View):
    """Served twice (see ``keys.urls``): the form page answers GET, the action answers POST."""

    template_name = "keys/generate.html"

    def form_url(self) -> str:
        return reverse("keys:generate-form", kwargs={"merchant_slug": self.kwargs["merchant_slug"]})

    def _render(self, form):
        return render(self.request, self.template_name, {
            "form": form, "merchant": self.merchant,
            "action_url": reverse("keys:generate", kwargs={"merchant_slug": self.merchant.slug}),
        })

    def get(self, request, merchant_slug):
        return self._render(GenerateKeyForm())

    def post(self, request, merchant_slug):
        form = GenerateKeyForm(request.POST)
        if form.is_valid():
            try:
                key = services.generate_key(
                    actor=request.user, merchant=self.merchant, name=form.cleaned_data["name"],
                    code=form.cleaned_data["code"], context=RequestContext.from_request(request),
                )
            except (CodeRefused, services.KeyActionRefused) as refusal:
                _show_refusal(form, refusal)
            else:
                messages.success(request, f"API key {key.public_key} generated. Activate it to start using it.")
                return redirect("keys:list", merchant_slug=merchant_slug)
        return self._render(form)


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
class KeyActionView(ActionMixin, OwnerRequiredMixin, View):
    """One action on one key, and the page with its form, which works without JavaScript.

    Served twice (see ``keys.urls``): at ``url_name`` the action answers POST only; at ``url_name``-form
    the page answers GET.
    """

    action: KeyAction
    url_name: str
    form_class = CodeForm
    template_name: str

    def authorize(self, request, **kwargs) -> None:
        super().authorize(request, **kwargs)
        self.key = ApiKey.objects.for_merchant(self.merchant).filter(pk=kwargs["key_id"]).first()
        if self.key is None:
            raise Http404("No such API key.")

    def _url(self, name: str) -> str:
        return reverse(name, kwargs={"merchant_slug": self.merchant.slug, "key_id": self.key.pk})

    def form_url(self) -> str:
        # From the URL itself: also asked before the key is looked up (page_to_return_to).
        return reverse(f"{self.url_name}-form", kwargs=self.kwargs)

    def initial_form(self):
        return self.form_class()

    def perform(self, form, context: RequestContext):
        raise NotImplementedError

    def succeeded(self, result):
        raise NotImplementedError

    def extra_context(self) -> dict:
        return {}

    def _render(self, form):
        unavailable = None if self.key.allows(self.action) else services.wrong_status_refusal(self.key, self.action).message
        return render(
            self.request,
            self.template_name,
            {"form": form, "key": self.key, "merchant": self.merchant, "unavailable": unavailable,
             "action_url": self._url(self.url_name), "form_url": self.form_url(),
             "back_url": reverse("keys:list", kwargs={"merchant_slug": self.merchant.slug}), "back_label": "API keys",
             **self.extra_context()},
        )

    def get(self, request, merchant_slug, key_id):
        return self._render(self.initial_form())

    def post(self, request, merchant_slug, key_id):
        form = self.form_class(request.POST)
        if form.is_valid():
            try:
                result = self.perform(form, RequestContext.from_request(request))
            except services.KeyNotFound:
                raise Http404("No such API key.") from None
            except (CodeRefused, services.KeyActionRefused) as refusal:
                _show_refusal(form, refusal)
            else:
                return self.succeeded(result)
        return self._render(form)

    def back_to_list(self):
        return redirect("keys:list", merchant_slug=self.merchant.slug)


class ActivateKeyView(KeyActionView):
    action = KeyAction.ACTIVATE
    url_name = "keys:activate"
    form_class = ActivateKeyForm
    template_name = "keys/activate.html"

    def initial_form(self):
        return self.form_class(initial={"allowlist": self.key.allowed_networks})

    def extra_context(self) -> dict:
        return {
            "client_address": RequestContext.from_request(self.request).ip_address,
            # Named before a code is asked for: activating while it is active is refused, and spends the code.
            "other_active_key": ApiKey.objects.for_merchant(self.merchant).active().exclude(pk=self.key.pk).first(),
        }

    def perform(self, form, context):
        allowlist = form.cleaned_data["allowlist"]
        result = services.activate_key(
            actor=self.request.user, merchant=self.merchant, key_id=self.key.pk, allowlist=allowlist,
            code=form.cleaned_data["code"], context=context,
        )
        return result, allowlist.warnings

    def succeeded(self, outcome):
        result, warnings = outcome
        if result.secret is None:
            for warning in warnings:
                messages.warning(self.request, warning)
            messages.success(
                self.request,
                f"API key {result.key.public_key} is active again. Its secret key is not shown again; if you no "
                "longer have it, deactivate this key and generate a new pair.",
            )
            return self.back_to_list()
        # The one response that ever carries the secret: rendered here, never stored, never redirected to.
        return render(
            self.request,
            "keys/secret.html",
            {
                "key": result.key,
                "merchant": self.merchant,
                "secret": result.secret,
                "secret_qr_svg": self._qr_code(result.secret),
                "warnings": warnings,
            },
        )

    @staticmethod
    def _qr_code(secret: str) -> str | None:
        # The key is already active: failing here would lose its secret for good, so show it without the QR.
        try:
            return qr_code_svg(secret)
        except Exception:
            logger.exception("could not draw the secret key QR code")
            return None


class DeactivateKeyView(KeyActionView):
    action = KeyAction.DEACTIVATE
    url_name = "keys:deactivate"
    template_name = "keys/deactivate.html"

    def perform(self, form, context):
        return services.deactivate_key(
            actor=self.request.user, merchant=self.merchant, key_id=self.key.pk,
            code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, key):
        messages.success(self.request, f"API key {key.public_key} is deactivated. Requests with it are refused from now on.")
        return self.back_to_list()


class AllowlistView(ActivateKeyView):
    action = KeyAction.EDIT_ALLOWLIST
    url_name = "keys:allowlist"
    form_class = AllowlistForm
    template_name = "keys/allowlist.html"

    def extra_context(self) -> dict:
        check = AddressCheckForm(self.request.GET if "address" in self.request.GET else None)
        return {
            **super().extra_context(),
            "address_form": check,
            "address_allowed": is_address_allowed(self.key.allowed_networks, check.cleaned_data["address"])
            if check.is_valid() else None,
        }

    def perform(self, form, context):
        allowlist = form.cleaned_data["allowlist"]
        key = services.update_allowlist(
            actor=self.request.user, merchant=self.merchant, key_id=self.key.pk, allowlist=allowlist,
            code=form.cleaned_data["code"], context=context,
        )
        return key, allowlist.warnings

    def succeeded(self, outcome):
        key, warnings = outcome
        for warning in warnings:
            messages.warning(self.request, warning)
        messages.success(self.request, f"IP addresses of API key {key.public_key} saved. They apply from the next request.")
        return self.back_to_list()


class RenameKeyView(KeyActionView):
    action = KeyAction.RENAME
    url_name = "keys:rename"
    form_class = RenameKeyForm
    template_name = "keys/rename.html"

    def initial_form(self):
        return self.form_class(initial={"name": self.key.name})

    def perform(self, form, context):
        return services.rename_key(
            actor=self.request.user, merchant=self.merchant, key_id=self.key.pk,
            name=form.cleaned_data["name"], code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, key):
        messages.success(self.request, "Name saved.")
        return self.back_to_list()


class ArchiveKeyView(KeyActionView):
    action = KeyAction.ARCHIVE
    url_name = "keys:archive"
    template_name = "keys/archive.html"

    def perform(self, form, context):
        return services.archive_key(
            actor=self.request.user, merchant=self.merchant, key_id=self.key.pk,
            code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, key):
        messages.success(self.request, f"API key {key.public_key} is archived. It is listed under “Archived”.")
        return self.back_to_list()
