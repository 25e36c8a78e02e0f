"""The files and command line the embedded broker runs with, rendered without a JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.broker_config import (
    cluster_nodes,
    java_command,
    new_cluster_id,
    render_log4j2_properties,
    render_server_properties,
    single_node,
)
from tasks.settings import Settings


def parse(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093)


def test_single_node_is_a_combined_broker_and_controller_on_loopback(settings: Settings) -> None:
    props = parse(render_server_properties(single_node(settings)))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["log.retention.ms"] == "-1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:19092")
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str((settings.kafka_dir / "data").resolve())


def test_single_node_internal_topics_need_only_one_replica(settings: Settings) -> None:
    props = parse(render_server_properties(single_node(settings)))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key


def test_consumers_do_not_wait_for_a_rebalance_and_timestamps_are_the_producers(
    settings: Settings,
) -> None:
    props = parse(render_server_properties(single_node(settings)))
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.message.timestamp.type"] == "CreateTime"
    assert props["auto.create.topics.enable"] == "true"


def test_controller_port_defaults_to_the_next_port(tmp_path: Path) -> None:
    node = single_node(Settings(home=tmp_path, kafka_port=29092))
    assert node.controller_port == 29093
    assert parse(render_server_properties(node))["controller.quorum.voters"] == "1@127.0.0.1:29093"


def test_cluster_nodes_share_the_voters_and_keep_their_own_ports_and_dirs(
    settings: Settings,
) -> None:
    nodes = cluster_nodes(settings, 3, [(101, 201), (102, 202), (103, 203)])
    voters = "1@127.0.0.1:201,2@127.0.0.1:202,3@127.0.0.1:203"
    for node_id, node in enumerate(nodes, start=1):
        props = parse(render_server_properties(node))
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.voters"] == voters
        assert (
            props["listeners"]
            == f"PLAINTEXT://127.0.0.1:10{node_id},CONTROLLER://127.0.0.1:20{node_id}"
        )
        assert props["log.dirs"] == str(
            (settings.kafka_dir / "cluster" / f"node-{node_id}" / "data").resolve()
        )
    assert len({node.home for node in nodes}) == 3


def test_cluster_internal_topics_are_replicated_three_times(settings: Settings) -> None:
    props = parse(render_server_properties(cluster_nodes(settings, 3)[0]))
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"


def test_cluster_default_ports_follow_kafka_port(settings: Settings) -> None:
    nodes = cluster_nodes(settings, 3)
    assert [(n.port, n.controller_port) for n in nodes] == [
        (19092, 19095),
        (19093, 19096),
        (19094, 19097),
    ]


def test_cluster_rejects_a_port_list_of_the_wrong_length(settings: Settings) -> None:
    with pytest.raises(ValueError, match="3 nodes need 3"):
        cluster_nodes(settings, 3, [(1, 2)])


def test_broker_logs_only_to_its_file() -> None:
    text = render_log4j2_properties()
    assert "${sys:kafka.logs.dir}/server.log" in text
    assert "rootLogger.level = INFO" in text
    assert "Console" not in text


def test_broker_command_uses_the_heap_the_flags_and_our_log_config(settings: Settings) -> None:
    node = single_node(settings)
    command = java_command(node, settings, "kafka.Kafka", "server.properties")
    assert command[0] == "java"
    assert {"-Xmx512M", "-Xms512M", "-XX:+UseG1GC", "-Djava.awt.headless=true"} <= set(command)
    assert f"-Dlog4j2.configurationFile={node.home.resolve() / 'log4j2.properties'}" in command
    assert f"-Dkafka.logs.dir={node.log_dir.resolve()}" in command
    assert command[-2:] == ["kafka.Kafka", "server.properties"]
    assert command[command.index("-cp") + 1] == f"{settings.kafka_jars_dir.resolve()}/*"


def test_tools_get_a_small_heap(settings: Settings) -> None:
    command = java_command(single_node(settings), settings, "kafka.tools.StorageTool", "format")
    assert "-Xmx256M" in command
    assert "-XX:+UseG1GC" not in command


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_a_cluster_is_ready_only_when_each_node_answers_on_its_own(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other nodes list a KRaft broker a moment before its own listener opens (CI saw clients
    refused then); readiness must ask every node itself, not the cluster through any one."""
    import tasks.broker as broker

    nodes = cluster_nodes(settings, 3, [(19001, 19101), (19002, 19102), (19003, 19103)])
    listening = {"127.0.0.1:19002"}
    asked: list[str] = []

    def answers(bootstrap: str, brokers: int = 1) -> bool:
        asked.append(bootstrap)
        # The cluster's metadata names all three brokers through any node that listens.
        return any(address in listening for address in bootstrap.split(",")) and brokers <= 3

    monkeypatch.setattr(broker, "_answers", answers)
    assert not broker._every_node_answers(nodes, brokers=3)
    listening |= {"127.0.0.1:19001", "127.0.0.1:19003"}
    asked.clear()
    assert broker._every_node_answers(nodes, brokers=3)
    assert sorted(asked) == sorted(node.bootstrap for node in nodes)
