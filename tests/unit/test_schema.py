"""Schema files: both shipped schemas load; bad files and bad records get clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.schema import MalformedRecord, SchemaError, decode_record, load_schema

ROOT = Path(__file__).resolve().parents[2]
DRONE = ROOT / "schemas" / "drone.yaml"
GOOD = """
name: s
topic: t
event_time: {field: ts, format: epoch_ms}
label: {field: y, classes: [ok, bad], positive: bad}
features:
  - {name: x, kind: numeric, type: float}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    return path


def test_shipped_schemas_load() -> None:
    drone = load_schema(DRONE)
    sensor = load_schema(ROOT / "tests" / "fixtures" / "sensor.yaml")
    assert drone.key == "store_id" and drone.window_ms == 3_600_000
    assert sensor.key is None and sensor.window_ms == 900_000
    assert drone.fingerprint() != sensor.fingerprint()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (GOOD.replace("kind: numeric", "kind: fancy"), "features.x.kind"),
        (GOOD.replace("positive: bad", "positive: maybe"), "positive class 'maybe'"),
        (GOOD.replace("topic: t", "topic: t\nwindow: 7m"), "divisor of one day"),
        (GOOD.replace("topic: t", "topic: t\ncolour: red"), "colour: Extra inputs"),
        (GOOD + "  - {name: z, kind: numeric, type: float, min: 5, max: 1}\n", "features.z"),
        (GOOD + "  - {name: x, kind: numeric, type: float}\n", "repeat"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_schema_names_file_field_and_problem(tmp_path: Path, edit: str, message: str) -> None:
    path = write(tmp_path, edit)
    with pytest.raises(SchemaError) as caught:
        load_schema(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_schema_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="not found"):
        load_schema(tmp_path / "nope.yaml")


def good_record(**changes: object) -> bytes:
    record: dict[str, object] = {
        "event_time": "2026-01-05T10:15:00Z",
        "store_id": 3,
        "day_of_week": 1,
        "hour": 10,
        "store_type": "cafe",
        "suburb": "Carlton",
        "avg_delivery_minutes": 12,
        "avg_distance_km": 3.2,
        "avg_rating": 4.1,
        "busy": 1,
    }
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def test_decode_types_values() -> None:
    decoded = decode_record(load_schema(DRONE), good_record())
    assert decoded["_event_ms"] == 1_767_608_100_000
    assert decoded["avg_delivery_minutes"] == 12.0 and isinstance(decoded["store_id"], int)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "JSON object"),
        (good_record(busy=...), "missing field 'busy'"),
        (good_record(busy=2), "not one of [0, 1]"),
        (good_record(busy=True), "not one of [0, 1]"),
        (good_record(hour="10"), "expected a number"),
        (good_record(hour=10.5), "expected an integer"),
        (good_record(store_type=3), "expected a string"),
        (good_record(event_time="yesterday"), "not a iso8601 timestamp"),
        (b'{"event_time": "2026-01-05T10:15:00Z", "avg_rating": NaN}', "missing field"),
        (good_record().replace(b'"avg_rating": 4.1', b'"avg_rating": Infinity'), "finite"),
    ],
)
def test_malformed_records_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedRecord, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_record(load_schema(DRONE), raw)


def test_label_may_be_absent_for_scoring() -> None:
    decoded = decode_record(load_schema(DRONE), good_record(busy=...), require_label=False)
    assert "busy" not in decoded


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # What orjson refuses or reads differently: the json module decides these records.
        (good_record().replace(b'"avg_rating": 4.1', b'"avg_rating": NaN'), "finite"),
        (good_record().replace(b'"avg_rating": 4.1', b'"avg_rating": 1e400'), "finite"),
        (good_record(hour=2**70), f"{2**70} is not a 64-bit integer"),
        (good_record(store_type="\ud800"), None),
    ],
)
def test_records_outside_orjson_decode_as_the_json_module_does(
    raw: bytes, reason: str | None
) -> None:
    schema = load_schema(DRONE)
    if reason is None:
        assert decode_record(schema, raw)["store_type"] == "\ud800"
        return
    with pytest.raises(MalformedRecord, match=reason):
        decode_record(schema, raw)


def test_a_large_integer_reads_as_the_integer_it_is() -> None:
    """orjson reads integers beyond 64 bits as floats; a float feature gets the same value
    either way, a key or an int feature must see the integer (and its own reason)."""
    schema = load_schema(DRONE)
    decoded = decode_record(schema, good_record(avg_rating=2**64 + 1))
    assert decoded["avg_rating"] == float(2**64 + 1)
    assert decoded == decode_record(schema, good_record(avg_rating=float(2**64 + 1)))
