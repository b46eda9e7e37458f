"""The reference clients against a live server: examples/sandbox_client.py and the README's curl + openssl command.

The live server runs in another thread on real time, so these tests do not freeze the clock: each 2FA code is
used once (the authenticator's current code to generate, a backup code to activate).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from dashboard.audit import RequestContext
from dashboard.models import Role
from examples import sandbox_client
from keys import crypto, services
from keys.allowlist import parse_allowlist
from sandbox.models import ApiRequest, Balance, Currency

from . import helpers

CTX = RequestContext("127.0.0.1", "pytest")
BACKUP_CODE = "1234567890"

ROOT = Path(__file__).resolve().parent.parent
README_BASE_URL = "http://127.0.0.1:8000"

# The README's command shape, with the server's address in $URL.
CURL_COMMAND = """BODY='{}'; SIG=$(printf '%s' "$BODY" | openssl dgst -sha512 -hmac "$SECRET" | sed 's/^.* //'); \
curl -s -X POST "$URL/api/v2/accounts/list" -H 'Content-Type: application/json' \
-H "X-Processing-Key: $KEY" -H "X-Processing-Signature: $SIG" --data-binary "$BODY"
"""

# The live server shares the database only outside a test transaction.
live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_pair():
    """A merchant with a balance, and its key activated through the services: (key, secret)."""
    helpers.seed_currencies()
    merchant = helpers.create_merchant("Live Payments")
    owner = helpers.create_member(merchant, Role.OWNER)
    helpers.give_backup_codes(owner, [BACKUP_CODE])
    Balance.objects.create(merchant=merchant, currency=Currency.objects.get(code="BTC"), amount=Decimal("0.04"))
    key = services.generate_key(actor=owner, merchant=merchant, code=helpers.current_code(owner), context=CTX)
    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(""), code=BACKUP_CODE, context=CTX
    )
    return result.key, result.secret


def expected_balances() -> list[dict]:
    return [
        {"currency": currency.code, "type": currency.type, "balance": "0.04" if currency.code == "BTC" else "0"}
        for currency in Currency.objects.order_by("id")
    ]


@live
def test_python_client_gets_the_balances(live_server, live_pair):
    key, secret = live_pair

    status, answer = sandbox_client.call(live_server.url, "accounts/list", key.public_key, secret)

    assert status == 200
    assert answer == {"data": expected_balances()}
    assert ApiRequest.objects.get(api_key=key).status == 200
    key.refresh_from_db()
    assert key.last_used_ip == "127.0.0.1" and key.last_used_at is not None


@live
def test_python_client_gets_the_json_errors(live_server, live_pair):
    key, secret = live_pair

    assert sandbox_client.call(live_server.url, "accounts/list", key.public_key, secret + "x") == (
        403, {"error": "Bad signature header", "code": "bad_header_signature"},
    )
    assert sandbox_client.call(live_server.url, "nope", key.public_key, secret) == (
        404, {"error": "No such API method", "code": "not_found"},
    )
    status, answer = sandbox_client.call(live_server.url, "currencies/list", key.public_key, secret, {"any": [1]})
    assert status == 200 and answer["data"][0]["currency"] == "BTC"


def test_python_client_signs_like_the_project():
    body = b'{"currency":"BTC","foreign_id":"123456"}'
    assert sandbox_client.sign("AbCdEfG123456", body) == crypto.sign("AbCdEfG123456", body)
    assert sandbox_client.fingerprint("AbCdEfG123456") == crypto.fingerprint("AbCdEfG123456")


@live
def test_command_line_prints_the_fingerprint_and_the_answer(live_server, live_pair, capsys):
    key, secret = live_pair

    exit_code = sandbox_client.main(
        ["--base-url", live_server.url, f"--key={key.public_key}", f"--secret={secret}", "accounts/list"]
    )

    out, err = capsys.readouterr()
    assert exit_code == 0
    assert f"secret fingerprint: {key.secret_fingerprint}" in err
    assert key.secret_fingerprint == crypto.fingerprint(secret)
    assert "HTTP 200" in err
    assert json.loads(out) == {"data": expected_balances()}
    assert secret not in out + err


@live
def test_command_line_reads_the_environment_and_fails_on_refusal(live_server, live_pair, capsys, monkeypatch):
    key, secret = live_pair
    monkeypatch.setenv("PROCESSING_BASE_URL", live_server.url)
    monkeypatch.setenv("PROCESSING_KEY", key.public_key)
    monkeypatch.setenv("PROCESSING_SECRET", "not-the-secret")

    exit_code = sandbox_client.main([])

    out, err = capsys.readouterr()
    assert exit_code == 1
    assert "HTTP 403" in err
    assert json.loads(out)["code"] == "bad_header_signature"


@live
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_curl_and_openssl_command_gets_a_200(live_server, live_pair):
    key, secret = live_pair
    env = {**os.environ, "URL": live_server.url, "KEY": key.public_key, "SECRET": secret}

    completed = subprocess.run(["sh", "-c", CURL_COMMAND], env=env, capture_output=True, text=True, timeout=30)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"data": expected_balances()}
    assert list(ApiRequest.objects.filter(api_key=key).values_list("status", "error_code")) == [(200, "")]


def readme_blocks() -> list[str]:
    """The shell blocks of the README's "Call the sandbox" section, as a reader would paste them."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Call the sandbox", 1)[1].split("\n## ", 1)[0]
    return [textwrap.dedent(block) for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]


@live
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_readme_curl_block_as_written_gets_a_200(live_server, live_pair):
    key, secret = live_pair
    [block] = [block for block in readme_blocks() if "openssl dgst" in block]
    assert README_BASE_URL in block
    env = {**os.environ, "KEY": key.public_key, "SECRET": secret}

    completed = subprocess.run(
        ["sh", "-c", block.replace(README_BASE_URL, live_server.url)], env=env, capture_output=True, text=True,
        timeout=30,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"data": expected_balances()}


@live
def test_readme_python_client_command_runs_as_a_script(live_server, live_pair):
    key, secret = live_pair
    [block] = [block for block in readme_blocks() if "examples/sandbox_client.py" in block]
    env = {**os.environ, "KEY": key.public_key, "SECRET": secret, "PROCESSING_BASE_URL": live_server.url}

    completed = subprocess.run(
        ["sh", "-c", block.replace("python ", f"{sys.executable} ", 1)], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=30,
    )

    assert completed.returncode == 0, completed.stderr
    assert f"secret fingerprint: {key.secret_fingerprint}" in completed.stderr
    assert json.loads(completed.stdout) == {"data": expected_balances()}


def test_command_line_says_where_it_looked_when_nothing_answers(capsys):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}"

    status = sandbox_client.main(["accounts/list", f"--base-url={base_url}", "--key=sbx_x", "--secret=s"])

    assert status == 2
    error = capsys.readouterr().err
    assert f"no answer from {base_url}" in error and "is the server running?" in error
    assert "Traceback" not in error


def test_command_line_says_what_answered_when_it_is_not_json(live_server, live_pair, capsys):
    key, secret = live_pair
    base_url = f"{live_server.url}/m"  # the dashboard's HTML 404 page answers there, not the API

    status = sandbox_client.main(["accounts/list", f"--base-url={base_url}", f"--key={key.public_key}",
                                  f"--secret={secret}"])

    assert status == 2
    error = capsys.readouterr().err
    assert f"{base_url} answered HTTP 404, text/html; charset=utf-8, not JSON: '<!doctype html>'" in error
    assert "is it the sandbox?" in error and "Traceback" not in error


def test_client_raises_not_json_for_an_answer_that_is_not_json(live_server, live_pair):
    key, secret = live_pair
    with pytest.raises(sandbox_client.NotJson) as raised:
        sandbox_client.call(f"{live_server.url}/m", "accounts/list", key.public_key, secret)
    assert raised.value.status == 404
