"""Journey 6: the signature checker explains a pretty-printed body and a Base64 signature."""
import base64
import hashlib
import hmac

from dashboard.models import Role
from keys import crypto
from tests import helpers

from .support import PHONE, TABLET, Journey, activate_key, expect, generate_key, sign_in

COMPACT = '{"currency":"BTC","amount":"0.01"}'
PRETTY = '{\n  "currency": "BTC",\n  "amount": "0.01"\n}'


def test_signature_checker_explains_common_mistakes(page, clock):
    merchant = helpers.create_merchant("Acme Payments")
    owner = helpers.create_member(merchant, Role.OWNER, "owner@acme.test")
    journey = Journey("signature-checker", page)
    sign_in(page, clock, owner)
    public_key = generate_key(page, clock, owner)
    secret = activate_key(page, clock, owner, public_key)
    page.get_by_role("link", name="Done").click()

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Signature checker").click()
    expect(page.get_by_role("heading", name="Signature checker")).to_be_visible()
    expect(page.get_by_text(public_key)).to_be_visible()
    journey.check("empty", widths=(PHONE,))

    def check(body: str, signature: str):
        page.get_by_label("Request body").fill(body)
        page.get_by_label("X-Processing-Signature").fill(signature)
        page.get_by_role("button", name="Check signature").click()

    # Signed compact, pasted pretty-printed: the JSON was re-serialised.
    check(PRETTY, crypto.sign(secret, COMPACT.encode()))
    result = page.get_by_role("alert")
    expect(result).to_contain_text("The signature does not match.")
    expect(result).to_contain_text("The signature matches the same JSON written differently (whitespace, pretty-printing")
    journey.check("pretty-printed", widths=(PHONE, TABLET))

    # The right digest, Base64 instead of hex.
    digest = hmac.new(secret.encode(), COMPACT.encode(), hashlib.sha512).digest()
    check(COMPACT, base64.b64encode(digest).decode())
    result = page.get_by_role("alert")
    expect(result).to_contain_text(
        "The signature is Base64; the platform expects the HMAC-SHA512 digest as lowercase hexadecimal."
    )
    journey.check("base64")

    check(COMPACT, crypto.sign(secret, COMPACT.encode()))
    expect(page.get_by_role("status")).to_contain_text("The signature matches.")
    journey.check("matches", widths=(PHONE,))
    assert secret not in page.content()

    # A body near the API's 1 MiB limit: percent-encoded, as a plain form would send it, about three times larger.
    large = "[" + ",".join(["{}"] * 300_000) + "]"
    check(large, crypto.sign(secret, large.encode()))
    expect(page.get_by_role("status")).to_contain_text("The signature matches.")
