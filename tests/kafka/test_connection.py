"""Broker settings: precedence, validation, secrets kept out of sight; the registry client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from streams.errors import ConfigError
from streams.kafka.connection import KafkaConnection, Secret
from streams.kafka.topics import TopicNames, replica_configs, replication_for, topic_configs
from streams.model.events import FeatureToggled
from streams.serde.wire import ConfluentFraming, RegistrySchemaIds
from tests.conftest import run_cli


def test_flag_beats_file_beats_environment(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text('bootstrap = "file:9092"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                      'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "cw"\n'
                      'sasl_password = "hunter2"\n')
    env = {"CONSENTWATCH_BROKER": "env:9092"}
    assert KafkaConnection.resolve(None, None, env).bootstrap == "env:9092"
    from_file = KafkaConnection.resolve(None, config, env)
    assert from_file.bootstrap == "file:9092"
    assert from_file.sasl_password == Secret("hunter2")
    assert KafkaConnection.resolve("flag:9092", config, env).bootstrap == "flag:9092"


def test_secrets_never_appear_in_repr_or_str() -> None:
    env = {
        "CONSENTWATCH_BROKER": "b:9092",
        "CONSENTWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CONSENTWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
        "CONSENTWATCH_KAFKA_SASL_USERNAME": "cw",
        "CONSENTWATCH_KAFKA_SASL_PASSWORD": "s3cr3t-value",
    }
    connection = KafkaConnection.resolve(None, None, env)
    assert "s3cr3t-value" not in repr(connection)
    assert "s3cr3t-value" not in str(connection)
    assert connection.aiokafka_options()["sasl_plain_password"] == "s3cr3t-value"


@pytest.mark.parametrize("env", [
    {"CONSENTWATCH_BROKER": "b:1", "CONSENTWATCH_KAFKA_SECURITY_PROTOCOL": "CARRIER_PIGEON"},
    {"CONSENTWATCH_BROKER": "b:1", "CONSENTWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
    {},
])
def test_unusable_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        KafkaConnection.resolve(None, None, env)


def test_unknown_keys_in_the_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text('bootstrap = "b:1"\npasword = "typo"\n')
    with pytest.raises(ConfigError, match="pasword"):
        KafkaConnection.resolve(None, config, {})


def test_missing_broker_is_a_one_line_usage_error() -> None:
    result = run_cli("topics", "create", "--broker", "")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1


def test_unreachable_broker_is_a_one_line_error() -> None:
    result = run_cli("findings", "--broker", "127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines == ["consentwatch: error: cannot reach the broker at 127.0.0.1:1: "
                     "KafkaConnectionError"]


def test_topic_names_and_configs() -> None:
    names = TopicNames("acme")
    assert names.event("ConsentChanged") == "acme.events.consent-changed"
    assert names.group_id == "acme.worker"
    assert len(set(names.all())) == 11
    configs = topic_configs(names)
    assert configs[names.findings]["cleanup.policy"] == "compact"
    assert configs[names.dead_letters]["cleanup.policy"] == "delete"
    with pytest.raises(ConfigError):
        TopicNames("bad prefix")


def test_topics_get_three_replicas_where_there_are_three_brokers_and_two_must_be_in_sync(
        ) -> None:
    assert [replication_for(n) for n in (0, 1, 2, 3, 5)] == [1, 1, 2, 3, 3]
    assert replica_configs(3) == {"min.insync.replicas": "2"}
    # Fewer replicas: Kafka's default of 1, else one broker down stops every write.
    assert replica_configs(2) == {}
    assert replica_configs(1) == {}


class _Registry(BaseHTTPRequestHandler):
    """Just enough of the Schema Registry REST API to exercise the client."""

    schemas: ClassVar[dict[int, str]] = {}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for schema_id, text in self.schemas.items():
            if text == body["schema"]:
                return self._send({"id": schema_id})
        schema_id = len(self.schemas) + 100
        self.schemas[schema_id] = body["schema"]
        return self._send({"id": schema_id})

    def do_GET(self) -> None:
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id not in self.schemas:
            self.send_response(404)
            self.end_headers()
            return
        self._send({"schema": self.schemas[schema_id]})

    def _send(self, answer: Any) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_confluent_framing_through_a_registry(registry: str) -> None:
    writer = ConfluentFraming(RegistrySchemaIds(registry))
    event = FeatureToggled("t1", 5, "acct", None, "p", True, "host")
    payload = writer.encode(event)
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == 100
    # a fresh reader knows nothing: it fetches the writer schema by id
    assert ConfluentFraming(RegistrySchemaIds(registry)).decode(payload) == event


def _config_error_line(config: Path) -> str:
    result = run_cli("topics", "create", "--kafka-config", str(config))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(("setting", "key", "expected"), [
    ("sasl_password = 918273645", "sasl_password", "must be a string, not an integer"),
    ("ssl_password = true", "ssl_password", "must be a string, not a boolean"),
    ('sasl_username = ["cw"]', "sasl_username", "must be a string, not an array"),
    ('connect_timeout = "918273645"', "connect_timeout", "must be a number of seconds"),
])
def test_a_setting_of_the_wrong_type_names_the_key_but_never_the_value(
        tmp_path: Path, setting: str, key: str, expected: str) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text(f'bootstrap = "b:1"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                      f'sasl_mechanism = "PLAIN"\n{setting}\n')
    line = _config_error_line(config)
    assert key in line and expected in line, line
    assert "918273645" not in line and "cw" not in line.split(key)[-1]


def test_an_unknown_key_is_one_line_through_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text('bootstrap = "b:1"\nsasl_pasword = "hunter2"\n')
    line = _config_error_line(config)
    assert "unknown keys" in line and "sasl_pasword" in line
    assert "hunter2" not in line


def test_a_toml_syntax_error_says_which_line_and_not_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text('bootstrap = "b:1"\nsasl_password = "unterminated\n')
    line = _config_error_line(config)
    assert "not valid TOML" in line and "line 2" in line, line
    assert "TOMLDecodeError" not in line and "unterminated" not in line


def test_the_connect_timeout_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text('bootstrap = "b:1"\nconnect_timeout = 2\n')
    assert KafkaConnection.resolve(None, config, {}).connect_timeout == 2.0
    env = {"CONSENTWATCH_BROKER": "b:1", "CONSENTWATCH_KAFKA_CONNECT_TIMEOUT": "0.5"}
    assert KafkaConnection.resolve(None, None, env).connect_timeout == 0.5
    assert KafkaConnection.resolve(None, None, {"CONSENTWATCH_BROKER": "b:1"}).connect_timeout == 30
    for bad in ("soon", "0", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match=r"(?i)connect_timeout"):
            KafkaConnection.resolve(None, None, {**env, "CONSENTWATCH_KAFKA_CONNECT_TIMEOUT": bad})


def test_a_registry_url_that_is_not_one_is_the_registry_unavailable() -> None:
    """Not a ValueError out of the decoder: the batch is held, the worker lives on."""
    from streams.errors import RegistryUnavailable

    with pytest.raises(RegistryUnavailable):
        RegistrySchemaIds("notaurl").schema_for(1)
