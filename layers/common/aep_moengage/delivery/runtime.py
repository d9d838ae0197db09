"""Cached factories for the delivery function: built on first use (cold start), never at import time."""

from __future__ import annotations

from functools import lru_cache

from aep_moengage.delivery.client import MoEngageClient, new_session
from aep_moengage.delivery.credentials import SecretCredentials
from aep_moengage.delivery.mapping import MappingRules, load_mapping_table
from aep_moengage.delivery.ratelimit import TokenBucket
from aep_moengage.delivery.service import DeliveryDependencies
from aep_moengage.delivery.settings import DeliverySettings, SettingsError
from aep_moengage.delivery.sqs import SqsQueue, sqs_client
from aep_moengage.models.moengage import data_center_base_url


@lru_cache(maxsize=1)
def settings() -> DeliverySettings:
    return DeliverySettings.from_env()


@lru_cache(maxsize=1)
def mapping_rules() -> MappingRules:
    return MappingRules.from_settings(settings(), load_mapping_table())


@lru_cache(maxsize=1)
def moengage_client() -> MoEngageClient:
    config = settings()
    credentials = SecretCredentials(config.moengage_secret_name, max_age_seconds=config.secret_cache_seconds)
    base_url = config.moengage_base_url
    if base_url is None:
        data_center = config.moengage_data_center or credentials().data_center
        if not data_center:
            raise SettingsError("no MoEngage data center: set data_center in the secret or MOENGAGE_DATA_CENTER")
        try:
            base_url = data_center_base_url(data_center)
        except ValueError as error:
            raise SettingsError(f"the MoEngage secret's data_center: {error}") from None
    return MoEngageClient(
        session=new_session(), base_url=base_url, credentials=credentials, timeout=config.moengage_timeout_seconds
    )


@lru_cache(maxsize=1)
def rate_limiter() -> TokenBucket:
    """Module scope on purpose: the bucket lives as long as the execution environment."""
    config = settings()
    return TokenBucket.for_share(config.rate_limit_users_per_minute, config.max_concurrency)


@lru_cache(maxsize=1)
def queue() -> SqsQueue:
    config = settings()
    return SqsQueue(sqs_client(), queue_url=config.queue_url, dlq_url=config.dlq_url)


def dependencies() -> DeliveryDependencies:
    return DeliveryDependencies(
        settings=settings(), rules=mapping_rules(), client=moengage_client(), limiter=rate_limiter(), queue=queue()
    )


def clear_caches() -> None:
    """Forget settings, clients and the rate limiter (tests; a new configuration)."""
    for factory in (settings, mapping_rules, moengage_client, rate_limiter, queue, sqs_client):
        factory.cache_clear()
