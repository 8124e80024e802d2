"""Errors raised by the edge agent; one base, context as attributes."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the edge agent raises."""

    def __init__(self, message: str, *, device_id: str | None = None) -> None:
        super().__init__(message)
        self.device_id = device_id


class ConfigError(EdgeError, ValueError):
    """A configuration value is missing or invalid; `key` names it (e.g. ``modbus.baudrate``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class ConfigErrors(ConfigError):
    """Every problem found in a configuration at once, each a `ConfigError` (`problems`);
    `key` and `reason` are the first's, the message lists them all."""

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems = problems
        super().__init__(problems[0].key, problems[0].reason)

    def __str__(self) -> str:
        return "; ".join(f"{p.key}: {p.reason}" for p in self.problems)


class CommsError(EdgeError):
    """The boiler controller did not answer usefully over Modbus."""

    def __init__(
        self,
        message: str,
        *,
        device_id: str | None = None,
        function_code: int | None = None,
        address: int | None = None,
    ) -> None:
        super().__init__(message, device_id=device_id)
        self.function_code = function_code
        self.address = address


class CommsTimeout(CommsError):
    """No (valid) reply within the request timeout, after every retry."""


class DeviceException(CommsError):
    """The controller answered with a Modbus exception response (`exception_code`)."""

    def __init__(
        self,
        message: str,
        *,
        exception_code: int,
        device_id: str | None = None,
        function_code: int | None = None,
        address: int | None = None,
    ) -> None:
        super().__init__(message, device_id=device_id, function_code=function_code, address=address)
        self.exception_code = exception_code


class ModemError(EdgeError):
    """The cellular modem did not answer an AT command usefully."""


class OutboxError(EdgeError):
    """The durable outbox cannot be opened or written."""
