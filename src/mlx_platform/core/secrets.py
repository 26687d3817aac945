"""Secret configuration values: encrypted at rest, masked everywhere they would be shown.

Values of fields marked ``secret`` are stored as ``{"$encrypted": "<Fernet token>"}``. Every
secret value the process has seen is also remembered (in memory only) so the log filter can
mask it, should it ever reach a log record through a plugin's own message.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from mlx_platform.wire import SECRET_MASK

_ENC = "$encrypted"


class SecretRedactor(logging.Filter):
    """Masks every known secret value in log records (message and arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, value: Any) -> None:
        text = str(value)
        if len(text) >= 3:  # masking "1" or "" would garble every log line
            with self._lock:
                self._values.add(text)

    @property
    def has_values(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        if not self._values:
            return text
        # Longest first, so a secret that contains another is masked whole.
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, SECRET_MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
            if record.exc_info and record.exc_info[1] is not None:
                exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = self.redact(exc_text)
        return True


REDACTOR = SecretRedactor()


def redact_value(value: Any) -> Any:
    """`value` with every known secret masked in every string inside it."""
    if not REDACTOR.has_values:
        return value
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    def encrypt(self, value: Any) -> dict[str, str]:
        import json

        REDACTOR.remember(value)
        return {_ENC: self._fernet.encrypt(json.dumps(value).encode()).decode()}

    def decrypt(self, stored: Any) -> Any:
        import json

        if isinstance(stored, dict) and _ENC in stored:
            try:
                value = json.loads(self._fernet.decrypt(stored[_ENC].encode()))
            except InvalidToken as exc:
                raise RuntimeError(
                    "a secret configuration value cannot be decrypted: MLX_SECRET_KEY "
                    "differs from the key it was stored with"
                ) from exc
            REDACTOR.remember(value)
            return value
        return stored

    def seal(self, config: dict[str, Any], secret_names: set[str]) -> dict[str, Any]:
        """The configuration as stored: secret fields encrypted."""
        return {
            k: (self.encrypt(v) if k in secret_names and v is not None else v)
            for k, v in config.items()
        }

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored configuration in clear, for the plugin instance only."""
        return {k: self.decrypt(v) for k, v in stored.items()}

    def seal_schema(self, schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The schema as stored: the default of a secret field is a secret too."""
        return {
            name: (
                {**field, "default": self.encrypt(field["default"])}
                if field.get("secret")
                and field.get("default") is not None
                and not _is_sealed(field["default"])
                else field
            )
            for name, field in schema.items()
        }

    def open_schema(self, schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The stored schema with secret defaults in clear, to configure the plugin with."""
        return {
            name: (
                {**field, "default": self.decrypt(field["default"])}
                if _is_sealed(field.get("default"))
                else field
            )
            for name, field in schema.items()
        }


def mask(config: dict[str, Any], secret_names: set[str]) -> dict[str, Any]:
    """The configuration as shown to anyone: secret fields as the mask."""
    return {
        k: (SECRET_MASK if (k in secret_names or _is_sealed(v)) and v is not None else v)
        for k, v in config.items()
    }


def _is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and _ENC in value
