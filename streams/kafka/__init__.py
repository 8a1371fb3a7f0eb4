"""Kafka: connection settings, topic names, the aiokafka clients, and Faust's batch path
behind one adapter (`faust_adapter.py`, the only module that touches Faust's private
names)."""

__all__: list[str] = []
