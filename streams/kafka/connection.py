"""How to reach the broker: bootstrap address, TLS and SASL, from flags, env or a file.

Secrets (the SASL password, the TLS key password) never appear in `repr`, logs or
error messages.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams.errors import ConfigError

__all__ = ["BROKER_ENV", "KafkaConnection", "Secret"]

BROKER_ENV = "CONSENTWATCH_BROKER"
_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
_NUMBERS = {"connect_timeout"}
_TOML_POSITION = re.compile(r"\(at (line \d+, column \d+|end of document)\)")


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = field(default=None)
    connect_timeout: float = 30.0  # seconds for the broker to answer a client's first request

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ConfigError(f"no broker: pass --broker HOST:PORT or set {BROKER_ENV}")
        if not 0 < self.connect_timeout < float("inf"):
            raise ConfigError("connect_timeout must be a positive number of seconds")
        if self.security_protocol not in _PROTOCOLS:
            raise ConfigError(f"security protocol must be one of {', '.join(sorted(_PROTOCOLS))}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _MECHANISMS:
                raise ConfigError(f"SASL mechanism must be one of {', '.join(sorted(_MECHANISMS))}")
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError("SASL needs a username and a password")

    @classmethod
    def resolve(cls, broker: str | None = None, config_file: Path | None = None,
                env: Mapping[str, str] | None = None) -> KafkaConnection:
        """Flags win over the config file, which wins over the environment."""
        env = os.environ if env is None else env
        values = _from_environment(env)
        path = config_file or (Path(env["CONSENTWATCH_KAFKA_CONFIG"])
                               if env.get("CONSENTWATCH_KAFKA_CONFIG") else None)
        if path is not None:
            values.update(_read_config_file(path))
        if broker:
            values["bootstrap"] = broker
        for secret in ("sasl_password", "ssl_password"):
            if isinstance(values.get(secret), str):
                values[secret] = Secret(values[secret])
        values.setdefault("bootstrap", "")
        return cls(**values)

    def with_bootstrap(self, bootstrap: str) -> KafkaConnection:
        return replace(self, bootstrap=bootstrap)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            password = self.ssl_password.reveal() if self.ssl_password else None
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password)
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka producers, consumers and admin clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (self.sasl_password.reveal()
                                              if self.sasl_password else None)
        return options

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials` for this connection (None for PLAINTEXT)."""
        import faust

        context = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            password = self.sasl_password.reveal() if self.sasl_password else ""
            return faust.SASLCredentials(
                username=self.sasl_username, password=password,
                mechanism=self.sasl_mechanism, ssl_context=context)
        if context is not None:
            return faust.SSLCredentials(context)
        return None


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in fields(KafkaConnection):
        key = f"CONSENTWATCH_KAFKA_{item.name.upper()}"
        if env.get(key):
            values[item.name] = env[key]
    if env.get(BROKER_ENV):
        values["bootstrap"] = env[BROKER_ENV]
    if "connect_timeout" in values:
        try:
            values["connect_timeout"] = float(values["connect_timeout"])
        except ValueError:
            raise ConfigError("CONSENTWATCH_KAFKA_CONNECT_TIMEOUT must be a number of "
                              "seconds") from None
    return values


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, each checked for its name and type.

    Errors name the key and the expected type, never the value: it may be a secret.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the Kafka config file {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the Kafka config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # only the position: tomllib's messages may quote a character of a secret
        found = _TOML_POSITION.search(str(exc))
        where = found.group(1) if found else "an unknown position"
        raise ConfigError(f"the Kafka config file {path} is not valid TOML: "
                          f"error at {where}") from None
    known = {item.name for item in fields(KafkaConnection)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    for key, value in data.items():
        _check_type(path, key, value)
    return {key: float(value) if key in _NUMBERS else value for key, value in data.items()}


def _check_type(path: Path, key: str, value: object) -> None:
    if key in _NUMBERS:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return
        raise ConfigError(f"{path}: {key} must be a number of seconds, not {_kind(value)}")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string, not {_kind(value)}")


def _kind(value: object) -> str:
    """What a TOML value is, in words, without the value itself."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date or time"
