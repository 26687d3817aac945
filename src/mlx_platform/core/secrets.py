"""Secret configuration values: encrypted at rest, masked everywhere they would be shown.

Values of fields marked ``secret`` are stored as ``{"$encrypted": "<Fernet token>"}``. Every
secret value the process has seen is also remembered (in memory only) so the log filter can
mask it, should it ever reach a log record through a plugin's own message.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cryptography.fernet import Fernet, InvalidToken

from mlx_platform.wire import SECRET_MASK

_ENC = "$encrypted"


class SecretRedactor(logging.Filter):
    """Masks every known secret value in log records (message and arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._bytes_pattern: re.Pattern[bytes] | None = None

    def remember(self, value: Any) -> None:
        text = str(value)
        if len(text) < 3:  # masking "1" or "" would garble every log line
            return
        with self._lock:
            if text in self._values:
                return
            self._values.add(text)
            # One alternation, longest first, so a secret that contains another is masked
            # whole, and a large text is scanned once whatever the number of secrets.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            self._bytes_pattern = re.compile(
                b"|".join(re.escape(v.encode("utf-8", "surrogatepass")) for v in ordered)
            )

    @property
    def has_values(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(SECRET_MASK, text)

    def redact_bytes(self, data: bytes) -> bytes:
        pattern = self._bytes_pattern
        if pattern is None:
            return data
        return pattern.sub(SECRET_MASK.encode(), data)

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


# An http(s) URL's user name at least this long, given without a password, is taken for a
# token: `https://<token>@github.com/org/repo.git` is how GitHub (and others) take one.
TOKEN_AS_USER_MIN = 16


def remember_url_credentials(url: str) -> None:
    """Have the redactor mask the password of `url`'s userinfo (``scheme://user:password@host``,
    a package index or git remote that needs credentials): the URL itself, every URL made
    from it (a page or a file on the same host) and any message quoting it are then shown
    with the password masked, the user name kept. An http(s) URL with a user name and no
    password authenticates with that name alone: one of `TOKEN_AS_USER_MIN` characters or
    more is a token and is masked the same way (a short one, `deploy@`, authenticates
    nothing and stays: masking a common word would garble every line that has it). The
    secret is remembered as written, decoded and percent-encoded again (as an HTTP client
    writes the URLs it derives), since any of the three may be what a message quotes; one
    under 3 characters is not (as `SecretRedactor.remember`)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        user = parts.username
    except ValueError:  # a malformed URL (an unclosed IPv6 bracket): it reaches no host
        return
    if not password and parts.scheme in ("http", "https") and user:
        if len(unquote(user)) >= TOKEN_AS_USER_MIN:
            password = user
    if not password:
        return
    plain = unquote(password)
    for form in (password, plain, quote(plain, safe="!$&'()*+,;=")):
        REDACTOR.remember(form)


def redact_value(value: Any) -> Any:
    """`value` with every known secret masked in every string inside it: values and keys,
    at any depth, str and bytes alike (what a plugin returns or raises may be anything)."""
    if not REDACTOR.has_values:
        return value
    return _redact(value)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, bytes | bytearray):
        return REDACTOR.redact_bytes(bytes(value))
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_redact(k): _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _redact(dataclasses.asdict(value))
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return _redact(dump(mode="json"))
        except Exception:  # noqa: BLE001 - not a pydantic model after all: judged below
            pass
    # Anything else is shown through its text (what the JSON encoders fall back to): masked
    # there if a secret is in it.
    text = str(value)
    redacted = REDACTOR.redact(text)
    return redacted if redacted != text else value


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
