from django.urls import path

from . import views

app_name = "keys"

urlpatterns = [
    path("", views.KeyListView.as_view(), name="list"),
    path("archived/", views.ArchivedKeyListView.as_view(), name="archived"),
    path("generate/", views.GenerateKeyView.as_view(), name="generate"),
    path("<int:key_id>/activate/", views.ActivateKeyView.as_view(), name="activate"),
    path("<int:key_id>/deactivate/", views.DeactivateKeyView.as_view(), name="deactivate"),
    path("<int:key_id>/ip-addresses/", views.AllowlistView.as_view(), name="allowlist"),
    path("<int:key_id>/rename/", views.RenameKeyView.as_view(), name="rename"),
    path("<int:key_id>/archive/", views.ArchiveKeyView.as_view(), name="archive"),
]
