"""corelane's topics on the broker: created when missing, listed by partition."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.events import EVENT_TYPES
from pipeline.kafka.clients import client_options
from pipeline.settings import Settings


class KafkaTopicError(RuntimeError):
    """A topic the broker would not create or does not have; the message says which."""


def topic_types(settings: Settings, event_types: Iterable[str]) -> dict[str, str]:
    """Each topic read -> the event type it carries."""
    return {settings.topic(t): t for t in event_types}


T = TypeVar("T")


async def _asked(ask: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """An admin request, asked again on a retriable error within ``timeout_s``: the admin
    client sends to a node of its metadata at random, and a node that died a moment ago
    stays in the cluster's metadata until the controller fences it (seconds later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await ask()
        except KafkaError as exc:
            if not exc.retriable or loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


def _admin(bootstrap: str, timeout_s: float,
           client: Mapping[str, Any] | None) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                               request_timeout_ms=int(timeout_s * 1000), **(client or {}))


async def _replication(admin: AIOKafkaAdminClient, settings: Settings) -> tuple[int, int]:
    cluster = await _asked(admin.describe_cluster, 30.0)
    return settings.kafka.replication(len(cluster["brokers"]))


async def cluster_replication(settings: Settings, timeout_s: float = 30.0) -> tuple[int, int]:
    """(replication factor, min in-sync replicas) for topics on the configured cluster:
    ``kafka.replication_factor`` and ``min_insync_replicas``, or what its node count gives."""
    admin = _admin(settings.kafka.bootstrap, timeout_s, client_options(settings.kafka.security))
    await admin.start()
    try:
        return await _replication(admin, settings)
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every corelane topic that does not exist yet; returns the ones created.

    Each gets ``kafka.partitions`` partitions and the replication of
    :func:`cluster_replication`, its min in-sync replicas as a topic setting, so that with
    the producers' acks=all a write is on that many nodes before it counts as sent.
    """
    admin = _admin(settings.kafka.bootstrap, timeout_s, client_options(settings.kafka.security))
    await admin.start()
    try:
        existing = set(await _asked(admin.list_topics, timeout_s))
        missing = [t for t in (settings.topic(name) for name in EVENT_TYPES) if t not in existing]
        if not missing:
            return []
        factor, least = await _replication(admin, settings)
        response = await admin.create_topics(
            [NewTopic(t, num_partitions=settings.kafka.partitions, replication_factor=factor,
                      topic_configs={"min.insync.replicas": str(least)})
             for t in missing])
        # The listing can lag a creation, and another instance may race us: a topic that
        # already exists is fine, any other refusal is not.
        created = []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                message = rest[0] if rest and rest[0] else f"error code {code}"
                raise KafkaTopicError(f"the broker at {settings.kafka.bootstrap} refused to "
                                      f"create topic {topic}: {message}")
        await _wait_for_leaders(admin, missing, timeout_s)
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str],
                            timeout_s: float) -> None:
    # A new topic's partitions elect leaders a moment after creation; producing before that
    # only earns retries and warnings.
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await _asked(lambda: admin.describe_topics(topics), timeout_s)
        if all(d["error_code"] == 0 and d["partitions"]
               and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaTopicError(f"topics {', '.join(topics)} have no partition leaders after "
                                  f"{timeout_s:.0f}s")
        await asyncio.sleep(0.1)


# How long a topic may be missing from the answering broker's metadata before it counts
# as not there: in a cluster, a broker learns of a topic created through another a moment
# later.
_PROPAGATION_S = 10.0


async def topic_partitions(bootstrap: str, topics: Iterable[str], timeout_s: float = 30.0, *,
                           client: Mapping[str, Any] | None = None) -> list[TopicPartition]:
    """Every partition of the given topics, asked of the brokers themselves; ``client`` is
    how to connect (``client_options``), plaintext without it.

    A consumer's own metadata can be older than a topic created a moment ago, and so can
    a broker's of a cluster other than the one that created it: a topic not yet described
    is asked for again for a few seconds before it counts as missing.
    """
    names = list(topics)
    admin = _admin(bootstrap, timeout_s, client)
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, _PROPAGATION_S)
        while True:
            described = await _asked(lambda: admin.describe_topics(names), timeout_s)
            missing = [d["topic"] for d in described
                       if d["error_code"] != 0 or not d["partitions"]]
            if not missing or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    if missing:
        raise KafkaTopicError(f"topics not found at {bootstrap}: {', '.join(missing)}")
    return [TopicPartition(d["topic"], p["partition"]) for d in described
            for p in sorted(d["partitions"], key=lambda p: p["partition"])]


async def partitions_for(settings: Settings, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the given topics on the configured brokers, connected as
    ``kafka.security`` says: what corelane's own readers ask before they assign them."""
    return await topic_partitions(settings.kafka.bootstrap, topics,
                                  client=client_options(settings.kafka.security))
