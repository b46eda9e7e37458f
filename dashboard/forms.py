"""Input rules of the sign-in and account pages."""
from django import forms
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from .members import ASSIGNABLE_ROLES, ROLE_SUMMARIES
from .models import User, time_zones
from .two_factor import MAX_CODE_INPUT_LENGTH, CodeKind, parse_code

SIGN_IN_REFUSED_MESSAGE = "The email address or password is not right."


class OneTimeCodeInput(forms.TextInput):
    """A code is never shown back: once sent it is spent or wrong, either way no use in the box."""

    def format_value(self, value):
        return None


class CodeField(forms.CharField):
    """A 2FA code: six digits from an authenticator app, or a backup code. Spaces are dropped."""

    default_error_messages = {"required": "Enter your 2FA code."}

    def __init__(self, **kwargs):
        kwargs.setdefault("label", "2FA code")
        kwargs.setdefault("help_text", "The 6-digit code from your authenticator app, or a backup code.")
        kwargs.setdefault(
            "widget",
            OneTimeCodeInput(
                attrs={
                    "autocomplete": "one-time-code",
                    "inputmode": "numeric",
                    "maxlength": MAX_CODE_INPUT_LENGTH,
                    "autocapitalize": "off",
                    "spellcheck": "false",
                    "class": "code-input",
                }
            ),
        )
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        # Validates the shape only (length included); the device decides whether the code is right.
        return parse_code(value).value


class SignInForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}),
        error_messages={"required": "Enter your email address.", "invalid": "Enter a valid email address."},
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        error_messages={"required": "Enter your password."},
    )


class CodeForm(forms.Form):
    """Any form whose only input is a fresh 2FA code."""

    code = CodeField()

    def add_refusal(self, refusal) -> None:
        self.add_error("code", ValidationError(refusal.message, code=refusal.reason.value))


AUTHENTICATOR_CODE_MESSAGE = "Enter the 6-digit code your authenticator app shows for this account."


class AuthenticatorCodeField(CodeField):
    """Enrolment's code: the app's six digits only; there are no backup codes yet."""

    default_error_messages = {"required": AUTHENTICATOR_CODE_MESSAGE}

    def clean(self, value):
        value = forms.CharField.clean(self, value)  # required and stripped; the shape is checked here
        try:
            code = parse_code(value)
        except ValidationError:
            code = None
        if code is None or code.kind is not CodeKind.TOTP:
            raise ValidationError(AUTHENTICATOR_CODE_MESSAGE, code="malformed")
        return code.value


class EnrolmentForm(CodeForm):
    code = AuthenticatorCodeField(help_text="The 6-digit code your authenticator app shows for this account.")


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(
        label="Time zone",
        choices=lambda: [(zone, zone.replace("_", " ")) for zone in time_zones()],
        error_messages={"invalid_choice": "Choose a time zone from the list.", "required": "Choose a time zone."},
        help_text="Dates in the dashboard are shown in this time zone.",
    )


def role_field(label: str) -> forms.ChoiceField:
    return forms.ChoiceField(
        label=label,
        choices=[(role.value, f"{role.label}: {ROLE_SUMMARIES[role]}") for role in ASSIGNABLE_ROLES],
        widget=forms.RadioSelect,
        error_messages={"required": "Choose a role.", "invalid_choice": "Choose one of the roles listed."},
    )


class MemberRoleForm(CodeForm):
    """An Owner gives another member a new role: any but Owner, which platform staff give."""

    role = role_field("New role")
    field_order = ["role", "code"]


class InvitationForm(CodeForm):
    """An Owner invites a person by email address, with a role."""

    email = forms.EmailField(
        label="Email address",
        max_length=254,
        help_text="The invitation is sent here; the link in it works once, for 7 days.",
        widget=forms.EmailInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        error_messages={"required": "Enter the email address to invite.", "invalid": "Enter a valid email address."},
    )
    role = role_field("Role")
    field_order = ["email", "role", "code"]


class NewAccountForm(forms.Form):
    """The password of an account made from an invitation; the address is the invitation's."""

    password = forms.CharField(
        label="Choose a password", strip=False, max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 12 characters, not a common password, not like your email address.",
        error_messages={"required": "Choose a password."},
    )
    password_again = forms.CharField(
        label="The same password again", strip=False, max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        error_messages={"required": "Type the password again."},
    )

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        validate_password(password, user=User(email=self.email))
        return password

    def clean(self):
        cleaned = super().clean()
        password, again = cleaned.get("password"), cleaned.get("password_again")
        if password and again and password != again:
            self.add_error("password_again", "The two passwords differ.")
        return cleaned
