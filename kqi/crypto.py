"""Secrets at rest (git and registry tokens, TLS and SSH private keys): Fernet-encrypted with the
site key, which lives in the instance folder (or `encryption_key` in the configuration), never in
the database. Only the code that uses a secret unseals it, at the moment it uses it, with the
SecretBox it was handed (the app factory makes one per app; nothing here is global)."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

EXTENSION = "kqi_crypto"  # where the app factory keeps the app's SecretBox (app.extensions)


class SecretBox:
    def __init__(self, key: str):
        self._fernet = Fernet(key.encode())

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted: was the instance's encryption key replaced?") from None


def new_key() -> str:
    return Fernet.generate_key().decode()

