"""The window reader against the real broker: exact windows, disorder, bad records, kcat."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import DeadLetterError, ensure_topic, produce, read_window
from tasks.windowing import Window, to_ms
from tests.integration.helpers import Raw, dead_letters, fresh_schema, limit_record_size

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


def drone_value(store: int, when: datetime, busy: int = 0, **overrides: object) -> bytes:
    record: dict[str, object] = {
        "event_time": when.isoformat().replace("+00:00", "Z"),
        "store_id": store,
        "day_of_week": when.isoweekday(),
        "hour": when.hour,
        "store_type": "cafe",
        "suburb": "Carlton",
        "avg_delivery_minutes": 12.5,
        "avg_distance_km": 3.1,
        "avg_rating": 4.2,
        "busy": busy,
    }
    record.update(overrides)
    return json.dumps(record).encode()


def raw(store: int, when: datetime, stamp: datetime | None = None, **fields: object) -> Raw:
    return Raw(str(store).encode(), drone_value(store, when, **fields), to_ms(stamp or when))


def test_simulated_week_reads_back_window_by_window_exactly(settings: Settings) -> None:
    schema = fresh_schema()
    config = SimulationConfig(start=START, hours=168, scenario="none", seed=11)
    produced = list(generate(config))
    ensure_topic(settings, schema.topic)
    assert produce(settings, schema.topic, produced) == len(produced) == 5600

    expected: dict[datetime, set[tuple[int, str]]] = defaultdict(set)
    for record in produced:
        value = json.loads(record.value)
        hour = Window.containing(datetime.fromisoformat(value["event_time"]), HOUR).start
        expected[hour].add((value["store_id"], value["event_time"]))

    seen = 0
    for window_start in sorted(expected)[:-1]:  # the last window never closes
        result = read_window(settings, schema, Window(window_start, window_start + HOUR))
        got = set(zip(result.frame["store_id"], result.frame["event_time"], strict=True))
        assert got == expected[window_start], window_start
        assert result.manifest.closed
        assert result.manifest.malformed == result.manifest.duplicates == result.manifest.late == 0
        seen += result.manifest.rows
    assert seen == len(produced) - len(expected[max(expected)])


def test_out_of_order_record_lands_in_its_own_window(settings: Settings) -> None:
    schema = fresh_schema()
    ensure_topic(settings, schema.topic, partitions=1)
    ten = START + 10 * HOUR
    records = [
        raw(1, ten + timedelta(minutes=5)),
        raw(2, ten + timedelta(minutes=50)),
        raw(3, ten + HOUR + timedelta(minutes=2)),  # stream time moves into 11:00
        raw(4, ten + timedelta(minutes=55)),  # out of order, within the allowed lateness
        raw(5, ten + HOUR + timedelta(minutes=30)),  # closes window 10 (11:30 >= 11:10)
        raw(6, ten + timedelta(minutes=20)),  # too late for window 10
        raw(7, ten + 3 * HOUR),
    ]
    produce(settings, schema.topic, records)

    first = read_window(settings, schema, Window(ten, ten + HOUR))
    assert sorted(first.frame["store_id"]) == [1, 2, 4]
    assert first.manifest.late == 0

    second = read_window(settings, schema, Window(ten + HOUR, ten + 2 * HOUR))
    assert sorted(second.frame["store_id"]) == [3, 5]
    assert second.manifest.late == 1  # store 6 arrived while window 11 was open
    reasons = [d for d in dead_letters(settings, schema) if d["kind"] == "late"]
    assert [json.loads(str(d["value"]))["store_id"] for d in reasons] == [6]


def test_malformed_and_duplicate_records_are_set_aside_and_counted(settings: Settings) -> None:
    schema = fresh_schema()
    ensure_topic(settings, schema.topic, partitions=2)
    ten = START + 10 * HOUR
    good = [raw(s, ten + timedelta(minutes=s)) for s in range(1, 11)]
    bad = [
        Raw(b"1", b"this is not json", to_ms(ten + timedelta(minutes=3))),
        Raw(b"2", b"[1, 2, 3]", to_ms(ten + timedelta(minutes=4))),
        raw(3, ten + timedelta(minutes=5), avg_rating="high"),
        Raw(b"4", json.dumps({"event_time": "2026-01-05T10:06:00Z"}).encode(), to_ms(ten)),
    ]
    duplicate = raw(5, ten + timedelta(minutes=5))  # same store and event time as a good one
    closer = raw(99, ten + 2 * HOUR)
    produce(settings, schema.topic, [*good, *bad, duplicate, closer])

    result = read_window(settings, schema, Window(ten, ten + HOUR))
    manifest = result.manifest
    assert manifest.rows == 10
    assert manifest.malformed == 4
    assert manifest.duplicates == 1
    assert manifest.records_read == len(good) + len(bad) + 1
    letters = dead_letters(settings, schema)
    assert sorted(d["reason"] for d in letters) == sorted(
        [
            "expected a JSON object, got list",
            "field 'avg_rating': expected a number, got str",
            "missing field 'store_id'",
            "not JSON: JSONDecodeError",
        ]
    )
    assert all(isinstance(d["source"], dict) and "offset" in d["source"] for d in letters)


def test_second_schema_works_end_to_end(settings: Settings) -> None:
    schema = fresh_schema(ROOT / "tests" / "fixtures" / "sensor.yaml")
    ensure_topic(settings, schema.topic)
    base = to_ms(START)
    minute = 60_000
    records = [
        Raw(
            None,
            json.dumps(
                {
                    "ts": base + i * minute,
                    "temperature": 20.0 + i,
                    "vibration": 0.1 * i,
                    "line": "abc"[i % 3],
                    "status": "alarm" if i % 4 == 0 else "ok",
                }
            ).encode(),
            base + i * minute,
        )
        for i in range(60)
    ]
    produce(settings, schema.topic, records)
    result = read_window(settings, schema, Window.containing(START, schema.window))
    assert result.manifest.rows == 15  # 15-minute windows
    assert result.manifest.label_counts == {"alarm": 4, "ok": 11}
    assert list(result.frame.columns[:4]) == ["ts", "temperature", "vibration", "line"]


def test_cli_window_json_and_output(
    settings: Settings, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    schema = fresh_schema()
    ensure_topic(settings, schema.topic)
    ten = START + 10 * HOUR
    produce(settings, schema.topic, [raw(s, ten + timedelta(minutes=s)) for s in range(1, 6)])
    out = tmp_path / "rows.csv"
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "streamtrain"),
            "window",
            "--hour",
            "2026-01-05T10:30Z",
            "--topic",
            schema.topic,
            "--json",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for key in (
        "window_start",
        "window_end",
        "rows",
        "duplicates",
        "malformed",
        "late",
        "label_counts",
        "offsets",
    ):
        assert key in summary
    assert summary["window_start"] == "2026-01-05T10:00Z" and summary["rows"] == 5
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.skipif(
    shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)"
)
def test_kcat_reads_the_json_records(settings: Settings) -> None:
    schema = fresh_schema()
    ensure_topic(settings, schema.topic)
    produced = list(generate(SimulationConfig(start=START, hours=24, scenario="none", seed=3)))
    produce(settings, schema.topic, produced)
    done = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            settings.bootstrap_servers,
            "-t",
            schema.topic,
            "-e",
            "-q",
            "-f",
            "%k\t%T\t%s\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line]
    assert len(lines) == len(produced)
    key, stamp, value = lines[0].split("\t", 2)
    record = json.loads(value)
    assert key == str(record["store_id"])
    assert int(stamp) == to_ms(datetime.fromisoformat(record["event_time"]))


def test_topics_keep_history_whatever_its_age(settings: Settings) -> None:
    """Retention follows record timestamps: replayed history must not expire within minutes."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    schema = fresh_schema()
    ensure_topic(settings, schema.topic)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, schema.topic)])
    finally:
        admin.close()
    assert found["topic"][schema.topic]["retention.ms"]["value"] == "-1"


def test_a_window_whose_dead_letters_the_broker_refuses_fails_the_read(
    settings: Settings,
) -> None:
    schema = fresh_schema()
    ensure_topic(settings, schema.topic, partitions=1)
    ten = START + 10 * HOUR
    bad = Raw(b"9", b"{not json " + b"x" * 4000, to_ms(ten + timedelta(minutes=30)))
    produce(settings, schema.topic, [raw(1, ten), bad, raw(2, ten + 2 * HOUR)])
    limit_record_size(settings, schema.dead_letter_topic(), 1024)

    with pytest.raises(DeadLetterError, match=f"{schema.topic}-0 offset 1"):
        read_window(settings, schema, Window(ten, ten + HOUR))

    assert dead_letters(settings, schema) == []
    read = read_window(settings, schema, Window(ten, ten + HOUR), send_dead_letters=False)
    assert (read.manifest.rows, read.manifest.malformed, read.manifest.dead_lettered) == (1, 1, 0)
