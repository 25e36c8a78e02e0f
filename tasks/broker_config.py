"""What the embedded Kafka broker runs: node layout, server.properties, log4j2 and java command.

Pure functions of the settings, so that the rendered files are unit-tested without a JVM;
`tasks/broker.py` writes them out and runs the processes.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import Settings

# The JVM flags bin/kafka-run-class.sh gives the broker (Kafka 4.1.1).
JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
TOOL_HEAP = "256M"
PID_FILE = "broker.pid"
PROPERTIES_FILE = "server.properties"
LOG4J2_FILE = "log4j2.properties"


@dataclass(frozen=True)
class NodeConfig:
    """One KRaft node (broker and controller in one process) and where its files live."""

    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path
    voters: tuple[str, ...]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def properties_file(self) -> Path:
        return self.home / PROPERTIES_FILE

    @property
    def pid_file(self) -> Path:
        return self.home / PID_FILE


def single_node(settings: Settings) -> NodeConfig:
    """The embedded broker's node, laid out under `settings.kafka_dir`."""
    host, port, cport = settings.kafka_host, settings.kafka_port, settings.controller_port
    return NodeConfig(1, host, port, cport, settings.kafka_dir, (f"1@{host}:{cport}",))


def cluster_nodes(
    settings: Settings, nodes: int = 3, ports: Sequence[tuple[int, int]] | None = None
) -> tuple[NodeConfig, ...]:
    """Nodes 1..n of a local cluster; `ports` are (broker, controller) pairs.

    Without `ports`, brokers take kafka_port, kafka_port+1, ... and controllers the n ports
    after them, so a cluster of one lines up with the single node's default layout.
    """
    base, host = settings.kafka_port, settings.kafka_host
    pairs = list(ports) if ports else [(base + i, base + nodes + i) for i in range(nodes)]
    if len(pairs) != nodes:
        raise ValueError(f"{nodes} nodes need {nodes} (broker, controller) port pairs")
    voters = tuple(f"{i}@{host}:{c}" for i, (_, c) in enumerate(pairs, start=1))
    root = settings.kafka_dir / "cluster"
    return tuple(
        NodeConfig(i, host, p, c, root / f"node-{i}", voters)
        for i, (p, c) in enumerate(pairs, start=1)
    )


def render_server_properties(node: NodeConfig) -> str:
    """server.properties for one combined broker+controller node.

    Static `controller.quorum.voters` rather than `--standalone`: the voter endpoints then
    come from this file on every start, so changing the ports later does not strand the data.
    """
    replicas = min(3, len(node.voters))
    min_isr = min(2, replicas)
    listeners = f"PLAINTEXT://{node.bootstrap},CONTROLLER://{node.host}:{node.controller_port}"
    settings = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": ",".join(node.voters),
        "listeners": listeners,
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": node.data_dir.resolve(),
        "num.partitions": 1,
        # The project creates its topics explicitly; auto-creation stays on as a convenience
        # for ad-hoc tools, as in Kafka's own default.
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A lone consumer should not wait the default 3 s for peers that never come.
        "group.initial.rebalance.delay.ms": 0,
        # Records keep the producer's timestamp (a backfill carries event time), not append time.
        "log.message.timestamp.type": "CreateTime",
        # Retention is judged by record timestamps: replayed history (months old) would be
        # deleted within minutes under the default 7 days. The stream is the training set.
        "log.retention.ms": -1,
        # Event times of replayed or simulated history lie far in the past; accept them.
        "log.message.timestamp.before.max.ms": 9223372036854775807,
    }
    lines = [f"# Node {node.node_id}, rewritten by streamtrain on every start: edits are lost."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def render_log4j2_properties() -> str:
    """Log4j2 config: everything at INFO to logs/server.log, nothing to the console."""
    return """\
# Rewritten by streamtrain on every start: edits are lost.
status = warn
# Kafka stops its own loggers; the default hook only warns when a thread logs during shutdown.
shutdownHook = disable
name = streamtrain-kafka
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
logger.request.name = kafka.request.logger
logger.request.level = WARN
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
"""


def java_command(node: NodeConfig, settings: Settings, main: str, *args: str) -> list[str]:
    """A `java` command line for the broker or a tool, as the bin/ scripts build it."""
    if main == "kafka.Kafka":
        heap = [f"-Xmx{settings.kafka_heap}", f"-Xms{settings.kafka_heap}", *JVM_FLAGS]
        gc_log = node.log_dir / "kafkaServer-gc.log"
        heap.append(f"-Xlog:gc*:file={gc_log}:time,tags:filecount=10,filesize=100M")
    else:
        heap = [f"-Xmx{TOOL_HEAP}"]
    logging = [
        f"-Dlog4j2.configurationFile={node.home.resolve() / LOG4J2_FILE}",
        f"-Dkafka.logs.dir={node.log_dir.resolve()}",
    ]
    classpath = f"{settings.kafka_jars_dir.resolve()}/*"
    return ["java", *heap, *logging, "-cp", classpath, main, *args]


def new_cluster_id() -> str:
    """A cluster id as `StorageTool random-uuid` makes it, without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that read as a command-line flag
            return text
