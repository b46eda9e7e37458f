"""The production stack: gunicorn with two workers, DEBUG off, PostgreSQL and Redis, behind a TLS proxy.

The test plays the proxy: it speaks plain HTTP to gunicorn from 127.0.0.1 (a trusted proxy) with
X-Forwarded-Proto: https, as nginx in front of it would. It needs DATABASE_URL to point at PostgreSQL
and REDIS_URL at Redis (CI sets both); elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from dashboard.models import Role
from keys.models import ApiKey
from sandbox.models import ApiRequest
from keys.crypto import sign

from . import helpers

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="needs PostgreSQL: set DATABASE_URL=postgres://... (CI does)",
    ),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL=redis://... (CI does)"),
]


class ProxyClient:
    """An HTTP client that behaves like a TLS-terminating proxy in front of gunicorn, keeping cookies."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body=b"", headers: dict | None = None):
        """``body``: bytes, or an iterable of them to send in chunks."""
        connection_ = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Host": "127.0.0.1", "X-Forwarded-Proto": "https", **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection_.request(method, path, body=body, headers=headers)
        response = connection_.getresponse()
        content = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        connection_.close()
        return response, content

    def request_on_each_worker(self, method: str, path: str, body: bytes, headers: dict) -> list[tuple[int, bytes]]:
        """The same request answered once by each of the two workers, without cookies.

        A sync worker serves one connection at a time: the first connection sends its request line only, so the
        worker that took it waits there for the headers, and the other worker must answer the second connection.
        Then the first is finished, and its worker answers it.
        """
        head = "".join(f"{name}: {value}\r\n" for name, value in {
            "Host": "127.0.0.1", "X-Forwarded-Proto": "https", "Content-Length": str(len(body)), **headers,
        }.items())
        raw = f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body
        request_line_end = raw.index(b"\r\n") + 2
        held = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            held.sendall(raw[:request_line_end])
            time.sleep(0.3)  # for a worker to take the connection and wait in it
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as other:
                other.sendall(raw)
                second = _read_response(other)
            held.sendall(raw[request_line_end:])
            first = _read_response(held)
        finally:
            held.close()
        return [first, second]

    def csrf_token(self, path: str) -> str:
        _, content = self.request("GET", path)
        return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', content).group(1).decode()

    def post_form(self, path: str, fields: dict):
        token = self.csrf_token(path)
        body = urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        return self.request(
            "POST", path, body,
            {"Content-Type": "application/x-www-form-urlencoded", "Referer": f"https://127.0.0.1{path}"},
        )


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "KEYS_ENCRYPTION_KEYS": settings.KEYS_ENCRYPTION_KEYS,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_HTTPS": "1",
        "TRUSTED_PROXIES": "127.0.0.1",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        # The request log's batches are then written only by the workers' shutdown, which the test checks.
        "SANDBOX_REQUEST_LOG_FLUSH_SECONDS": "3600",
    }
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = _free_port()
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dashboard.wsgi", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--access-logfile", "-"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())


    def stop():
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)

    yield port, stop
    stop()
    log.close()


def test_the_whole_lifecycle_and_signed_calls_work_on_two_gunicorn_workers(gunicorn, tmp_path):
    helpers.seed_currencies()
    merchant = helpers.create_merchant("Production Check")
    owner = helpers.create_member(merchant, Role.OWNER, "prod-owner@example.test")
    # The suite's fast hasher is not one production accepts.
    owner.password = PBKDF2PasswordHasher().encode(helpers.PASSWORD, PBKDF2PasswordHasher().salt())
    owner.save(update_fields=["password"])
    backup_codes = [f"{n:010d}" for n in range(1111111111, 1111111111 + 5)]
    helpers.give_backup_codes(owner, backup_codes)
    port, stop_gunicorn = gunicorn
    client = ProxyClient(port)

    response, _ = client.request("GET", "/api/v2/ping")
    assert response.status == 200
    # Static files come from WhiteNoise, with a far-future cache for the hashed names collectstatic made.
    response, content = client.request("GET", "/signin/")
    stylesheet = re.search(rb'href="(/static/css/dashboard\.[0-9a-f]+\.css)"', content).group(1).decode()
    response, css = client.request("GET", stylesheet)
    assert response.status == 200 and b"{" in css
    assert "max-age=315360000" in response.headers["Cache-Control"]
    response, _ = client.post_form("/signin/", {"email": owner.email, "password": helpers.PASSWORD})
    assert response.status == 302
    response, _ = client.post_form("/signin/code/", {"code": helpers.current_code(owner)})
    assert response.status == 302
    assert "__Host-sessionid" in client.cookies

    keys_path = f"/m/{merchant.slug}/keys/"
    response, content = client.request("GET", keys_path)
    assert response.status == 200
    assert "Strict-Transport-Security" in response.headers
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]

    response, _ = client.post_form(keys_path + "generate/", {"name": "prod", "code": backup_codes[0]})
    assert response.status == 302
    key_id = re.search(rb"/keys/(\d+)/activate/", client.request("GET", keys_path)[1]).group(1).decode()
    response, content = client.post_form(
        f"{keys_path}{key_id}/activate/", {"allowlist": "127.0.0.1", "code": backup_codes[1]}
    )
    assert response.status == 200
    secret = re.search(rb'<textarea id="secret-key"[^>]*>([^<]+)</textarea>', content).group(1).decode()
    public_key = re.search(rb"sbx_[0-9a-f]{40}", content).group(0).decode()

    body = b'{"ping":1}'
    headers = {"Content-Type": "application/json", "X-Processing-Key": public_key,
               "X-Processing-Signature": sign(secret, body)}
    # Each worker answers: its own key lookup, kept from now on (sandbox/key_lookup_cache.py).
    for _ in range(3):
        for status, content in client.request_on_each_worker("POST", "/api/v2/accounts/list", body, headers):
            assert status == 200, content
            assert json.loads(content)["data"]

    # The same body in chunks (no Content-Length): gunicorn joins them, and the signature is checked against it.
    response, content = client.request("POST", "/api/v2/accounts/list", iter([body[:4], body[4:]]), headers)
    assert response.status == 200, content

    # The workers' database connections die between requests (a restart, an idle timeout): nothing fails.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert cursor.fetchall(), "the workers had connections to kill"
    for _ in range(3):
        for status, content in client.request_on_each_worker("POST", "/api/v2/accounts/list", body, headers):
            assert status == 200, content
    response, _ = client.request("GET", keys_path)
    assert response.status == 200

    response, _ = client.post_form(f"{keys_path}{key_id}/rename/", {"name": "prod checkout", "code": backup_codes[4]})
    assert response.status == 302
    response, _ = client.post_form(f"{keys_path}{key_id}/deactivate/", {"code": backup_codes[2]})
    assert response.status == 302
    # Refused at once by both workers, though each kept the key's lookup from the calls above.
    for _ in range(2):
        for status, content in client.request_on_each_worker("POST", "/api/v2/accounts/list", body, headers):
            assert status == 403
            assert json.loads(content) == {"error": "Bad key header", "code": "bad_header_key"}

    # The last step of the lifecycle, and what it left in the database.
    response, _ = client.post_form(f"{keys_path}{key_id}/archive/", {"code": backup_codes[3]})
    assert response.status == 302
    key = ApiKey.objects.get(pk=key_id)
    assert (key.status, key.name) == ("archived", "prod checkout")

    # The request log: held in each worker's batch while it serves, written when the worker stops (also by a
    # worker whose connection was killed above and that served nothing since).
    assert not ApiRequest.objects.filter(merchant=merchant).exists()
    stop_gunicorn()
    logged = list(ApiRequest.objects.filter(merchant=merchant).values_list("status", "error_code"))
    assert sorted(logged) == [(200, "")] * 13 + [(403, "bad_header_key")] * 4
    # gunicorn's own lines format too (its format prints the process id), down to each worker's goodbye.
    server_log = (tmp_path / "gunicorn.log").read_text()
    assert "Logging error" not in server_log
    assert server_log.count("Worker exiting") == 2
    # An access line per request, as `make serve` writes them (gunicorn.conf.py's logger): the signed calls'.
    assert len(re.findall(r'^127\.0\.0\.1 - - \[[^]]+\] "POST /api/v2/accounts/list HTTP/1\.1" 200 \d+ "-" "[^"]*"$',
                          server_log, re.MULTILINE)) >= 13
