"""Owner pages that help an integrator: the request log and the signature checker."""
from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import TemplateView

from dashboard.access import OwnerRequiredMixin
from dashboard.pagination import requested_page
from keys.models import ApiKey
from keys.secret_store import open_secret

from .forms import RequestLogFilterForm, SignatureCheckForm
from .models import REQUEST_LOG_SIZE, ApiRequest
from .signature_check import diagnose

REQUEST_LOG_PAGE_SIZE = 50


class RequestLogView(OwnerRequiredMixin, TemplateView):
    template_name = "sandbox/request_log.html"

    def get_context_data(self, **kwargs):
        keys = list(ApiKey.objects.for_merchant(self.merchant).order_by("-created_at"))
        form = RequestLogFilterForm(self.request.GET or None, keys=keys)
        requests = ApiRequest.objects.for_merchant(self.merchant).select_related("api_key").order_by("-id")
        if form.is_valid():
            if form.cleaned_data["key"]:
                requests = requests.filter(api_key_id=form.cleaned_data["key"])
            if form.cleaned_data["outcome"] == "accepted":
                requests = requests.filter(status__lt=400)
            elif form.cleaned_data["outcome"] == "refused":
                requests = requests.filter(status__gte=400)
        page = requested_page(
            Paginator(requests[:REQUEST_LOG_SIZE], REQUEST_LOG_PAGE_SIZE), self.request.GET.get("page"),
        )
        query = self.request.GET.copy()
        query.pop("page", None)
        return super().get_context_data(
            form=form, page=page, entries=page.object_list, filter_query=query.urlencode(),
            log_size=REQUEST_LOG_SIZE, **kwargs,
        )


@method_decorator(sensitive_post_parameters("body", "signature"), name="dispatch")
class SignatureCheckView(OwnerRequiredMixin, TemplateView):
    template_name = "sandbox/signature_check.html"

    def active_key(self) -> ApiKey | None:
        return ApiKey.objects.for_merchant(self.merchant).active().first()

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", SignatureCheckForm())
        return super().get_context_data(active_key=self.active_key(), **kwargs)

    def post(self, request, merchant_slug):
        form = SignatureCheckForm(request.POST)
        key = self.active_key()
        diagnosis = None
        if form.is_valid() and key is not None:
            others = {
                other.public_key: open_secret(other.public_key, other.encrypted_secret)
                for other in ApiKey.objects.for_merchant(self.merchant).exclude(pk=key.pk).exclude(encrypted_secret="")
            }
            diagnosis = diagnose(
                form.cleaned_data["body"].encode(), form.cleaned_data["signature"],
                secret=open_secret(key.public_key, key.encrypted_secret), public_key=key.public_key,
                other_secrets=others,
            )
        return self.render_to_response(self.get_context_data(form=form, diagnosis=diagnosis))
