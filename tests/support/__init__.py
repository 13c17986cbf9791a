"""Test support: real infrastructure for the integration tests (a Kafka broker, a Docker engine)."""
