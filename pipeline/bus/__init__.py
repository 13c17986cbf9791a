"""The Kafka transport: topics, the publisher, and reading topics back.

Samples are produced with aiokafka directly (one message per chunk of a sweep): faust's
per-event cost is the limit at these rates (STACK.md), while its agents consume.
"""
from pipeline.bus.publisher import (BrokerUnreachable, BusStats, MessageTooLarge, Publisher,
                                    Stamper, send_one)
from pipeline.bus.reader import (dead_letter, dead_letter_payload, follow_topic, read_record,
                                 read_tail, replay_topic)
from pipeline.bus.topics import (KafkaTopicError, cluster_replication, ensure_topics,
                                 partitions_for, topic_partitions, topic_types)

__all__ = [
    "BrokerUnreachable", "BusStats", "KafkaTopicError", "MessageTooLarge", "Publisher",
    "Stamper", "cluster_replication", "dead_letter", "dead_letter_payload", "ensure_topics",
    "follow_topic", "partitions_for", "read_record",
    "read_tail", "replay_topic", "send_one", "topic_partitions", "topic_types",
]
