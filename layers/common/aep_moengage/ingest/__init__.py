"""Ingest: authenticate AEP's call, normalize its profiles, make them durable in SQS."""
