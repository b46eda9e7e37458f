"""The admin panel site: staff only, and only after both factors; and what its model admins share."""
from functools import wraps
from urllib.parse import urlencode

from django import forms
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections, router
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


class DatesInRangeChangeList(ChangeList):
    """Django's change list, with a date no datetime can hold in the query string (``?created_at__year=10000``,
    or the last day of year 9999 in the date hierarchy) treated as any other bad filter: a redirect with ``?e=1``.

    Django checks the filter parameters, but a year lookup is turned into datetimes only when the query is built
    or counted, and the date hierarchy computes the day after its last one unchecked: both were a 500.
    """

    def get_queryset(self, request, exclude_parameters=None):
        try:
            return super().get_queryset(request, exclude_parameters)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error

    def get_results(self, request):
        try:
            super().get_results(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


def could_be_a_key(model, to_field_name: str | None, value) -> bool:
    """Whether ``value`` fits the column a choice of ``model`` is looked up by: a number too large for it, looked
    up, is an error from the database driver (a 500), not an empty answer."""
    field = model._meta.get_field(to_field_name) if to_field_name else model._meta.pk
    try:
        python_value = field.to_python(value)
    except ValidationError:
        return False
    if isinstance(python_value, int):
        low, high = connections[router.db_for_read(model)].ops.integer_field_range(field.get_internal_type())
        return (low is None or python_value >= low) and (high is None or python_value <= high)
    return True


class ExistingRowsChoiceField(forms.ModelMultipleChoiceField):
    """A choice of rows (a user's groups and permissions) that refuses a value no row can have as an invalid one:
    Django looks the posted values up with ``__in``, which for a number too large for the column is an error of
    the database driver (a 500). A single choice needs no such care: Django finds no row for it."""

    def _check_values(self, value):
        for pk in value:
            if not could_be_a_key(self.queryset.model, self.to_field_name, pk):
                raise ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                      params={"pk": pk})
        return super()._check_values(value)


class ExistingRowAutocomplete(AutocompleteSelect):
    """Django's autocomplete, which shows the chosen row again when a form comes back with errors, by a query
    with whatever value was posted: one no row can have is left out instead."""

    def optgroups(self, name, value, attr=None):
        model, to_field_name = self.field.remote_field.model, getattr(self.field.remote_field, "field_name", None)
        return super().optgroups(name, [v for v in value if could_be_a_key(model, to_field_name, v)], attr)


class StaffModelAdminMixin:
    """What every model admin (and inline) of this site shares: bad input in the query string or a form is
    answered as such, never with a 500."""

    def get_changelist(self, request, **kwargs):
        return DatesInRangeChangeList

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name in self.get_autocomplete_fields(request):
            kwargs.setdefault("widget", ExistingRowAutocomplete(db_field, self.admin_site, using=kwargs.get("using")))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs.setdefault("form_class", ExistingRowsChoiceField)
        return super().formfield_for_manytomany(db_field, request, **kwargs)
