from django.contrib import admin
from django.urls import include, path

from . import views
from .routes import action


dashboard_patterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("signin/", views.SignInView.as_view(), name="sign-in"),
    path("signin/code/", views.SignInCodeView.as_view(), name="sign-in-code"),
    path("signin/enrol/", views.EnrolView.as_view(), name="enrol"),
    path("signout/", views.SignOutView.as_view(), name="sign-out"),
    path("account/security/", views.AccountSecurityView.as_view(), name="account-security"),
    path("account/backup-codes/", views.BackupCodesView.as_view(), name="backup-codes"),
    path("account/time-zone/", views.TimeZoneView.as_view(), name="time-zone"),
    path("m/<slug:merchant_slug>/", views.MerchantHomeView.as_view(), name="merchant-home"),
    path("m/<slug:merchant_slug>/overview/", views.OverviewView.as_view(), name="overview"),
    path("m/<slug:merchant_slug>/activity/", views.ActivityView.as_view(), name="activity"),
    path("m/<slug:merchant_slug>/support/", views.SupportView.as_view(), name="support"),
    path("m/<slug:merchant_slug>/members/", views.MembersView.as_view(), name="members"),
    *action("m/<slug:merchant_slug>/members/<int:membership_id>/role/", views.MemberRoleView, "member-role"),
    *action("m/<slug:merchant_slug>/members/<int:membership_id>/remove/", views.RemoveMemberView, "member-remove"),
    *action("m/<slug:merchant_slug>/members/invite/", views.InviteMemberView, "member-invite"),
    *action("m/<slug:merchant_slug>/invitations/<int:invitation_id>/withdraw/", views.WithdrawInvitationView,
            "invitation-withdraw"),
    path("invitations/<str:token>/", views.invitation_link, name="invitation-link"),
    path("invitation/", views.InvitationView.as_view(), name="invitation"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v2/", include("sandbox.urls")),
    path("m/<slug:merchant_slug>/keys/", include("keys.urls")),
    path("m/<slug:merchant_slug>/", include("sandbox.page_urls")),
    path("", include((dashboard_patterns, "dashboard"))),
]

handler400 = views.bad_request
