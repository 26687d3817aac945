"""What the sync and the async client share: everything but the sending.

`BaseClient` reads the settings (arguments, then `MLX_API_URL` / `MLX_API_TOKEN`), builds
each HTTP request from an `APIRequest`, turns answers into wire models or typed errors, and
decides whether and how long to wait before a retry. `MLXClient` and `AsyncMLXClient` only
send and sleep. The pages a listing returns are `_pages.py`'s.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import os
import random
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import httpx
import pydantic
import pydantic_core

from mlx_platform import __version__
from mlx_platform.errors import (
    ERROR_SPECS,
    ERROR_TABLE,
    MLXConnectionError,
    MLXError,
    MLXTimeoutError,
    error_from_payload,
)
from mlx_platform.sdk._exceptions import InvalidResponseError, MLXConfigurationError
from mlx_platform.wire import Pagination, WireModel

log = logging.getLogger("mlx_platform.sdk")


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The TLS context of every client the SDK builds itself, made once per process.

    httpx builds one for each new client by default, and building one loads the CA bundle
    (about 35 ms of CPU): a script or the CLI that makes a client per command paid it every
    time. A client-side context is safe to share between clients and threads. Built as httpx
    builds its default (certifi's bundle; SSL_CERT_FILE / SSL_CERT_DIR when set)."""
    return httpx.create_ssl_context()


DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT: Final = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES: Final = 2
DEFAULT_RETRY_DELAY: Final = 0.5
DEFAULT_MAX_RETRY_DELAY: Final = 8.0
# A Retry-After longer than this is not honoured: the computed backoff is used instead.
MAX_RETRY_AFTER: Final = 60.0
API_PREFIX: Final = "/v1"
ENV_URL: Final = "MLX_API_URL"
ENV_TOKEN: Final = "MLX_API_TOKEN"
# What a bearer token is made of (RFC 6750, b64token): a JWT is base64url parts and dots.
# Anything else cannot be sent: httpx fails on a non-ASCII character (UnicodeEncodeError) and
# refuses a line break in an error that quotes the header, token and all.
TOKEN_FORM: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

# Answers worth another try: the service says "not now", not "no" (ERROR_TABLE's retryable
# codes). An answer with a code is judged by its code: a 503 PLUGIN_HEALTH_CHECK_FAILED of an
# older service is about a plugin, not an outage. One without a code (a proxy's) by its status.
RETRIED_CODES: Final = frozenset(spec.code for spec in ERROR_TABLE if spec.retryable)
RETRY_STATUSES: Final = frozenset(spec.http_status for spec in ERROR_TABLE if spec.retryable)
# Transport failures worth another try. Others (a bad proxy, a local protocol error) are not.
RETRIED_TRANSPORT_ERRORS: Final = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

# What a non-envelope answer (from a proxy, say) of these statuses means in the API's terms.
_STATUS_CODES: Final = {spec.http_status: spec.code for spec in ERROR_TABLE if spec.from_status}


def retryable_answer(status: int, code: str | None) -> bool:
    """Whether an error answer (its HTTP status, its envelope's code if any) is worth another
    try: by the code when this SDK knows it, else by the status."""
    spec = ERROR_SPECS.get(code) if code else None
    if spec is not None:
        return spec.retryable
    return status in RETRY_STATUSES


R = TypeVar("R")
M = TypeVar("M", bound=WireModel)


# ---------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how long to wait, before trying an idempotent request again."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = DEFAULT_MAX_RETRY_DELAY

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise MLXConfigurationError("max_retries must be 0 or more")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise MLXConfigurationError("retry delays must be 0 or more")

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 for the first).

        Exponential (initial_delay * 2**attempt, capped at max_delay), less up to 25% of
        jitter so that clients failing together do not retry together.
        """
        # Cap the exponent: 2**1000 would overflow a float long before any cap applies.
        exponent = min(max(attempt, 0), 1000)
        delay = min(self.initial_delay * pow(2.0, exponent), self.max_delay)
        return delay * (1 - 0.25 * rand())

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The server's Retry-After when it gave a sensible one, else the backoff."""
        if retry_after is not None and 0 <= retry_after <= MAX_RETRY_AFTER:
            return retry_after
        return self.backoff(attempt, rand)


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked to wait: `Retry-After-Ms`, `Retry-After` seconds or HTTP-date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class APIRequest(Generic[R]):
    """One call of the API, before it is sent: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[Any], R]
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    has_body: bool = False
    # Only requests that can be repeated without changing the outcome are retried.
    idempotent: bool = False
    # The HTTP read timeout is raised to at least this (an invoke with its own timeout).
    min_read_timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _envelope_data(body: Any) -> Any:
    if not isinstance(body, dict) or "data" not in body:
        raise InvalidResponseError("the answer is not the API's envelope: no 'data'")
    return body["data"]


def parse_data(model: type[M]) -> Callable[[Any], M]:
    """Read `{"success": true, "data": {...}}` into `model`."""

    def parse(body: Any) -> M:
        return model.model_validate(_envelope_data(body))

    return parse


def parse_page(model: type[M]) -> Callable[[Any], tuple[list[M], Pagination]]:
    """Read `{"success": true, "data": [...], "pagination": {...}}`."""

    def parse(body: Any) -> tuple[list[M], Pagination]:
        data = _envelope_data(body)
        if not isinstance(data, list):
            raise InvalidResponseError("the answer's 'data' is not a list")
        pagination = Pagination.model_validate(body.get("pagination"))
        return [model.model_validate(item) for item in data], pagination

    return parse


def parse_json_object(body: Any) -> dict[str, Any]:
    """An answer that is a bare JSON object (the configuration schema is not enveloped)."""
    if not isinstance(body, dict):
        raise InvalidResponseError("the answer is not a JSON object")
    return body


def encode_json(body: Any) -> bytes:
    """JSON for a request body; datetimes, pydantic models and the like included."""
    return pydantic_core.to_json(body)


def new_request_id() -> str:
    """Sent as X-Request-ID: the service logs under it, and every retry reuses it."""
    return f"req_{uuid.uuid4().hex[:16]}"


def normalize_base_url(url: str) -> str:
    """The service root or its `/v1` URL, as the `/v1` URL without a trailing slash."""
    url = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise MLXConfigurationError(f"base URL {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise MLXConfigurationError(
            f"base URL {url!r} must be an http:// or https:// URL, e.g. {DEFAULT_BASE_URL}"
        )
    if not url.endswith(API_PREFIX):
        url += API_PREFIX
    return url


def token_problem(token: str) -> str | None:
    """Why `token` is no bearer token (None: it is one), in words that never quote it."""
    if TOKEN_FORM.fullmatch(token):
        return None
    if not token.isascii():
        found = "a non-ASCII character"
    elif "\n" in token or "\r" in token:
        found = "a line break"
    elif any(ch.isspace() for ch in token):
        found = "a space"
    elif not token.isprintable():
        found = "a control character"
    else:
        found = "a character no token holds"
    return (
        f"the API token (api_token=... or {ENV_TOKEN}) holds {found}: a token is letters, "
        "digits and - . _ ~ + / = only (what `mlx token create` prints, or the content of "
        "$MLX_HOME/admin.token)"
    )


def _timeout(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value)


class BaseClient:
    """Settings, request building, answer parsing and retry decisions for both clients."""

    base_url: str
    api_token: str
    timeout: httpx.Timeout
    retry_policy: RetryPolicy

    def __init__(
        self,
        *,
        api_token: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        retry_delay: float,
        max_retry_delay: float,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        # spaces around it (a line break read with it from a file) are not part of it
        token = (api_token or "").strip() or os.environ.get(ENV_TOKEN, "").strip()
        if not token:
            raise MLXConfigurationError(
                f"no API token: pass api_token=... or set {ENV_TOKEN} "
                "(`mlx token create --subject NAME --scope plugins:read` mints one; "
                "`mlx serve` keeps an admin token in $MLX_HOME/admin.token)"
            )
        problem = token_problem(token)
        if problem:  # refused now, not by httpx on the first call
            raise MLXConfigurationError(problem)
        self.api_token = token
        self.base_url = normalize_base_url(
            base_url or os.environ.get(ENV_URL, "").strip() or DEFAULT_BASE_URL
        )
        self.timeout = _timeout(timeout)
        self.retry_policy = RetryPolicy(max_retries, retry_delay, max_retry_delay)
        self._default_headers = dict(default_headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # ------------------------------------------------------------ building

    def _headers(self, request: APIRequest[Any], request_id: str) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": f"mlx-platform-python/{__version__}",
            **self._default_headers,
            **request.headers,
            "Authorization": f"Bearer {self.api_token}",
            "X-Request-ID": request_id,
        }
        if request.has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _request_timeout(self, request: APIRequest[Any]) -> httpx.Timeout:
        read = self.timeout.read
        if request.min_read_timeout is None or read is None or read >= request.min_read_timeout:
            return self.timeout
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=request.min_read_timeout,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def _build_request(
        self,
        http_client: httpx.Client | httpx.AsyncClient,
        request: APIRequest[Any],
        request_id: str,
    ) -> httpx.Request:
        return http_client.build_request(
            request.method,
            self.base_url + request.path,
            params=list(request.params),
            content=encode_json(request.body) if request.has_body else None,
            headers=self._headers(request, request_id),
            timeout=self._request_timeout(request),
        )

    # ------------------------------------------------------------ answers

    def _process_response(self, request: APIRequest[R], response: httpx.Response) -> R:
        if not response.is_success:
            raise self._make_status_error(response)
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json()
        except ValueError:
            raise InvalidResponseError(
                f"{request.method} {request.path}: the answer is not JSON",
                request_id=request_id,
                status_code=response.status_code,
            ) from None
        try:
            return request.parse(body)
        except InvalidResponseError as exc:
            exc.request_id = exc.request_id or request_id
            exc.status_code = response.status_code
            raise
        except pydantic.ValidationError as exc:
            raise InvalidResponseError(
                f"{request.method} {request.path}: unexpected answer: {exc.error_count()} "
                f"field(s) do not fit ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})",
                request_id=request_id,
                status_code=response.status_code,
            ) from None

    @staticmethod
    def _make_status_error(response: httpx.Response) -> MLXError:
        """The typed error for a non-2xx answer: by the envelope's code, else by status."""
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            if error.get("code"):
                return error_from_payload(
                    error, status_code=response.status_code, request_id=request_id
                )
        text = " ".join(response.text.split())[:200]
        message = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        if text:
            message += f": {text}"
        code = _STATUS_CODES.get(response.status_code)
        if code is None:
            return InvalidResponseError(
                message, request_id=request_id, status_code=response.status_code
            )
        return error_from_payload(
            {"code": code, "message": message},
            status_code=response.status_code,
            request_id=request_id,
        )

    @staticmethod
    def _error_code(response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            return code if isinstance(code, str) else None
        return None

    # ------------------------------------------------------------ retries

    def _retry_delay(
        self,
        request: APIRequest[Any],
        attempt: int,
        *,
        response: httpx.Response | None = None,
        error: Exception | None = None,
    ) -> float | None:
        """Seconds to wait before trying `request` again, or None to give up now.

        `attempt` counts from 0. Pass the answer, or the transport error when there is none.
        """
        if not request.idempotent or attempt >= self.retry_policy.max_retries:
            return None
        if response is None:
            if not isinstance(error, RETRIED_TRANSPORT_ERRORS):
                return None
            delay = self.retry_policy.backoff(attempt)
            reason = str(error) or type(error).__name__
        else:
            if not retryable_answer(response.status_code, self._error_code(response)):
                return None
            delay = self.retry_policy.delay(attempt, parse_retry_after(response.headers))
            reason = f"HTTP {response.status_code}"
        log.info(
            "%s %s: %s; retrying in %.2fs (retry %d of %d)",
            request.method,
            request.path,
            reason,
            delay,
            attempt + 1,
            self.retry_policy.max_retries,
        )
        return delay

    def _connection_error(
        self, request: APIRequest[Any], exc: httpx.RequestError, attempts: int
    ) -> MLXConnectionError:
        url = self.base_url + request.path
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, httpx.TimeoutException):
            return MLXTimeoutError(
                f"{request.method} {url}: no answer in time ({type(exc).__name__}){tries}",
                url=url,
            )
        reason = str(exc) or type(exc).__name__
        return MLXConnectionError(
            f"{request.method} {url}: could not connect: {reason}{tries}", url=url
        )
