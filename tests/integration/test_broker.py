"""The embedded broker's lifecycle against a real JVM: its own home and ports, not the session's."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from tasks import broker
from tasks.broker import (
    BrokerError,
    broker_status,
    free_port,
    free_ports,
    start_broker,
    stop_broker,
)
from tasks.settings import Settings


def fresh_settings(home: Path, **overrides: object) -> Settings:
    port, controller_port = free_ports(2)
    return Settings(home=home, kafka_port=port, kafka_controller_port=controller_port, **overrides)  # type: ignore[arg-type]


def java_processes_under(home: Path) -> list[str]:
    """Command lines of any JVM whose files live under `home` (there should be none left)."""
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if "java" in line and str(home) in line]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = fresh_settings(tmp_path_factory.mktemp("own-broker"))
    start_broker(settings)
    try:
        yield settings
    finally:
        stop_broker(settings)


def test_started_broker_runs_answers_and_logs_to_its_file(own_broker: Settings) -> None:
    status = broker_status(own_broker)
    assert status.running and status.answering and status.embedded
    assert status.pid is not None
    assert status.bootstrap == f"127.0.0.1:{own_broker.kafka_port}"
    assert status.data_dir == own_broker.kafka_dir / "data"
    assert (status.data_dir / "meta.properties").exists()
    assert "Kafka Server started" in status.log_file.read_text()
    assert (own_broker.kafka_dir / "cluster.id").read_text().strip()


def test_starting_a_running_broker_starts_nothing(own_broker: Settings) -> None:
    before = broker_status(own_broker)
    again = start_broker(own_broker)
    assert again.pid == before.pid
    assert len(java_processes_under(own_broker.home)) == 1


def test_one_message_goes_through(own_broker: Settings) -> None:
    bootstrap = own_broker.bootstrap_servers
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        admin.create_topics({"broker-check": {"num_partitions": 1, "replication_factor": 1}})
        admin.wait_for_topics(["broker-check"])
    with KafkaProducer(bootstrap_servers=bootstrap) as producer:
        producer.send("broker-check", key=b"k", value=b"hello").get(timeout=30)
    partition = TopicPartition("broker-check", 0)
    with KafkaConsumer(bootstrap_servers=bootstrap, group_id=None) as consumer:
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        deadline = time.monotonic() + 30
        records: list[ConsumerRecord] = []
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=500).get(partition, [])
    assert [(r.key, r.value) for r in records] == [(b"k", b"hello")]


def test_stop_ends_the_process_and_a_restart_keeps_the_data(own_broker: Settings) -> None:
    with KafkaAdminClient(bootstrap_servers=own_broker.bootstrap_servers) as admin:
        admin.create_topics(["survives-restart"])
    pid_file = own_broker.kafka_dir / "broker.pid"
    assert stop_broker(own_broker) is True
    assert not pid_file.exists()
    assert java_processes_under(own_broker.home) == []
    assert broker_status(own_broker).running is False
    assert stop_broker(own_broker) is False

    status = start_broker(own_broker)  # leaves the module's broker running for later tests
    assert status.running and status.answering
    with KafkaAdminClient(bootstrap_servers=own_broker.bootstrap_servers) as admin:
        assert "survives-restart" in admin.list_topics()


def test_external_cluster_is_reported_but_never_managed(
    own_broker: Settings, tmp_path: Path
) -> None:
    external = Settings(home=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers)
    status = start_broker(external)
    assert status.answering and not status.embedded and status.pid is None
    assert stop_broker(external) is False
    assert broker_status(own_broker).running
    assert not (tmp_path / "kafka").exists()


def test_unreachable_external_cluster_does_not_answer(tmp_path: Path) -> None:
    external = Settings(home=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    status = broker_status(external)
    assert not status.running and not status.answering


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    settings = fresh_settings(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    settings.kafka_dir.mkdir(parents=True)
    pid_file = settings.kafka_dir / "broker.pid"
    pid_file.write_text(f"{gone.pid}\n")
    assert broker_status(settings).running is False
    assert not pid_file.exists()


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    settings = fresh_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.kafka_port))
        squatter.listen()
        with pytest.raises(BrokerError) as error:
            start_broker(settings)
    expected = (
        f"port {settings.kafka_port} is in use by another process; set STREAMTRAIN_KAFKA_PORT"
    )
    assert str(error.value).startswith(expected)
    assert not (settings.kafka_dir / "broker.pid").exists()


def test_missing_jars_say_how_to_fetch_them(tmp_path: Path) -> None:
    empty = tmp_path / "no-jars"
    empty.mkdir()
    with pytest.raises(BrokerError, match="run `make setup` to fetch the Kafka jars"):
        start_broker(fresh_settings(tmp_path, kafka_jars_dir=empty))


def test_missing_java_says_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.shutil, "which", lambda name: None)
    with pytest.raises(BrokerError, match=r"install Java 17\+"):
        start_broker(fresh_settings(tmp_path))


def test_broker_not_up_in_time_is_stopped_and_its_log_quoted(tmp_path: Path) -> None:
    settings = fresh_settings(tmp_path, kafka_start_timeout_s=0.5)
    with pytest.raises(BrokerError) as error:
        start_broker(settings)
    message = str(error.value)
    assert "did not answer within 0.5s" in message
    assert str(settings.kafka_dir / "logs" / "server.log") in message
    assert java_processes_under(tmp_path) == []
    assert not (settings.kafka_dir / "broker.pid").exists()


def test_cli_refuses_a_second_port_for_a_running_broker_and_status_names_the_real_one(
    tmp_path: Path,
) -> None:
    import os

    from tests.integration.helpers import ROOT

    port, other, controller = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMTRAIN_", "KAFKA_"))}
    env |= {"STREAMTRAIN_HOME": str(tmp_path), "STREAMTRAIN_KAFKA_CONTROLLER_PORT": str(controller)}

    def kafka(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(ROOT / ".venv" / "bin" / "streamtrain"), "kafka", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)

    started = kafka("start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"running at 127.0.0.1:{port}" in started.stdout

        second = kafka("start", "--port", str(other))
        assert second.returncode == 1
        assert len(second.stderr.strip().splitlines()) == 1
        assert f"runs on port {port}" in second.stderr and "Traceback" not in second.stderr
        with socket.socket() as probe:  # nothing was started on the other port
            assert probe.connect_ex(("127.0.0.1", other)) != 0

        status = kafka("status")  # the configured port is the default 9092, not the broker's
        assert status.returncode == 0 and f"running at 127.0.0.1:{port}" in status.stdout
        assert f'"bootstrap": "127.0.0.1:{port}"' in kafka("status", "--json").stdout

        wrong = kafka("stop", "--port", str(other))
        assert wrong.returncode == 1 and f"runs on port {port}" in wrong.stderr
        assert "running" in kafka("status").stdout
    finally:
        stopped = kafka("stop", "--port", str(port))
    assert stopped.returncode == 0 and "Kafka broker stopped." in stopped.stdout
    assert "stopped" in kafka("status").stdout
