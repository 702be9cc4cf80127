"""Encryption at rest for OAuth tokens, with key rotation.

``TOKEN_ENCRYPTION_KEYS`` holds one or more Fernet keys separated by commas. The first
encrypts; all of them decrypt, so a new key can be put first while old tokens are still
readable, and ``rotate`` re-encrypts a value under the first key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from config.settings import ConfigError


def check_keys(settings: Mapping[str, Any]) -> None:
    """Refuse TOKEN_ENCRYPTION_KEYS set to something that is not keys: it would only
    show when a CRM is connected, or in every CRM job. Unset is refused later, when
    someone connects a CRM."""
    keys = str(settings.get("TOKEN_ENCRYPTION_KEYS") or "")
    if keys.strip():
        TokenCipher(keys)


class TokenCipher:
    def __init__(self, keys: str) -> None:
        parts = [key.strip() for key in keys.split(",") if key.strip()]
        if not parts:
            raise ConfigError(
                "TOKEN_ENCRYPTION_KEYS is not set. Generate a key with: python -c "
                "'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
                ".decode())'"
            )
        try:
            self._fernet = MultiFernet([Fernet(key) for key in parts])
        except ValueError as exc:
            raise ConfigError(
                "TOKEN_ENCRYPTION_KEYS must be url-safe base64 Fernet keys"
            ) from exc

    def encrypt(self, value: str | None) -> str | None:
        return None if value is None else self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return self._fernet.decrypt(value.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "A stored token cannot be decrypted with TOKEN_ENCRYPTION_KEYS; "
                "keep the old key in the list until every token is rotated"
            ) from exc

    def rotate(self, value: str | None) -> str | None:
        return None if value is None else self._fernet.rotate(value.encode()).decode()
