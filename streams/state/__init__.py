"""The engine's state on Kafka: its codec and its store over a Faust table."""

__all__: list[str] = []
