"""AEP -> MoEngage connector: the one domain package shared by the ingest and delivery functions."""
