"""The feature service takes the same Kafka security settings as every other client."""

from __future__ import annotations

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import AuthProtocol, SASLMechanism

from features.broker_credentials import faust_credentials
from feedrank.settings import Settings


def test_plaintext_has_no_credentials():
    assert faust_credentials(Settings()) is None


def test_sasl_ssl_carries_user_password_mechanism_and_tls():
    creds = faust_credentials(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="svc",
            kafka_sasl_password="s3cret",
        )
    )
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password) == ("svc", "s3cret")
    assert creds.mechanism == SASLMechanism.SCRAM_SHA_512
    assert creds.protocol == AuthProtocol.SASL_SSL and creds.ssl_context is not None
    assert "s3cret" not in repr(creds)


def test_sasl_plaintext_and_ssl():
    plain = faust_credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u"))
    assert isinstance(plain, SASLCredentials) and plain.protocol == AuthProtocol.SASL_PLAINTEXT
    assert plain.mechanism == SASLMechanism.PLAIN
    tls = faust_credentials(Settings(kafka_security_protocol="ssl"))
    assert isinstance(tls, SSLCredentials) and tls.protocol == AuthProtocol.SSL


def test_an_unknown_protocol_is_named():
    with pytest.raises(ValueError, match="SASL_TLS"):
        faust_credentials(Settings(kafka_security_protocol="SASL_TLS"))
