"""The ingest service: MQTT batches in, InfluxDB points out, receipts back."""
