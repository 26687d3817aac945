"""Keys that verify tokens from an identity provider: a PEM public key, or a JWKS file.

Only public keys belong here: a JWKS entry with a symmetric (`oct`) key or private members is
refused, so an HS256 token can never be checked against anything but the service's own
secret. Plain functions over PyJWT and cryptography, used by settings (to refuse a bad
configuration at start) and by the server (to verify), which sits above settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

log = logging.getLogger("mlx_platform.auth")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_ALGORITHMS = "HS256,RS256,ES256"

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
    "ES256K": ec.SECP256K1,
}
# members of a JWK that only a private key has (RFC 7518 section 6)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


# The public keys PyJWT verifies with (asymmetric algorithms); anything else is refused.
PUBLIC_KEY_TYPES = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


def parse_algorithms(text: str) -> tuple[str, ...]:
    """The allowed list from `MLX_JWT_ALGORITHMS` (comma- or space-separated)."""
    known = set(jwt.algorithms.get_default_algorithms()) - {"none"}
    items = [a for a in re.split(r"[\s,]+", text) if a]
    if not items:
        raise ValueError("at least one algorithm is needed, e.g. HS256,RS256,ES256")
    for item in items:
        if item.lower() == "none":
            raise ValueError("'none' is never allowed: every token must be signed")
        if item not in known:
            raise ValueError(f"unknown algorithm '{item}'; known: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(items))


def key_fits(algorithm: str, key: object) -> bool:
    """Whether `key` is of the kind `algorithm` verifies with (RSA for RS/PS, the curve of ES)."""
    if algorithm[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            key.curve, _EC_CURVES[algorithm]
        )
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _pem_public_key(data: bytes, where: str) -> PublicKey:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        # the exception's text is not shown: it could quote a private key pasted by mistake
        raise ValueError(
            f"{where} is not a PEM public key or certificate "
            "(-----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----)"
        ) from None
    if not isinstance(key, PUBLIC_KEY_TYPES):
        raise ValueError(f"{where} holds a {type(key).__name__}: use an RSA, EC or Ed25519 key")
    return key


def is_pem_text(source: str) -> bool:
    return source.lstrip().startswith("-----BEGIN")


def load_public_key(source: str) -> PublicKey:
    """`MLX_JWT_PUBLIC_KEY`: PEM text, or the path of a PEM file."""
    if is_pem_text(source):
        return _pem_public_key(source.strip().encode(), "MLX_JWT_PUBLIC_KEY")
    path = Path(source).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the PEM file {path}: {exc.strerror or exc}") from None
    return _pem_public_key(data, f"the PEM file {path}")


@dataclass(frozen=True)
class JwksKey:
    kid: str | None
    key: PublicKey
    algorithm: str | None  # the JWK's own `alg`, when it names one


def load_jwks(path: Path) -> dict[str | None, JwksKey]:
    """The keys of a JWKS file by `kid` (a key without one is under None)."""
    try:
        text = Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the JWKS file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError(f"the JWKS file {path} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'the JWKS file {path} has no "keys" list')
    keys: dict[str | None, JwksKey] = {}
    for index, entry in enumerate(entries):
        where = f"key {index} of the JWKS file {path}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a JSON object")
        if entry.get("use") not in (None, "sig"):
            continue  # an encryption key: not for tokens
        if entry.get("kty") == "oct" or _PRIVATE_MEMBERS & set(entry):
            raise ValueError(
                f"{where} is a symmetric or private key: a JWKS file holds public keys only"
            )
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"{where} has a kid that is not a string")
        if kid in keys:
            raise ValueError(f"{where} repeats the kid of another key")
        alg = entry.get("alg")
        if alg is not None and (not isinstance(alg, str) or alg in HMAC_ALGORITHMS):
            raise ValueError(f"{where} names an alg that is not a public-key algorithm")
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # PyJWT's messages quote the whole JWK: name the kind of error only
            raise ValueError(f"{where} is not a usable public key ({type(exc).__name__})") from None
        if not isinstance(key, PUBLIC_KEY_TYPES):
            raise ValueError(f"{where} is not a public key")
        keys[kid] = JwksKey(kid, key, alg)
    if not keys:
        raise ValueError(f"the JWKS file {path} has no signing key")
    return keys


T = TypeVar("T")


class ReloadingFile(Generic[T]):
    """What `load` makes of a file, loaded again when the file changes (key rotation).

    A file that fails to load after a change (half written, deleted) keeps the last good
    value, with one warning per change."""

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        self.path = path
        self._load = load
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._value: T | None = None
        self._failed_stamp: Any = None

    def get(self) -> T | None:
        try:
            st = os.stat(self.path)
            stamp: Any = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp = ("missing", str(exc))
        if stamp == self._stamp:
            return self._value
        with self._lock:
            if stamp == self._stamp or stamp == self._failed_stamp:
                return self._value
            try:
                value = self._load(self.path)
            except ValueError as exc:
                self._failed_stamp = stamp
                log.warning("%s; keeping the keys loaded before", exc)
                return self._value
            self._value, self._stamp, self._failed_stamp = value, stamp, None
            return value
