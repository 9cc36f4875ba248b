"""Processes: Kafka, Redis and Feast wiring around the pure logic in rankers/ and features/."""
