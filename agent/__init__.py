"""The field agent: reads sensors, keeps every reading in an on-disk outbox, publishes batches."""
