"""Errors raised by the cloud: one base class, context as attributes."""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud raises on purpose."""

    status = 400
    """HTTP status the API answers with."""
    title = "Bad request"
    """Short, stable problem title (RFC 9457 ``title``)."""

    def __init__(self, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries (e.g. ``Retry-After``); none by default."""
        return {}


class ConfigError(CloudError):
    """A setting is missing or invalid; names the setting."""

    title = "Invalid configuration"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}", key=key)
        self.key = key
        self.reason = reason


class NotFound(CloudError):
    """The thing asked for does not exist (or the caller may not know it does)."""

    status = 404
    title = "Not found"


class Conflict(CloudError):
    """The request conflicts with what is stored (duplicate id, reused idempotency key)."""

    status = 409
    title = "Conflict"


class Forbidden(CloudError):
    """The caller is authenticated but their role does not allow this."""

    status = 403
    title = "Forbidden"


class PreconditionFailed(CloudError):
    """A business or HTTP precondition does not hold (If-Match, twin not in lockout...)."""

    status = 412
    title = "Precondition failed"


class PreconditionRequired(CloudError):
    """A conditional header is required (RFC 6585)."""

    status = 428
    title = "Precondition required"


class CommandRefused(CloudError):
    """A command may not be created now; `reason` is machine-readable."""

    status = 409
    title = "Command refused"

    def __init__(self, detail: str, reason: str, **context: object) -> None:
        super().__init__(detail, reason=reason, **context)
        self.reason = reason


class RateLimited(CommandRefused):
    """The remote-reset limit would be exceeded."""

    status = 429
    title = "Rate limited"


class InvalidInput(CloudError):
    """A value supplied by the caller is invalid."""

    status = 422
    title = "Invalid input"
