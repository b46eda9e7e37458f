"""Sign-in with two factors, enrolment, account security, and the merchant pages every role shares."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import TemplateView
from django_otp import login as otp_login
from django_otp.middleware import is_verified as otp_is_verified
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import invitations, members, rate_limit, two_factor
from .access import ActionMixin, MerchantMemberRequiredMixin, OwnerRequiredMixin, RestrictedAllowedMixin, VerifiedUserRequiredMixin
from .audit import RequestContext, record
from .forms import (
    SIGN_IN_REFUSED_MESSAGE, CodeForm, EnrolmentForm, InvitationForm, MemberRoleForm, NewAccountForm, SignInForm,
    TimeZoneForm,
)
from .models import AuditAction, AuditEvent, AuditOutcome, Invitation, Membership, Role
from .qr import qr_code_svg
from .timeline import timeline_page

PENDING_SIGN_IN_KEY = "pending_sign_in"
# Long enough to open an authenticator app, short enough that an abandoned screen goes stale.
PENDING_SIGN_IN_SECONDS = 10 * 60
ACTIVITY_PAGE_SIZE = 50
RECENT_SIGN_INS = 10


def _safe_next(request, candidate: str | None) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("dashboard:home")


def _pending_user(request):
    """The user who passed the password step in this session, if that was recent."""
    pending = request.session.get(PENDING_SIGN_IN_KEY)
    if not pending or time.time() - pending.get("at", 0) > PENDING_SIGN_IN_SECONDS:
        return None
    return get_user_model().objects.filter(pk=pending["user_id"], is_active=True).first()


def _complete_sign_in(request, user, device) -> str:
    next_url = request.session.get(PENDING_SIGN_IN_KEY, {}).get("next")
    # login() rotates the session key, so a session planted before sign-in is worthless after it.
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    # login() installs a plain user; give it the is_verified() that OTPMiddleware adds on later requests.
    request.user.is_verified = functools.partial(otp_is_verified, request.user)
    otp_login(request, device)
    request.session.pop(PENDING_SIGN_IN_KEY, None)
    record(AuditAction.SIGN_IN, actor=user, context=RequestContext.from_request(request))
    return _safe_next(request, next_url)


no_store_sensitive = [never_cache, sensitive_post_parameters()]


@method_decorator(no_store_sensitive, name="dispatch")
class SignInView(View):
    template_name = "dashboard/sign_in.html"

    def get(self, request):
        if request.user.is_authenticated and request.user.is_verified():
            return redirect(_safe_next(request, request.GET.get("next")))
        return render(request, self.template_name, {"form": SignInForm(), "next": request.GET.get("next", "")})

    def post(self, request):
        form = SignInForm(request.POST)
        next_url = request.POST.get("next", "")
        if form.is_valid():
            email = form.cleaned_data["email"]
            context = RequestContext.from_request(request)
            attempt = rate_limit.begin_attempt(email)
            user = None
            if attempt.retry_at is not None:
                record(
                    AuditAction.SIGN_IN_FAILED, actor_email=email, outcome=AuditOutcome.REFUSED, context=context,
                    details={"reason": "hourly limit"},
                )
                form.add_error(None, rate_limit.retry_message(attempt.retry_at))
            else:
                user = authenticate(request, email=email, password=form.cleaned_data["password"])
                if user is not None:
                    rate_limit.attempt_succeeded(attempt)
                else:
                    known = get_user_model().objects.filter(email__iexact=email).first()
                    record(
                        AuditAction.SIGN_IN_FAILED, actor=known, actor_email=email, outcome=AuditOutcome.REFUSED,
                        context=context, details={"reason": "wrong password" if known else "unknown email"},
                    )
                    # SECURITY: one message for unknown email and wrong password: no account enumeration.
                    form.add_error(None, SIGN_IN_REFUSED_MESSAGE)
            if user is not None:
                if request.user.is_authenticated:
                    logout(request)
                request.session.cycle_key()
                request.session[PENDING_SIGN_IN_KEY] = {
                    "user_id": user.pk, "at": time.time(), "next": _safe_next(request, next_url),
                }
                if two_factor.has_confirmed_authenticator(user):
                    return redirect("dashboard:sign-in-code")
                return redirect("dashboard:enrol")
        return render(request, self.template_name, {"form": form, "next": next_url})


def _sign_in_expired(request):
    messages.info(request, "Your sign-in timed out. Enter your email and password again.")
    return redirect("dashboard:sign-in")


@method_decorator(no_store_sensitive, name="dispatch")
class SignInCodeView(View):
    template_name = "dashboard/sign_in_code.html"

    def dispatch(self, request, *args, **kwargs):
        self.user = _pending_user(request)
        if self.user is None:
            return _sign_in_expired(request)
        if not two_factor.has_confirmed_authenticator(self.user):
            return redirect("dashboard:enrol")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        return render(request, self.template_name, {"form": CodeForm(), "pending_email": self.user.email})

    def post(self, request):
        form = CodeForm(request.POST)
        context = RequestContext.from_request(request)
        if form.is_valid():
            try:
                device = two_factor.verify_fresh_code(
                    self.user, form.cleaned_data["code"], context=context, purpose="sign-in"
                )
            except two_factor.CodeRefused as refusal:
                form.add_refusal(refusal)
            else:
                return redirect(_complete_sign_in(request, self.user, device))
        else:
            record(
                AuditAction.SIGN_IN_FAILED, actor=self.user, outcome=AuditOutcome.REFUSED, context=context,
                details={"reason": "malformed 2FA code"},
            )
        return render(request, self.template_name, {"form": form, "pending_email": self.user.email})


def backup_codes_page(request, user, codes: list[str], *, continue_url: str, regenerated: bool = False):
    # Shown in this one response only, on the page and in its download link; nothing keeps them after it.
    return render(
        request,
        "dashboard/backup_codes.html",
        {
            "codes": [two_factor.format_backup_code(code) for code in codes],
            "codes_file": two_factor.backup_codes_file(user.email, codes, timezone.now()),
            "continue_url": continue_url,
            "regenerated": regenerated,
        },
    )


@method_decorator(no_store_sensitive, name="dispatch")
class EnrolView(View):
    """First sign-in of a user without an authenticator: scan or type the key, confirm a code."""

    template_name = "dashboard/enrol.html"

    def dispatch(self, request, *args, **kwargs):
        self.user = _pending_user(request)
        if self.user is None:
            return _sign_in_expired(request)
        if two_factor.has_confirmed_authenticator(self.user):
            return redirect("dashboard:sign-in-code")
        return super().dispatch(request, *args, **kwargs)

    def _render(self, request, form):
        device = two_factor.pending_authenticator(self.user)
        return render(
            request,
            self.template_name,
            {
                "form": form,
                "qr_svg": qr_code_svg(device.config_url),
                "manual_key": two_factor.format_manual_key(device),
                "pending_email": self.user.email,
                "reset_at": two_factor.authenticator_reset_at(self.user),
            },
        )

    def get(self, request):
        return self._render(request, EnrolmentForm())

    def post(self, request):
        form = EnrolmentForm(request.POST)
        if form.is_valid():
            try:
                device, codes = two_factor.confirm_authenticator(
                    self.user, form.cleaned_data["code"], context=RequestContext.from_request(request)
                )
            except two_factor.CodeRefused as refusal:
                form.add_refusal(refusal)
            else:
                next_url = _complete_sign_in(request, self.user, device)
                return backup_codes_page(request, self.user, codes, continue_url=next_url)
        return self._render(request, form)


@method_decorator(never_cache, name="dispatch")
class SignOutView(ActionMixin, View):
    def form_url(self) -> str:
        return reverse("dashboard:home")  # the sign-out button is in the account menu of every page

    def post(self, request):
        if request.user.is_authenticated:
            record(AuditAction.SIGN_OUT, actor=request.user, context=RequestContext.from_request(request))
        logout(request)
        messages.info(request, "You have signed out.")
        return redirect("dashboard:sign-in")


class HomeView(VerifiedUserRequiredMixin, View):
    """Open the merchant the user worked on last, or the first one they belong to."""

    def get(self, request):
        memberships = Membership.objects.for_user(request.user)
        chosen = memberships.filter(merchant_id=request.user.last_merchant_id).first() or memberships.first()
        if chosen is None:
            return render(request, "dashboard/no_merchant.html")
        return redirect("dashboard:merchant-home", merchant_slug=chosen.merchant.slug)


class MerchantHomeView(RestrictedAllowedMixin, View):
    landing_pages = {
        Role.OWNER: "keys:list",
        Role.RESTRICTED: "dashboard:support",
    }

    def get(self, request, merchant_slug):
        page = self.landing_pages.get(self.membership.role, "dashboard:overview")
        return redirect(page, merchant_slug=merchant_slug)


class OverviewView(MerchantMemberRequiredMixin, TemplateView):
    template_name = "dashboard/overview.html"

    def get_context_data(self, **kwargs):
        owners = Membership.objects.owners_of(self.merchant)
        return super().get_context_data(
            owners=[m.user for m in owners], manages_keys=self.membership.role == Role.OWNER, **kwargs
        )


class SupportView(RestrictedAllowedMixin, TemplateView):
    template_name = "dashboard/support.html"


class MembersView(OwnerRequiredMixin, TemplateView):
    """The merchant's members and their roles; an Owner changes or removes the others (not Owners)."""

    template_name = "dashboard/members.html"

    def get_context_data(self, **kwargs):
        memberships = list(
            Membership.objects.filter(merchant=self.merchant).select_related("user").order_by("user__email")
        )
        rows = [
            MemberRow(
                membership=membership,
                summary=members.ROLE_SUMMARIES[Role(membership.role)],
                is_you=membership.user_id == self.request.user.pk,
                role_url=None if membership.is_owner else self._url("dashboard:member-role-form", membership),
                remove_url=None if membership.is_owner else self._url("dashboard:member-remove-form", membership),
            )
            for membership in memberships
        ]
        slug = self.merchant.slug
        pending = [
            (invitation, reverse("dashboard:invitation-withdraw-form",
                                 kwargs={"merchant_slug": slug, "invitation_id": invitation.pk}))
            for invitation in Invitation.objects.still_open().sent_by_an_owner().filter(merchant=self.merchant)
            .select_related("invited_by").order_by("email")
        ]
        return super().get_context_data(
            rows=rows, invitations=pending,
            invite_url=reverse("dashboard:member-invite-form", kwargs={"merchant_slug": slug}), **kwargs,
        )

    def _url(self, name: str, membership: Membership) -> str:
        return reverse(name, kwargs={"merchant_slug": self.merchant.slug, "membership_id": membership.pk})


@dataclass(frozen=True)
class MemberRow:
    membership: Membership
    summary: str
    is_you: bool
    role_url: str | None
    remove_url: str | None


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
class MembersTabAction(ActionMixin, OwnerRequiredMixin, View):
    """One change on the Members tab, and the page with its form. Served twice (see ``dashboard.urls``): at
    ``url_name`` the action answers POST only; at ``url_name``-form the page answers GET."""

    url_name: str
    form_class = CodeForm
    template_name: str

    def form_url(self) -> str:
        return reverse(f"{self.url_name}-form", kwargs=self.kwargs)

    def page_context(self) -> dict:
        """What the page shows besides its form."""
        return {}

    def perform(self, form, context: RequestContext):
        """Make the change through its service; raises its refusals."""
        raise NotImplementedError

    def succeeded(self, result) -> tuple[int, str]:
        """The level and text of the message the Members tab shows after the change."""
        raise NotImplementedError

    def _render(self, form):
        return render(self.request, self.template_name, {
            "form": form, "merchant": self.merchant,
            "action_url": reverse(self.url_name, kwargs=self.kwargs),
            "back_url": reverse("dashboard:members", kwargs={"merchant_slug": self.merchant.slug}),
            "back_label": "Members",
            **self.page_context(),
        })

    def get(self, request, **kwargs):
        return self._render(self.form_class())

    def post(self, request, **kwargs):
        form = self.form_class(request.POST)
        if form.is_valid():
            try:
                result = self.perform(form, RequestContext.from_request(request))
            except members.MemberNotFound:
                raise Http404("No such member or invitation.") from None
            except two_factor.CodeRefused as refusal:
                form.add_refusal(refusal)
            except members.MemberChangeRefused as refusal:
                form.add_error(None, refusal.message)
            else:
                level, message = self.succeeded(result)
                messages.add_message(request, level, message)
                return redirect("dashboard:members", merchant_slug=self.merchant.slug)
        return self._render(form)


class MemberActionView(MembersTabAction):
    """A change to one member, named by ``membership_id``."""

    def authorize(self, request, **kwargs) -> None:
        super().authorize(request, **kwargs)
        self.member = (
            Membership.objects.select_related("user").filter(merchant=self.merchant, pk=kwargs["membership_id"]).first()
        )
        if self.member is None:
            raise Http404("No such member.")

    def page_context(self) -> dict:
        unavailable = None
        if self.member.role == Role.OWNER:
            unavailable = "Only platform staff change or remove an Owner: contact support."
        return {"member": self.member, "unavailable": unavailable,
                "member_role_summary": members.ROLE_SUMMARIES[Role(self.member.role)]}


class MemberRoleView(MemberActionView):
    url_name = "dashboard:member-role"
    form_class = MemberRoleForm
    template_name = "dashboard/member_role.html"

    def perform(self, form, context):
        return members.change_role(
            actor=self.request.user, merchant=self.merchant, membership_id=self.member.pk,
            role=form.cleaned_data["role"], code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, membership):
        return messages.SUCCESS, f"{membership.user.email} now has the {membership.get_role_display()} role."


class RemoveMemberView(MemberActionView):
    url_name = "dashboard:member-remove"
    template_name = "dashboard/member_remove.html"

    def perform(self, form, context):
        return members.remove_member(
            actor=self.request.user, merchant=self.merchant, membership_id=self.member.pk,
            code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, membership):
        return messages.SUCCESS, (f"{membership.user.email} is no longer a member of {self.merchant.name}. "
                                  "Their account stays.")


class InviteMemberView(MembersTabAction):
    url_name = "dashboard:member-invite"
    form_class = InvitationForm
    template_name = "dashboard/member_invite.html"

    def perform(self, form, context):
        return invitations.invite(
            actor=self.request.user, merchant=self.merchant, email=form.cleaned_data["email"],
            role=form.cleaned_data["role"], code=form.cleaned_data["code"], context=context,
            link_for=lambda token: self.request.build_absolute_uri(
                reverse("dashboard:invitation-link", kwargs={"token": token})
            ),
        )

    def succeeded(self, result):
        invitation, sent = result
        if not sent:
            return messages.WARNING, (f"The invitation of {invitation.email} is saved, but its email could not be "
                                      "sent. Invite the address again to send a new link.")
        return messages.SUCCESS, (f"Invitation sent to {invitation.email}, with the {invitation.get_role_display()} "
                                  "role. Its link works once, for 7 days.")


class WithdrawInvitationView(MembersTabAction):
    url_name = "dashboard:invitation-withdraw"
    template_name = "dashboard/invitation_withdraw.html"

    def authorize(self, request, **kwargs) -> None:
        super().authorize(request, **kwargs)
        self.invitation = (
            Invitation.objects.still_open().select_related("invited_by")
            .filter(merchant=self.merchant, pk=kwargs["invitation_id"]).first()
        )
        if self.invitation is None:
            raise Http404("No such invitation.")

    def page_context(self) -> dict:
        return {"invitation": self.invitation}

    def perform(self, form, context):
        return invitations.withdraw(
            actor=self.request.user, merchant=self.merchant, invitation_id=self.invitation.pk,
            code=form.cleaned_data["code"], context=context,
        )

    def succeeded(self, invitation):
        return messages.SUCCESS, f"The invitation of {invitation.email} is withdrawn: its link no longer works."


# The digest of the link's token: the token itself is kept nowhere, not even in the session.
INVITATION_KEY = "invitation_digest"


def invitation_gone(request):
    return render(request, "dashboard/invitation_gone.html", {"message": invitations.InvitationGone().message},
                  status=404)


@never_cache
def invitation_link(request, token):
    """The link in an invitation email: its token goes into the session, and the page it leads to has no token in
    its address, so no later request, log line or Referer carries it."""
    digest = invitations.digest_of_link(token)
    if invitations.open_invitation(digest) is None:
        return invitation_gone(request)
    request.session[INVITATION_KEY] = digest
    return redirect("dashboard:invitation")


@method_decorator(no_store_sensitive, name="dispatch")
class InvitationView(View):
    """The invitation the session holds: choose a password (no account for the address yet), sign in as the
    invited account, or accept once signed in as it. An invitation that no longer works is a 404 saying so."""

    template_name = "dashboard/invitation.html"

    def dispatch(self, request, *args, **kwargs):
        self.digest = request.session.get(INVITATION_KEY)
        self.invitation = invitations.open_invitation(self.digest)
        if self.invitation is None:
            return invitation_gone(request)
        self.account = get_user_model().objects.filter(email__iexact=self.invitation.email).first()
        return super().dispatch(request, *args, **kwargs)

    def _render(self, request, **context):
        user = request.user
        signed_in_as_invited = (
            self.account is not None and user.is_authenticated and user.pk == self.account.pk and otp_is_verified(user)
        )
        return render(request, self.template_name, {
            "invitation": self.invitation,
            "has_account": self.account is not None,
            "signed_in_as_invited": signed_in_as_invited,
            "signed_in_as_other": user.is_authenticated and self.account is not None and user.pk != self.account.pk,
            "sign_in_url": f"{reverse('dashboard:sign-in')}?{urlencode({'next': request.path})}",
            **context,
        })

    def get(self, request):
        return self._render(request, form=NewAccountForm(email=self.invitation.email) if self.account is None else None)

    def post(self, request):
        context = RequestContext.from_request(request)
        if self.account is None:
            form = NewAccountForm(request.POST, email=self.invitation.email)
            if form.is_valid():
                try:
                    invitations.create_account_and_accept(
                        digest=self.digest, password=form.cleaned_data["password"], context=context,
                    )
                except members.MemberChangeRefused as refusal:
                    form.add_error(None, refusal.message)
                else:
                    request.session.pop(INVITATION_KEY, None)
                    messages.success(
                        request, f"Your account {self.invitation.email} is ready and a member of "
                        f"{self.invitation.merchant.name}. Sign in, then set up your authenticator app.",
                    )
                    return redirect("dashboard:sign-in")
            return self._render(request, form=form)
        user = request.user
        if not (user.is_authenticated and otp_is_verified(user)):
            return self._render(request, refusal=f"Sign in as {self.invitation.email} first, then accept.")
        try:
            invitations.accept(user=user, digest=self.digest, context=context)
        except members.MemberChangeRefused as refusal:
            return self._render(request, refusal=refusal.message)
        request.session.pop(INVITATION_KEY, None)
        messages.success(request, f"You are now a member of {self.invitation.merchant.name}, "
                                  f"with the {self.invitation.get_role_display()} role.")
        return redirect("dashboard:merchant-home", merchant_slug=self.invitation.merchant.slug)


class ActivityView(OwnerRequiredMixin, TemplateView):
    template_name = "dashboard/activity.html"

    def get_context_data(self, **kwargs):
        page = timeline_page(AuditEvent.objects.for_merchant(self.merchant), self.request.GET, ACTIVITY_PAGE_SIZE)
        return super().get_context_data(page=page, events=page.entries, **kwargs)


class AccountSecurityView(VerifiedUserRequiredMixin, TemplateView):
    template_name = "dashboard/account_security.html"

    def get_context_data(self, **kwargs):
        user = self.request.user
        kwargs.setdefault("form", CodeForm())
        kwargs.setdefault("time_zone_form", TimeZoneForm(initial={"time_zone": user.time_zone}))
        return super().get_context_data(
            authenticator=TOTPDevice.objects.filter(user=user, confirmed=True).first(),
            backup_codes_left=two_factor.remaining_backup_codes(user),
            sign_ins=AuditEvent.objects.sign_ins_of(user).order_by("-created_at", "-id")[:RECENT_SIGN_INS],
            **kwargs,
        )


def _account_security_page(request, **forms):
    """The account security page again, showing a refused form's errors next to its fields."""
    page = AccountSecurityView()
    page.setup(request)
    return page.render_to_response(page.get_context_data(**forms))


class AccountActionMixin(ActionMixin, VerifiedUserRequiredMixin):
    """An action whose form is on the account security page."""

    def form_url(self) -> str:
        return reverse("dashboard:account-security")


@method_decorator(sensitive_post_parameters(), name="dispatch")
class BackupCodesView(AccountActionMixin, View):
    """Makes a new set of backup codes."""

    def post(self, request):
        form = CodeForm(request.POST)
        if form.is_valid():
            try:
                codes = two_factor.regenerate_backup_codes(
                    request.user, form.cleaned_data["code"], context=RequestContext.from_request(request)
                )
            except two_factor.CodeRefused as refusal:
                form.add_refusal(refusal)
            else:
                return backup_codes_page(
                    request, request.user, codes, continue_url=reverse("dashboard:account-security"), regenerated=True,
                )
        return _account_security_page(request, form=form)


class TimeZoneView(AccountActionMixin, View):
    """A preference, not a security setting: no 2FA code needed."""

    def post(self, request):
        form = TimeZoneForm(request.POST)
        if form.is_valid():
            request.user.time_zone = form.cleaned_data["time_zone"]
            request.user.save(update_fields=["time_zone"])
            messages.success(request, f"Dates are now shown in {request.user.time_zone.replace('_', ' ')}.")
            return redirect("dashboard:account-security")
        return _account_security_page(request, time_zone_form=form)


def csrf_failure(request, reason=""):
    """Django's answer to a form it cannot trust, which also explains the one such form a person meets by reloading
    a page: the one that showed their backup codes. Its form was sent before the sign-in it completed renewed the
    CSRF token, so a reload cannot be trusted, and the codes cannot be shown again anyway."""
    codes_page_reloaded = request.user.is_authenticated and request.path == reverse("dashboard:enrol")
    return render(request, "403_csrf.html", {"codes_page_reloaded": codes_page_reloaded}, status=403)


def bad_request(request, exception):
    """Django's 400 view without its CSRF decorator, which reads request.POST: for a body Django refused to parse
    (a form in another charset than UTF-8) that raised again, and the 500 view's did too, ending in gunicorn's bare
    500 page."""
    return render(request, "400.html", status=400)
