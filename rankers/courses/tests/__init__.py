"""Unit tests of the courses FPR (pure: no Kafka, no Redis)."""
