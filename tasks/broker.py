"""The embedded Kafka broker: a KRaft broker+controller run from the Maven jars on loopback.

`streamtrain kafka up/down/status` and the integration tests' session broker use the single
node; the cluster helpers start several nodes the same way for replication tests. When
`KAFKA_BOOTSTRAP_SERVERS` names another cluster, nothing here touches processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.broker_config import (
    LOG4J2_FILE,
    PID_FILE,
    PROPERTIES_FILE,
    NodeConfig,
    cluster_nodes,
    java_command,
    new_cluster_id,
    render_log4j2_properties,
    render_server_properties,
    single_node,
)
from tasks.settings import Settings

PROBE_TIMEOUT_S = 5.0


class BrokerError(Exception):
    """A broker could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    """What `streamtrain kafka status` reports about one broker."""

    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path
    data_dir: Path
    embedded: bool
    answering: bool


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports nothing listens on right now (for tests; another process may take one)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:  # all held open together, so the OS hands out distinct ports
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests; another process may take it later)."""
    return free_ports(1, host)[0]


# --- lifecycle ------------------------------------------------------------------------------

# Brokers this process launched, so their exit is reaped (no zombie that still looks alive).
_LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}


def start_broker(settings: Settings) -> BrokerStatus:
    """Start the embedded broker unless it already runs, and return once it answers."""
    if not settings.embedded_kafka:
        return broker_status(settings)
    node = single_node(settings)
    if _running_pid(node.home) is None:
        _start_nodes(settings, [node], settings.kafka_dir / "cluster.id", brokers=1)
    else:
        _check_running_port(node.home, settings.kafka_port, "is asked to start on")
    return _node_status(node)


def stop_broker(settings: Settings, timeout_s: float = 30, port: int | None = None) -> bool:
    """Stop the embedded broker cleanly (SIGKILL after `timeout_s`); True if one was running.

    With `port`, only a broker on that port: one of the same home on another port is an error.
    """
    if not settings.embedded_kafka:
        return False
    if port is not None and _running_pid(settings.kafka_dir) is not None:
        _check_running_port(settings.kafka_dir, port, "was asked to stop on")
    return _stop_homes([settings.kafka_dir], timeout_s)


def running_bootstrap(home: Path) -> str | None:
    """host:port of the broker running from `home`, from the config it was started with."""
    if _running_pid(home) is None:
        return None
    properties = home / PROPERTIES_FILE
    for line in properties.read_text().splitlines() if properties.exists() else ():
        key, _, value = line.partition("=")
        if key.strip() == "listeners":
            for listener in value.split(","):
                name, _, address = listener.strip().partition("://")
                if name == "PLAINTEXT":
                    return address
    return None


def _check_running_port(home: Path, port: int, asked: str) -> None:
    """One broker per home: refuse a port other than the one the running broker listens on."""
    running = running_bootstrap(home)
    if running is None or running.rpartition(":")[2] == str(port):
        return
    found = running.rpartition(":")[2]
    raise BrokerError(
        f"the broker of {home} runs on port {found} ({running}), not on port {port} it {asked}; "
        f"use --port {found}, or `streamtrain kafka stop --port {found}` first"
    )


def broker_status(settings: Settings) -> BrokerStatus:
    """The embedded broker's process and health, or only whether the external cluster answers."""
    node = single_node(settings)
    if settings.embedded_kafka:
        return _node_status(node)
    # Only an external cluster gets the security settings: the embedded one is plaintext.
    answering = _answers(settings.bootstrap_servers, client_config=settings.kafka_client_config())
    bootstrap = settings.bootstrap_servers
    return BrokerStatus(answering, None, bootstrap, node.log_file, node.data_dir, False, answering)


def start_cluster(
    settings: Settings, nodes: int = 3, ports: Sequence[tuple[int, int]] | None = None
) -> list[BrokerStatus]:
    """Start an n-node KRaft cluster on loopback (each node broker+controller), under kafka_dir."""
    if not settings.embedded_kafka:
        raise BrokerError("a local cluster needs the embedded setup; unset KAFKA_BOOTSTRAP_SERVERS")
    plan = cluster_nodes(settings, nodes, ports)
    pending = [node for node in plan if _running_pid(node.home) is None]
    if pending:
        id_file = settings.kafka_dir / "cluster" / "cluster.id"
        _start_nodes(settings, pending, id_file, brokers=nodes, bootstrap_nodes=plan)
    return [_node_status(node) for node in plan]


def stop_cluster_node(settings: Settings, node_id: int, timeout_s: float = 30) -> bool:
    """Stop one node of the local cluster cleanly (the others keep the quorum); True if it ran.

    `start_cluster` with the same ports starts it again (only the nodes that are down).
    """
    home = settings.kafka_dir / "cluster" / f"node-{node_id}"
    return _stop_homes([home], timeout_s) if settings.embedded_kafka else False


def stop_cluster(settings: Settings, timeout_s: float = 30) -> bool:
    """Stop every node of the local cluster; True if any was running."""
    homes = sorted((settings.kafka_dir / "cluster").glob("node-*"))
    return _stop_homes(homes, timeout_s) if settings.embedded_kafka else False


def _start_nodes(
    settings: Settings,
    nodes: Sequence[NodeConfig],
    id_file: Path,
    brokers: int,
    bootstrap_nodes: Sequence[NodeConfig] | None = None,
) -> None:
    """Check, format (first start only), launch and wait for nodes; stop them all on failure."""
    _check_java()
    _check_jars(settings.kafka_jars_dir)
    for node in nodes:
        _check_port_free(node.host, node.port, "STREAMTRAIN_KAFKA_PORT")
        _check_port_free(node.host, node.controller_port, "STREAMTRAIN_KAFKA_CONTROLLER_PORT")
    cluster_id = _read_cluster_id(id_file)
    try:
        for node in nodes:
            _prepare_node(node, settings, cluster_id)
        for node in nodes:
            _launch(node, settings)
        _wait_answering(settings, nodes, bootstrap_nodes or nodes, brokers)
    except BaseException:
        _stop_homes([node.home for node in nodes], timeout_s=10)
        raise


def _check_java() -> None:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found on PATH; install Java 17+")
    banner = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    major = int(match.group(1)) if match else 0
    if match and major == 1 and match.group(2):  # "1.8.0_..." is Java 8
        major = int(match.group(2))
    if major < 17:
        raise BrokerError(f"{java} is not Java 17 or newer; install Java 17+")


def _check_jars(jars_dir: Path) -> None:
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"no Kafka jars in {jars_dir}; run `make setup` to fetch the Kafka jars")


def _check_port_free(host: str, port: int, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port left in TIME_WAIT by a broker just stopped is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            msg = f"port {port} is in use by another process; set {setting} or stop it"
            raise BrokerError(msg) from None


def _read_cluster_id(id_file: Path) -> str:
    """The cluster id, created on first start and kept so that every node formats alike."""
    if id_file.exists():
        return id_file.read_text().strip()
    id_file.parent.mkdir(parents=True, exist_ok=True)
    cluster_id = new_cluster_id()
    id_file.write_text(cluster_id + "\n")
    return cluster_id


def _prepare_node(node: NodeConfig, settings: Settings, cluster_id: str) -> None:
    """Write the node's config files and format its storage if it was never formatted."""
    node.log_dir.mkdir(parents=True, exist_ok=True)
    node.properties_file.write_text(render_server_properties(node))
    (node.home / LOG4J2_FILE).write_text(render_log4j2_properties())
    if (node.data_dir / "meta.properties").exists():
        return
    config = str(node.properties_file.resolve())
    args = ("format", "-t", cluster_id, "-c", config, "--ignore-formatted")
    command = java_command(node, settings, "kafka.tools.StorageTool", *args)
    result = subprocess.run(command, capture_output=True, text=True, cwd=node.home)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise BrokerError(f"formatting {node.data_dir} failed: {lines[-1]}; see {node.log_file}")


def _launch(node: NodeConfig, settings: Settings) -> None:
    """Run the broker detached in its own session, so signalling the group reaches it all."""
    command = java_command(node, settings, "kafka.Kafka", str(node.properties_file.resolve()))
    with (node.log_dir / "kafka.out").open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=node.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _LAUNCHED[process.pid] = process
    node.pid_file.write_text(f"{process.pid}\n")


def _wait_answering(
    settings: Settings,
    nodes: Sequence[NodeConfig],
    bootstrap_nodes: Sequence[NodeConfig],
    brokers: int,
) -> None:
    """Poll until the cluster reports `brokers` brokers; fail fast if a node exits."""
    timeout_s = settings.kafka_start_timeout_s
    deadline = time.monotonic() + timeout_s
    bootstrap = ",".join(node.bootstrap for node in bootstrap_nodes)
    while True:
        for node in nodes:
            if _running_pid(node.home) is None:
                raise BrokerError(
                    f"Kafka node {node.node_id} exited during start-up; see {node.log_file}\n"
                    + _tail(node)
                )
        if _every_node_answers(bootstrap_nodes, brokers):
            return
        if time.monotonic() > deadline:
            node = nodes[0]
            raise BrokerError(
                f"Kafka broker on {bootstrap} did not answer within {timeout_s:g}s and was "
                f"stopped; see {node.log_file} (or raise STREAMTRAIN_KAFKA_START_TIMEOUT_S)\n"
                + _tail(node)
            )
        time.sleep(0.25)


def _every_node_answers(nodes: Sequence[NodeConfig], brokers: int) -> bool:
    """Whether each node, asked on its own, serves metadata naming `brokers` brokers.

    A KRaft broker is listed in the others' metadata once it is unfenced, a moment before its
    own client listener opens; a client that bootstraps then is handed a broker that refuses
    it (and kafka-python's admin fails with UnknownBrokerIdError), so one node's view is not
    enough.
    """
    return all(_answers(node.bootstrap, brokers) for node in nodes)


def _accepts(address: str) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def _answers(
    bootstrap: str, brokers: int = 1, client_config: dict[str, object] | None = None
) -> bool:
    """Whether the cluster at `bootstrap` answers a metadata request naming enough brokers.

    A plain connect goes first: a kafka-python client that fails to bootstrap leaves its IO
    thread behind, so one is only built once something listens.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    addresses = bootstrap.split(",")
    if not any(_accepts(address) for address in addresses):
        return False
    config = (client_config or {}) | {
        "bootstrap_servers": addresses,
        "bootstrap_timeout_ms": int(PROBE_TIMEOUT_S * 1000),
        "request_timeout_ms": int(PROBE_TIMEOUT_S * 1000),
    }
    try:
        with KafkaAdminClient(**config) as admin:
            return len(admin.describe_cluster()["brokers"]) >= brokers
    except KafkaError:
        return False


def _node_status(node: NodeConfig) -> BrokerStatus:
    """The node's process and health, at the address the running broker really listens on."""
    pid = _running_pid(node.home)
    bootstrap = (running_bootstrap(node.home) if pid is not None else None) or node.bootstrap
    answering = pid is not None and _answers(bootstrap)
    return BrokerStatus(
        pid is not None, pid, bootstrap, node.log_file, node.data_dir, True, answering
    )


def _running_pid(home: Path) -> int | None:
    """The pid of the broker whose files live in `home`, removing a stale pid file."""
    pid_file = home / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if _is_broker(pid, home / PROPERTIES_FILE):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _is_broker(pid: int, properties_file: Path) -> bool:
    """Alive and still our broker (a recycled pid must not get our signals)."""
    if pid in _LAUNCHED:
        # Our own child: poll() reaps it once it exits. Its /proc cmdline can still read empty
        # for a moment right after launch, so it is not checked.
        if _LAUNCHED[pid].poll() is None:
            return True
        del _LAUNCHED[pid]
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():  # no procfs (macOS): trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(properties_file.resolve()).encode() in args


def _stop_homes(homes: Sequence[Path], timeout_s: float) -> bool:
    """Stop the nodes of one quorum: SIGTERM one at a time, SIGKILL after `timeout_s`.

    One at a time, because a broker's controlled shutdown needs a controller quorum to commit
    it; a node left without a quorum (the last of a cluster) would wait minutes for one, so it
    is killed at once. Killing loses nothing on a local disk; the next start recovers the log.
    """
    running = [(home, pid) for home in homes if (pid := _running_pid(home)) is not None]
    majority = len(homes) // 2 + 1
    for index, (home, pid) in enumerate(running):
        if len(running) - index >= majority:
            _signal_group(pid, signal.SIGTERM)
            _wait_gone(home, timeout_s)
        if _running_pid(home) is not None:
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(home, timeout_s=10)
        (home / PID_FILE).unlink(missing_ok=True)
    return bool(running)


def _wait_gone(home: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _running_pid(home) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _tail(node: NodeConfig, records: int = 8) -> str:
    """The last log records of server.log (three lines each: enough for an exception's message,
    not the config dump), or the JVM's own output if the broker never got to logging."""
    if node.log_file.exists() and (text := node.log_file.read_text(errors="replace").strip()):
        chunks = re.split(r"\n(?=\[\d{4}-)", text)[-records:]
        return "\n".join("\n".join(chunk.splitlines()[:3]) for chunk in chunks)
    out = node.log_dir / "kafka.out"
    lines = out.read_text(errors="replace").strip().splitlines() if out.exists() else []
    return "\n".join(lines[-20:]) or "(no log output)"
