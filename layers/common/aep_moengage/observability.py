"""One Logger, Metrics and Tracer for the whole package (never instantiate others)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "aep-moengage"
METRICS_NAMESPACE = "AepMoEngage"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
