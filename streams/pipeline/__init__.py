"""The streaming pipeline: topics, Kafka connection settings, and the Faust worker."""
