"""Shared fixtures. The broker and the Docker engine are real and started once per session."""
pytest_plugins = ["support.kafka_broker", "support.kafka_cluster", "support.docker_engine"]
