"""Unit tests of the jobs FPR (no Kafka or Redis)."""
