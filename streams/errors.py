"""One exception hierarchy for the whole project; edges wrap library errors in these."""

from __future__ import annotations

__all__ = ["ConfigError", "ConsentwatchError", "InvalidEvent", "RegistryUnavailable",
           "SchemaError"]


class ConsentwatchError(Exception):
    """Base of every error consentwatch raises on purpose."""


class InvalidEvent(ConsentwatchError):
    """A record that is not a valid event of the contract.

    `code` is a short, bounded reason key (safe as a metric label); the message
    says what is wrong without echoing field values, which may be personal data.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SchemaError(ConsentwatchError):
    """The Avro schemas in `schemas/` are missing or inconsistent."""


class ConfigError(ConsentwatchError):
    """A setting or command-line value that cannot be used."""


class RegistryUnavailable(ConsentwatchError):
    """The schema registry could not answer (unreachable, timed out, or a server error).

    A transient fault, not a poison record: the record is read again later, never
    dead-lettered for it.
    """
