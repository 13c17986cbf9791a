"""kafka.security and replication settings, and the one place that turns them into client
options: checked keys, a password that never shows, and what each protocol gives."""
from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import AuthProtocol

from pipeline.kafka.clients import (SecurityConfigError, client_options, describe,
                                    faust_credentials)
from pipeline.settings import ConfigError, KafkaSettings, SecuritySettings, parse_settings
from support.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def settings(text: str, env: dict[str, str] | None = None):
    return parse_settings(text, "corelane.yml", env or {})


# ----------------------------------------------------------------------------- settings

def test_plaintext_by_default() -> None:
    security = settings("{}").kafka.security
    assert security.protocol == "PLAINTEXT"
    assert client_options(security) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None


@pytest.mark.parametrize("text, key, expected", [
    ("kafka: {security: {protocol: TLS}}", "kafka.security.protocol", "'SASL_SSL'"),
    ("kafka: {security: {sasl_mechanism: PLAIN}}", "kafka.security.sasl_mechanism",
     "'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ("kafka: {security: {ca_file: /nowhere/ca.pem}}", "kafka.security.ca_file",
     "'/nowhere/ca.pem' does not exist"),
    ("kafka: {security: {ca_file: /}}", "kafka.security.ca_file", "is not a file"),
    ("kafka: {broker: {cert_file: /nowhere.pem}}", "kafka.broker.cert_file",
     "does not exist"),
    ("kafka: {security: {protocol: SASL_SSL, password: x}}", "kafka.security.username",
     "logs in with a username"),
    ("kafka: {security: {protocol: SASL_PLAINTEXT, username: u}}", "kafka.security.password",
     "CORELANE_KAFKA_PASSWORD"),
    ("kafka: {replication_factor: 2, min_insync_replicas: 3}", "kafka",
     "cannot exceed replication_factor"),
    ("kafka: {broker: {nodes: 0}}", "kafka.broker.nodes", "greater than or equal to 1"),
])
def test_bad_security_names_file_key_and_expectation(text: str, key: str,
                                                     expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(text)
    message = str(info.value)
    assert "corelane.yml" in message and f"key '{key}'" in message and expected in message


def test_a_client_certificate_needs_its_key(certs: Certificates) -> None:
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        settings(f"kafka: {{security: {{cert_file: '{certs.cert_file}'}}}}")


def test_the_password_comes_from_the_environment_and_never_shows() -> None:
    cfg = settings("kafka: {security: {protocol: SASL_PLAINTEXT, username: fleet}}",
                   {"CORELANE_KAFKA_PASSWORD": "s3cret-pw"})
    security = cfg.kafka.security
    assert security.password is not None
    assert security.password.get_secret_value() == "s3cret-pw"
    for shown in (repr(security), str(cfg), str(cfg.model_dump(mode="json")),
                  str(cfg.configuration().settings), describe(security)):
        assert "s3cret-pw" not in shown
    assert cfg.configuration().settings["kafka"]["security"]["password"] == "**********"
    options = client_options(security)
    assert options == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "fleet", "sasl_plain_password": "s3cret-pw"}


def test_replication_follows_the_nodes_unless_set() -> None:
    kafka = KafkaSettings()
    assert [kafka.replication(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]
    kafka = KafkaSettings(replication_factor=2)
    assert kafka.replication(5) == (2, 1)
    assert KafkaSettings(min_insync_replicas=3).replication(1) == (1, 1)
    assert KafkaSettings(replication_factor=5, min_insync_replicas=3).replication(5) == (5, 3)


# ------------------------------------------------------------------------ client options

def test_sasl_ssl_gives_a_verifying_context_and_the_scram_login(certs: Certificates) -> None:
    cfg = settings(f"kafka: {{security: {{protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-256, "
                   f"username: u, password: p, ca_file: '{certs.ca_file}'}}}}")
    options = client_options(cfg.kafka.security)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "corelane test CA"),),)]
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}

    credentials = faust_credentials(cfg.kafka.security)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("u", "p")
    assert credentials.ssl_context is not None


def test_ssl_with_a_client_certificate(certs: Certificates) -> None:
    security = SecuritySettings(protocol="SSL", ca_file=str(certs.ca_file),
                                cert_file=str(certs.cert_file), key_file=str(certs.key_file),
                                check_hostname=False)
    options = client_options(security)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].check_hostname is False
    credentials = faust_credentials(security)
    assert isinstance(credentials, SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL


def test_a_file_that_is_not_pem_is_named(tmp_path: Path, certs: Certificates) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SecurityConfigError, match="ca_file .*junk.pem.* cannot be read"):
        client_options(SecuritySettings(protocol="SSL", ca_file=str(junk)))
    with pytest.raises(SecurityConfigError, match="cert_file .*key_file"):
        client_options(SecuritySettings(protocol="SSL", ca_file=str(certs.ca_file),
                                        cert_file=str(certs.ca_file),
                                        key_file=str(certs.key_file)))


def test_settings_made_in_code_are_checked_before_connecting() -> None:
    # Settings built without the loader (tests, tools) still cannot connect half-configured.
    with pytest.raises(SecurityConfigError, match="kafka.security.password"):
        client_options(SecuritySettings(protocol="SASL_SSL", username="u"))
    with pytest.raises(SecurityConfigError, match="kafka.security.username"):
        faust_credentials(SecuritySettings(protocol="SASL_PLAINTEXT", password="p"))
