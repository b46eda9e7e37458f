"""Key material for the sandbox API: ids, secrets, request signatures, encryption at rest.

Pure functions with no Django or database access, so every property here is tested on its own
(``tests/test_crypto.py``). Callers supply the encryption keys; reading them from settings is
the job of the app's ``conf`` module.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import importlib
import os
import re
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PUBLIC_KEY_PREFIX = "sbx_"
ENCRYPTION_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the 96-bit nonce GCM is designed for
TOKEN_VERSION = "v1"
DEVELOPMENT_KEY_INFO = b"keys.secret-encryption.v1"

_URLSAFE_BASE64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
# GCM appends a 16-byte tag, so anything shorter than nonce + tag cannot be one of our tokens.
_MIN_PAYLOAD_BYTES = NONCE_BYTES + 16


class EncryptionKeyError(ValueError):
    """The configured encryption keys are missing or malformed."""


class DecryptionError(ValueError):
    """A stored ciphertext cannot be decrypted: bad format, unknown key, or failed authentication.

    Messages never contain plaintext or key material.
    """


def generate_public_key() -> str:
    """Return a new public API key, sent by merchants in the ``X-Processing-Key`` header.

    160 random bits behind a fixed prefix, so a leaked key is recognisable in logs and scanners.
    """
    return PUBLIC_KEY_PREFIX + secrets.token_hex(20)


class RevealedSecret(str):
    """A plaintext secret on its way to the one page that shows it.

    Templates render its value; every repr (Django's debug page, a logged local, a traceback) shows a
    placeholder instead.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret key redacted>'"


def generate_secret() -> str:
    """Return a new signing secret: 256 random bits as 43 characters of unpadded URL-safe base64.

    Never starting with "-": command-line tools read such a value as an option (``--secret -abc`` fails).
    Redrawing those costs under 0.1 bit of entropy.
    """
    while True:
        secret = secrets.token_urlsafe(32)
        if not secret.startswith("-"):
            return secret


def sign(secret: str, body: bytes) -> str:
    """Return the lowercase hex HMAC-SHA512 of ``body`` keyed with ``secret``."""
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


def _sha512_without_openssl():
    """CPython's own SHA-512 (``_sha2`` from 3.12, ``_sha512`` before), else hashlib's (OpenSSL's).

    Same digest; the difference is the cost of a check's two copies and updates. Through OpenSSL 3 each goes through
    its provider layer, and inside a busy worker (caches cold between requests) the check took 13.4–14.0 µs a request
    against 4.1–4.4 µs with CPython's, 7.2–7.4 µs with CPython's under ``hmac.new`` (timed in place, bench/README.md).
    CPython's hashes a large body about 1.5 times slower: 2.5 ms against 1.7 ms for the largest, 1 MiB.
    """
    for name in ("_sha2", "_sha512"):
        try:
            return importlib.import_module(name).sha512
        except (ImportError, AttributeError):
            continue
    return hashlib.sha512


_SHA512 = _sha512_without_openssl()
_SHA512_BLOCK_BYTES = 128
# RFC 2104's pads, as translation tables: the key XOR 0x36..., and XOR 0x5c...
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


class SignatureVerifier:
    """Checks bodies against signatures made with one secret.

    HMAC-SHA512 (RFC 2104) with its inner and outer hashes already keyed, so each check hashes only the body: the
    sandbox API checks every request of a key against the same secret. The same construction as the ``hmac``
    module's, over CPython's own SHA-512 (``_sha512_without_openssl``); the tests compare it with ``hmac``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: str) -> None:
        key = secret.encode()
        if len(key) > _SHA512_BLOCK_BYTES:
            key = _SHA512(key).digest()
        key = key.ljust(_SHA512_BLOCK_BYTES, b"\0")
        self._inner = _SHA512(key.translate(_INNER_PAD))
        self._outer = _SHA512(key.translate(_OUTER_PAD))

    def __repr__(self) -> str:
        return "<SignatureVerifier>"

    def matches(self, body: bytes, signature: str) -> bool:
        """Tell whether ``signature`` is the lowercase hex signature of ``body``; never raises for any str."""
        # compare_digest only takes ASCII str, so it would raise on the rest; those cannot match anyway.
        # Branching on this reveals only a property of the attacker's own input.
        if not signature.isascii():
            return False
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        # SECURITY: constant-time comparison, so timing does not reveal how many leading characters of a
        # forged signature are right.
        return hmac.compare_digest(outer.hexdigest(), signature)


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """Tell whether ``signature`` is the signature of ``body`` under ``secret``.

    Only the exact lowercase hex form is accepted. Returns False, never raises, for any str.
    """
    return SignatureVerifier(secret).matches(body, signature)


def fingerprint(secret: str) -> str:
    """Return 8 hex characters identifying ``secret``, safe to show.

    Lets a merchant tell which secret a server holds; 32 bits of a hash say nothing usable about
    256 random bits.
    """
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def parse_encryption_keys(value: str) -> list[bytes]:
    """Parse a comma-separated list of URL-safe base64 encryption keys, newest first.

    Padding is optional; whitespace around items and empty items are ignored. Each item must
    decode to exactly 32 bytes. Raises ``EncryptionKeyError`` naming the 1-based position of a bad
    item in the comma-separated list, never its value, or when no key is given.
    """
    keys = []
    for position, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        key = _decode_urlsafe_base64(item) if _URLSAFE_BASE64.fullmatch(item) else None
        if key is None or len(key) != ENCRYPTION_KEY_BYTES:
            raise EncryptionKeyError(
                f"Encryption key #{position} is not the URL-safe base64 encoding of "
                f"{ENCRYPTION_KEY_BYTES} bytes; generate one with new_encryption_key()."
            )
        keys.append(key)
    if not keys:
        raise EncryptionKeyError("No encryption key is configured.")
    return keys


def new_encryption_key() -> str:
    """Return a fresh random key, encoded for the list read by ``parse_encryption_keys``."""
    return base64.urlsafe_b64encode(os.urandom(ENCRYPTION_KEY_BYTES)).rstrip(b"=").decode("ascii")


def derive_encryption_key(django_secret_key: str) -> bytes:
    """Derive a 32-byte encryption key from Django's ``SECRET_KEY``. Development only.

    Production must configure independent keys: with this fallback, rotating ``SECRET_KEY`` makes
    every stored secret unreadable, and one leaked setting exposes both.
    """
    # The info label separates this key from anything else derived from the same SECRET_KEY.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=ENCRYPTION_KEY_BYTES, salt=None, info=DEVELOPMENT_KEY_INFO)
    return hkdf.derive(django_secret_key.encode())


def encrypt_secret(plaintext: str, *, associated_data: bytes, keys: Sequence[bytes]) -> str:
    """Encrypt ``plaintext`` with AES-256-GCM under ``keys[0]``.

    Returns ``"v1$<key id>$<URL-safe base64 of nonce || ciphertext || tag>"``. The same
    ``associated_data`` (for instance the key's public id) must be given to decrypt, so a ciphertext
    copied to another row does not decrypt there. Raises ``EncryptionKeyError`` if ``keys`` is
    empty or ``keys[0]`` is not 32 bytes.
    """
    key = _current_key(keys)
    # SECURITY: a fresh random nonce per message; reusing one under the same key breaks GCM's
    # confidentiality and lets an attacker forge tags.
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode(), associated_data)
    payload = base64.urlsafe_b64encode(nonce + ciphertext).rstrip(b"=").decode("ascii")
    return f"{TOKEN_VERSION}${_key_id(key)}${payload}"


def decrypt_secret(token: str, *, associated_data: bytes, keys: Sequence[bytes]) -> str:
    """Decrypt a token made by ``encrypt_secret`` with any of ``keys``.

    Raises ``DecryptionError`` when the token is malformed, none of ``keys`` made it, or
    authentication fails (tampered token or different ``associated_data``).
    """
    key_id, payload = _split_token(token)
    candidates = [key for key in keys if _key_id(key) == key_id]
    if not candidates:
        raise DecryptionError(f"No configured encryption key has id {key_id}.")
    nonce, ciphertext = payload[:NONCE_BYTES], payload[NONCE_BYTES:]
    # Two keys may share a 32-bit id, however unlikely; authentication tells them apart.
    for key in candidates:
        try:
            # SECURITY: GCM verifies the tag over ciphertext and associated data before returning
            # anything, so a tampered or transplanted token yields no plaintext.
            return _cipher(key).decrypt(nonce, ciphertext, associated_data).decode()
        except InvalidTag:
            continue
    raise DecryptionError("Ciphertext failed authentication: tampered, or other associated data.")


def needs_reencryption(token: str, keys: Sequence[bytes]) -> bool:
    """Tell whether ``token`` was made with a key other than ``keys[0]``; used when rotating keys.

    Reads only the token's key id and does not authenticate it. Raises ``DecryptionError`` for a
    malformed token and ``EncryptionKeyError`` for an unusable ``keys[0]``.
    """
    key_id, _payload = _split_token(token)
    return key_id != _key_id(_current_key(keys))


@functools.lru_cache(maxsize=8)
def _key_id(key: bytes) -> str:
    """Name an encryption key in tokens without revealing anything usable about it."""
    return hashlib.sha256(key).hexdigest()[:8]


@functools.lru_cache(maxsize=8)
def _cipher(key: bytes) -> AESGCM:
    # The key schedule is the costly part of opening a secret, which the sandbox API does on every request.
    return AESGCM(key)


def _current_key(keys: Sequence[bytes]) -> bytes:
    if not keys:
        raise EncryptionKeyError("No encryption key is configured.")
    if len(keys[0]) != ENCRYPTION_KEY_BYTES:
        raise EncryptionKeyError(f"The current encryption key must be {ENCRYPTION_KEY_BYTES} bytes.")
    return keys[0]


def _split_token(token: str) -> tuple[str, bytes]:
    """Return the key id and decoded payload of a token, or raise ``DecryptionError``."""
    parts = token.split("$")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION or not _KEY_ID.fullmatch(parts[1]):
        raise DecryptionError("Not an encrypted secret in the v1 format.")
    key_id, encoded = parts[1], parts[2]
    payload = _decode_urlsafe_base64(encoded) if _URLSAFE_BASE64.fullmatch(encoded) else None
    if payload is None or len(payload) < _MIN_PAYLOAD_BYTES:
        raise DecryptionError("Encrypted secret is not valid base64 of nonce, ciphertext and tag.")
    return key_id, payload


def _decode_urlsafe_base64(text: str) -> bytes | None:
    """Decode URL-safe base64 whose padding may be missing; None if it is not valid."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        return None
