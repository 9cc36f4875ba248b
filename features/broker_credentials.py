"""The feature service's Kafka credentials: the same SASL/TLS settings the confluent-kafka clients take
(``Settings.kafka_client_config``), in the form Faust's aiokafka transport takes them."""

from __future__ import annotations

import ssl

from faust.auth import Credentials, SASLCredentials, SSLCredentials

from feedrank.settings import Settings


def faust_credentials(settings: Settings) -> Credentials | None:
    """None for PLAINTEXT; SSL, SASL_PLAINTEXT or SASL_SSL otherwise (the CA file, if set, verifies the
    broker); any other protocol is a configuration error, named."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in {"SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
        raise ValueError(
            f"FEEDRANK_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        )
    context = None
    if protocol.endswith("SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol == "SSL":
        return SSLCredentials(context)
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
    )
