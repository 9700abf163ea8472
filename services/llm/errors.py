"""How an upstream call fails, as this service answers it.

Every failure is an UpstreamError subclass carrying the HTTP status the service answers
with and a message that never contains a credential; `mapped_errors` turns the `openai`
SDK's exceptions into them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import openai

from logformat import redact


class UpstreamError(Exception):
    """The upstream call failed; `status_code` is what our client receives."""

    status_code = 502

    def __init__(
        self, message: str, *, retry_after: int | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # The upstream's own `param` and `code` of a rejected request, passed on to the client.
        self.param = param
        self.code = code
        # Set by the router: the HTTP status the upstream answered (None: no answer), every
        # attempt it made, and whether the client's SDK should retry (False: the router
        # spent its attempts and waiting would not help; sent as `x-should-retry: false`).
        self.upstream_status: int | None = None
        self.attempts: tuple = ()
        self.should_retry: bool | None = None


class UpstreamTimeout(UpstreamError):
    status_code = 504


class UpstreamUnavailable(UpstreamError):
    """Unreachable, a 5xx, or a reply we cannot use."""

    status_code = 502


class UpstreamAuthFailed(UpstreamError):
    status_code = 502


class UpstreamRateLimited(UpstreamError):
    """The upstream's 429: answered as OpenAI answers one, a 429 (README: Routing)."""

    status_code = 429


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (for example: context too long)."""

    status_code = 400


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return f"upstream answered HTTP {exc.status_code}"


def _upstream_error_field(exc: openai.APIStatusError, name: str) -> str | None:
    """A string field (`param`, `code`) of the upstream's error body, if it has one."""
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error", body)
    value = error.get(name) if isinstance(error, Mapping) else None
    return value if isinstance(value, str) and len(value) <= 200 else None


def _retry_after_seconds(exc: openai.APIStatusError) -> int | None:
    """The upstream's Retry-After in whole seconds (at least 1), None when it sent none."""
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(1, math.ceil(float(raw))) if raw else None
    except ValueError:
        return None


def _failed(error: UpstreamError, status: int | None) -> UpstreamError:
    error.upstream_status = status
    return error


# 4xx that say the deployment is wrong or busy, not the request: a wrong model or Azure
# deployment name (404), a request timeout (408), a conflict (409). The router fails over.
_DEPLOYMENT_FAULTS = frozenset({404, 408, 409})


def _status_error(exc: openai.APIStatusError, secrets: Sequence[str]) -> UpstreamError:
    """A 4xx the upstream answered (its message, param and code passed on), or a 5xx: a
    503 is answered 503 (with the upstream's Retry-After), any other 502."""
    if exc.status_code in _DEPLOYMENT_FAULTS:
        return UpstreamUnavailable(f"The language model failed (HTTP {exc.status_code})")
    if 400 <= exc.status_code < 500:
        message = redact(_upstream_message(exc), secrets)
        param, code = _upstream_error_field(exc, "param"), _upstream_error_field(exc, "code")
        return UpstreamRejected(f"The language model rejected the request: {message}", param=param, code=code)
    error = UpstreamUnavailable(
        f"The language model failed (HTTP {exc.status_code})",
        retry_after=_retry_after_seconds(exc) if exc.status_code == 503 else None,
    )
    if exc.status_code == 503:
        error.status_code = 503
    return error


@contextmanager
def mapped_errors(secrets: Sequence[str]) -> Iterator[None]:
    """Turn the SDK's exceptions raised inside into UpstreamError subclasses, their
    messages without credentials (`secrets` redacted)."""
    try:
        yield
    except openai.APITimeoutError:
        raise UpstreamTimeout("The language model did not answer in time") from None
    except openai.APIConnectionError:
        raise UpstreamUnavailable("The language model could not be reached") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise _failed(
            UpstreamAuthFailed(
                "The language model rejected this service's credentials; the operator must fix the API key"
            ),
            exc.status_code,
        ) from None
    except openai.RateLimitError as exc:
        error = UpstreamRateLimited(
            "The language model is over its rate limit or quota; retry later",
            retry_after=_retry_after_seconds(exc),
            code=_upstream_error_field(exc, "code") or "rate_limit_exceeded",
        )
        raise _failed(error, 429) from None
    except openai.APIStatusError as exc:
        raise _failed(_status_error(exc, secrets), exc.status_code) from None
    except ValueError:
        # The SDK raises ValueError (JSONDecodeError) for a body that is not JSON.
        raise UpstreamUnavailable("The language model sent a reply that is not valid JSON") from None
    except openai.APIError as exc:
        # An error event inside a stream, or a reply the SDK could not use.
        raise UpstreamUnavailable(f"The language model reported an error: {redact(str(exc), secrets)}") from None
