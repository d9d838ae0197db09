"""Delivery side: SQS queue messages -> MoEngage Data API (mapping, packing, sending, outcomes)."""
