"""Input rules of the Owner's integration pages."""
from django import forms

from .authentication import MAX_BODY_BYTES

OUTCOME_CHOICES = [("", "All outcomes"), ("accepted", "Accepted"), ("refused", "Refused")]


class RequestLogFilterForm(forms.Form):
    key = forms.ChoiceField(label="API key", required=False)
    outcome = forms.ChoiceField(label="Outcome", required=False, choices=OUTCOME_CHOICES)

    def __init__(self, *args, keys=(), **kwargs):
        super().__init__(*args, **kwargs)
        # Named as the API keys tab names them, with their status: an archived key's requests stay in the log.
        self.fields["key"].choices = [("", "All keys")] + [
            (str(key.pk), f"{key} · {key.get_status_display().lower()}") for key in keys
        ]


class SignatureCheckForm(forms.Form):
    body = forms.CharField(
        label="Request body",
        strip=False,
        required=False,
        max_length=MAX_BODY_BYTES,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}),
        help_text="Paste the exact body your code sends, e.g. {\"currency\":\"BTC\"}.",
        error_messages={"max_length": "The sandbox refuses bodies larger than 1 MiB."},
    )
    signature = forms.CharField(
        label="X-Processing-Signature",
        max_length=1024,
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "class": "mono"}),
        help_text="The value your code sends in the X-Processing-Signature header.",
        error_messages={"required": "Paste the signature your code computed.",
                        "max_length": "That is far longer than an HMAC-SHA512 signature (128 hex characters)."},
    )

    def clean_body(self) -> str:
        body = self.cleaned_data["body"]
        # max_length counts characters; the API's limit is on the UTF-8 bytes.
        if len(body.encode()) > MAX_BODY_BYTES:
            raise forms.ValidationError(self.fields["body"].error_messages["max_length"], code="max_length")
        return body
