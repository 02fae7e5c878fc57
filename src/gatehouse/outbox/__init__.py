"""The outbox's way out: the relay, the Kafka publisher and consumer, the in-process bus."""
