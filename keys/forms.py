"""Input rules of the API-key pages."""
import ipaddress
import unicodedata

from django import forms
from django.core.exceptions import ValidationError

from dashboard.forms import CodeForm

from .allowlist import Allowlist, format_allowlist, parse_allowlist
from .services import STAFF_REASON_MAX_LENGTH, STAFF_REASON_REQUIRED_MESSAGE, STAFF_REASON_TOO_LONG_MESSAGE

NAME_MAX_LENGTH = 100
# Room for 100 full IPv6 networks with separators; longer input is refused before parsing.
ALLOWLIST_MAX_LENGTH = 6000


class KeyNameField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("label", "Name")
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", NAME_MAX_LENGTH)
        kwargs.setdefault("help_text", "Optional. Helps you tell keys apart, e.g. “Checkout server”.")
        kwargs.setdefault("error_messages", {"max_length": f"Use at most {NAME_MAX_LENGTH} characters."})
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        # SECURITY: control and bidirectional-override characters can disguise a name in lists and emails.
        if any(unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"} for char in value):
            raise ValidationError(
                "Use letters, digits, spaces and punctuation only; control and formatting characters are not allowed.",
                code="invalid_name",
            )
        # U+FFFD is what Django decodes bytes that are not UTF-8 to: the name sent is not the one that would be saved.
        if "\ufffd" in value:
            raise ValidationError("The name arrived with bytes that are not UTF-8 text; type it again.",
                                  code="invalid_name")
        return value


class AllowlistField(forms.CharField):
    """The vendor's "IP addresses" box: addresses or networks separated by commas; blank means any."""

    def __init__(self, **kwargs):
        kwargs.setdefault("label", "IP addresses")
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", ALLOWLIST_MAX_LENGTH)
        kwargs.setdefault(
            "help_text",
            "Public IPv4 or IPv6 addresses (or networks such as 203.0.113.0/24) allowed to call the API with "
            "this key, separated by commas. Leave blank to accept requests from any IP address.",
        )
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocapitalize": "off"}))
        kwargs.setdefault("error_messages", {"max_length": "That list is too long; at most 100 entries are allowed."})
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return format_allowlist(value)
        return value

    def clean(self, value) -> Allowlist:
        return parse_allowlist(super().clean(value))


class GenerateKeyForm(CodeForm):
    name = KeyNameField()
    field_order = ["name", "code"]


class ActivateKeyForm(CodeForm):
    allowlist = AllowlistField()
    field_order = ["allowlist", "code"]


class AllowlistForm(ActivateKeyForm):
    pass


class StaffDeactivationForm(CodeForm):
    """Platform staff deactivating a merchant's key (admin): why, and the staff member's own 2FA code."""

    reason = forms.CharField(
        label="Reason",
        max_length=STAFF_REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Emailed to the merchant's Owners and kept in its Activity, e.g. “Secret key posted in a public "
        "repository, reported to support”.",
        error_messages={"required": STAFF_REASON_REQUIRED_MESSAGE, "max_length": STAFF_REASON_TOO_LONG_MESSAGE},
    )
    field_order = ["reason", "code"]


class RenameKeyForm(CodeForm):
    name = KeyNameField()
    field_order = ["name", "code"]


class AddressCheckForm(forms.Form):
    """The dry run: would this address pass a key's allowlist?"""

    address = forms.CharField(
        label="Would this address pass?",
        max_length=64,
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "placeholder": "2001:db8::5"}),
        error_messages={"required": "Enter an IPv4 or IPv6 address.", "max_length": "That is not an IP address."},
    )

    def clean_address(self) -> str:
        value = self.cleaned_data["address"].strip()
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValidationError("'%(value)s' is not an IPv4 or IPv6 address.", code="invalid_address",
                                  params={"value": value}) from None
        return value
