"""Settings for the test suite: the project's own, plus what tests need to be fast and self-contained."""
import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-suite-secret-key-not-used-anywhere-else")
# The test client speaks plain HTTP; tests of the HTTPS-only settings turn them on themselves.
os.environ.setdefault("DJANGO_HTTPS", "0")
# Two fixed key-encryption keys (32 zero bytes, 32 0x01 bytes), so rotation can be tested.
os.environ.setdefault(
    "KEYS_ENCRYPTION_KEYS",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
)

from dashboard.settings import *  # noqa: E402,F401,F403

# A fast hasher: the suite hashes many passwords and tests nothing about the hash's cost.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files come from the finders in tests; there is no collectstatic output to serve.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = True

# SQLite tests use a file, not memory, so tests with threads get real separate connections and locking.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # One file per test process, so runs side by side never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405

# Under pytest-xdist (`make test` runs two processes) each process gets a Redis database of its own: tests
# clear the cache, which on Redis empties the whole database.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST_WORKER and CACHES["default"]["BACKEND"].endswith("RedisCache"):  # noqa: F405
    from urllib.parse import urlsplit, urlunsplit

    _redis = urlsplit(CACHES["default"]["LOCATION"])  # noqa: F405
    _database = (int(_redis.path.strip("/") or 0) + int(_XDIST_WORKER.removeprefix("gw"))) % 16
    CACHES["default"]["LOCATION"] = urlunsplit(_redis._replace(path=f"/{_database}"))  # noqa: F405

# Each request writes its own request-log row before it is answered, so tests read the log straight away;
# tests/test_request_log_batches.py covers the batched writer production uses.
SANDBOX_REQUEST_LOG_FLUSH_SECONDS = 0
