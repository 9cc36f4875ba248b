"""feedrank: a streaming feed-ranking system (Kafka, Faust, Feast on Redis, first- and second-pass rankers)."""

__version__ = "0.1.0"
