"""How every Kafka client of corelane connects: one place turns ``kafka.security`` into
aiokafka's keyword arguments and one into faust's broker credentials.

The publisher, the readers, the recorder's consumer, the admin client that creates topics,
the broker probe and the faust app all take their connection options from here, so a
fleet that runs on TLS and SASL/SCRAM configures it once and no client is left on
plaintext by accident.
"""
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from pipeline.settings import SecuritySettings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


class SecurityConfigError(ValueError):
    """``kafka.security`` cannot make a connection; the message names the key."""


def ssl_context(security: SecuritySettings) -> ssl.SSLContext:
    """The TLS context of a client: trusts ``ca_file`` (the system's CAs without it) and
    presents ``cert_file``/``key_file`` when both are set (mutual TLS)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SecurityConfigError(f"kafka.security.ca_file {security.ca_file!r} cannot be read "
                                  f"as PEM certificates: {exc}") from None
    context.check_hostname = security.check_hostname
    if security.cert_file and security.key_file:
        try:
            context.load_cert_chain(security.cert_file, security.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SecurityConfigError(
                f"kafka.security.cert_file {security.cert_file!r} and key_file "
                f"{security.key_file!r} are not a PEM certificate and its key: {exc}") from None
    return context


def _check(security: SecuritySettings) -> None:
    for key, why in security.problems():
        raise SecurityConfigError(f"kafka.security.{key}: {why}")


def client_options(security: SecuritySettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin client, or
    ``aiokafka.conn.create_conn``) that connect it as ``security`` says."""
    _check(security)
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_tls:
        options["ssl_context"] = ssl_context(security)
    if security.uses_sasl:
        assert security.password is not None  # _check made sure
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.username,
                       sasl_plain_password=security.password.get_secret_value())
    return options


def faust_credentials(security: SecuritySettings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``security`` (None on plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    _check(security)
    if security.uses_sasl:
        assert security.password is not None
        credentials = SASLCredentials(
            username=security.username, password=security.password.get_secret_value(),
            mechanism=security.sasl_mechanism,
            ssl_context=ssl_context(security) if security.uses_tls else None)
        return credentials
    if security.uses_tls:
        return SSLCredentials(ssl_context(security))
    return None


def describe(security: SecuritySettings) -> str:
    """How a client connects, for a message: never the password."""
    if security.uses_sasl:
        return f"{security.protocol} as {security.username!r} ({security.sasl_mechanism})"
    return security.protocol
