"""Random, unguessable tokens for tracking URLs and public ids."""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
# 22 base-36 characters carry 113 random bits; lower case survives clients that
# lower-case URLs, and the alphabet has no '-', so a token never holds '--'.
TOKEN_LENGTH = 22
TOKEN_RE = re.compile(rf"[0-9a-z]{{{TOKEN_LENGTH}}}")


def new_token() -> str:
    """A fresh random token."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))


def is_token(value: str) -> bool:
    """Whether a string has the shape of one of our tokens."""
    return TOKEN_RE.fullmatch(value) is not None
