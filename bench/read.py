"""Section 3, reading windows: the project's reader next to a bare consumer and kcat.

The project's `read_window` (time-index seek, membership rule, decoding, duplicates, the frame)
is timed over the same offsets that a bare kafka-python consumer (assign, seek, poll, nothing
else) and `kcat` (librdkafka, the floor for this broker) read. The bare readers use Kafka's
client directly on purpose: they are the baseline the project's reader is measured against.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.windowing import Window

REPEATS = 3  # runs per reader; the median is reported


@dataclass(frozen=True)
class Timed:
    records: int
    seconds: float
    per_window: tuple[float, ...] = ()  # seconds of each window, when read one by one

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def project_read(
    settings: Settings, schema: StreamSchema, windows: list[Window]
) -> tuple[Timed, dict[str, list[int]]]:
    """`read_window` over each window with one reused consumer (as a backfill reads)."""
    from tasks.stream import read_window, window_reader

    offsets: dict[str, list[int]] = {}
    records = 0
    each: list[float] = []
    with window_reader(settings) as reader:
        started = time.perf_counter()
        for window in windows:
            began = time.perf_counter()
            read = read_window(settings, schema, window, send_dead_letters=False, reader=reader)
            each.append(time.perf_counter() - began)
            # Records in the offsets it covered: what it scanned, as the other readers do.
            records += sum(
                max(0, last - first + 1) for first, last in read.manifest.offsets.values()
            )
            for name, (first, last) in read.manifest.offsets.items():
                span = offsets.setdefault(name, [first, last])
                span[0], span[1] = min(span[0], first), max(span[1], last)
        seconds = time.perf_counter() - started
    return Timed(records, seconds, tuple(each)), offsets


def bare_read(settings: Settings, ranges: list[dict[str, list[int]]]) -> Timed:
    """A plain consumer reading the same offset ranges: assign, seek, poll until the last one."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    try:
        started = time.perf_counter()
        records = 0
        for offsets in ranges:
            records += _bare_range(consumer, offsets)
        return Timed(records, time.perf_counter() - started)
    finally:
        consumer.close()


def _bare_range(consumer: KafkaConsumer, offsets: dict[str, list[int]]) -> int:
    wanted: dict[TopicPartition, tuple[int, int]] = {}
    for name, (first, last) in offsets.items():
        topic, partition = name.rsplit("-", 1)
        if last >= first:
            wanted[TopicPartition(topic, int(partition))] = (first, last)
    consumer.assign(list(wanted))
    ends = consumer.end_offsets(list(wanted))
    for tp, (first, _) in wanted.items():
        consumer.seek(tp, first)
    active, records = set(wanted), 0
    while active:
        for tp, batch in consumer.poll(timeout_ms=1000, max_records=500).items():
            if tp not in active:
                continue
            last = wanted[tp][1]
            records += sum(1 for r in batch if r.offset <= last)
            if batch and batch[-1].offset >= last:
                active.discard(tp)
                consumer.seek(tp, ends[tp])  # stop fetching it, as the project's reader does
    return records


def kcat_read(settings: Settings, offsets: dict[str, list[int]]) -> Timed | None:
    """kcat reading each partition's range (all partitions at once); None without kcat."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        return None
    started = time.perf_counter()
    procs = []
    for name, (first, last) in offsets.items():
        topic, partition = name.rsplit("-", 1)
        count = last - first + 1
        if count <= 0:
            continue
        cmd = [kcat, "-C", "-q", "-e", "-b", settings.bootstrap_servers, "-t", topic]
        cmd += ["-p", partition, "-o", str(first), "-c", str(count), "-f", "%o\n"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    records = sum(len(p.communicate()[0].splitlines()) for p in procs)
    return Timed(records, time.perf_counter() - started)


def kcat_windows(settings: Settings, ranges: list[dict[str, list[int]]]) -> list[float]:
    """Seconds kcat takes for each window's offsets (all its partitions at once); [] without."""
    found = [kcat_read(settings, offsets) for offsets in ranges]
    return [t.seconds for t in found if t is not None]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def compare_reads(
    settings: Settings,
    schema: StreamSchema,
    hourly: list[Window],
    span: Window,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Records per second of each reader, median of REPEATS runs, hourly windows and a span.

    Hourly windows also get seconds per window: the project's read next to kcat reading the
    same offsets window by window (its process start-up included: that is what kcat costs).
    """
    out: dict[str, Any] = {}
    for label, windows in (("hourly windows", hourly), ("one multi-day span", [span])):
        # Each window's offsets once (also warms the broker's page cache for every reader).
        per_window = [project_read(settings, schema, [w])[1] for w in windows]
        merged = project_read(settings, schema, windows)[1]
        project, bare, kcat = [], [], []
        kcat_each: list[float] = []
        for _ in range(repeats):
            project.append(project_read(settings, schema, windows)[0])
            bare.append(bare_read(settings, per_window))
            if len(windows) == 1:
                found = kcat_read(settings, merged)
                if found is not None:
                    kcat.append(found)
            else:
                kcat_each += kcat_windows(settings, per_window)
        out[label] = {
            "window_s_median": _median([s for t in project for s in t.per_window]),
            "kcat_window_s_median": _median(kcat_each),
            "windows": len(windows),
            "repeats": repeats,
            "records": project[0].records,
            "project": statistics.median(t.per_s for t in project),
            "bare": statistics.median(t.per_s for t in bare),
            "kcat": statistics.median(t.per_s for t in kcat) if kcat else None,
            "bare_records": bare[0].records,
            "kcat_records": kcat[0].records if kcat else None,
        }
    return out
