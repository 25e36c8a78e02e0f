"""A 3-node KRaft cluster on loopback, started with the project's own broker code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tasks.broker import free_ports, start_cluster, stop_cluster
from tasks.settings import Settings


@pytest.mark.slow
def test_three_node_cluster_replicates_and_stops_cleanly(tmp_path: Path) -> None:
    ports = free_ports(6)
    pairs = list(zip(ports[:3], ports[3:], strict=True))
    settings = Settings(home=tmp_path, kafka_start_timeout_s=120)
    try:
        nodes = start_cluster(settings, nodes=3, ports=pairs)
        assert all(node.running for node in nodes)
        assert len({node.pid for node in nodes}) == 3
        assert [node.pid for node in start_cluster(settings, 3, pairs)] == [n.pid for n in nodes]

        bootstrap = [node.bootstrap for node in nodes]
        with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
            assert len(admin.describe_cluster()["brokers"]) == 3
            admin.create_topics({"replicated": {"num_partitions": 1, "replication_factor": 3}})
            admin.wait_for_topics(["replicated"])
            (topic,) = admin.describe_topics(["replicated"])
        assert sorted(topic["partitions"][0]["replica_nodes"]) == [1, 2, 3]
        with KafkaProducer(bootstrap_servers=bootstrap) as producer:  # acks=all by default
            producer.send("replicated", value=b"x").get(timeout=30)
    finally:
        assert stop_cluster(settings) is True
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert not [line for line in listing.splitlines() if "java" in line and str(tmp_path) in line]
