from django.urls import path

from . import pages

app_name = "integration"

urlpatterns = [
    path("api-requests/", pages.RequestLogView.as_view(), name="request-log"),
    path("signature-check/", pages.SignatureCheckView.as_view(), name="signature-check"),
]
