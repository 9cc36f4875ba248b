"""Streaming features: member-events to Feast's online store (Redis)."""
