"""Hypothesis strategies for hostile drone records: what a careless or malicious producer sends.

Each example is a list of `Raw` records for the window at `BASE` and the next one, with Kafka
timestamps inside [BASE, BASE + 2 h) but in any order, and values that are well-formed,
broken or hostile in the ways issue 8 lists.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tasks.windowing import to_ms
from tests.integration.helpers import Raw

BASE = datetime(2026, 1, 5, 10, tzinfo=UTC)  # a Monday, 10:00
BASE_MS = to_ms(BASE)
HOUR_MS = 3_600_000
STORE_TYPES = ("cafe", "restaurant", "grocery", "pharmacy", "bakery")
FIELDS = (
    "event_time",
    "store_id",
    "day_of_week",
    "hour",
    "store_type",
    "suburb",
    "avg_delivery_minutes",
    "avg_distance_km",
    "avg_rating",
    "busy",
)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def good_record(draw: st.DrawFn, *, minutes: int = 130) -> dict[str, Any]:
    """A record the schema accepts, at a minute from 20 min before BASE to 110 min after."""
    when = BASE + timedelta(minutes=draw(st.integers(-20, minutes - 20)))
    return {
        "event_time": iso(when),
        "store_id": draw(st.integers(1, 40)),
        "day_of_week": when.isoweekday(),
        "hour": when.hour,
        "store_type": draw(st.sampled_from(STORE_TYPES)),
        "suburb": draw(st.sampled_from(("Carlton", "Fitzroy", "Brunswick"))),
        "avg_delivery_minutes": draw(st.floats(0, 120)),
        "avg_distance_km": draw(st.floats(0, 30)),
        "avg_rating": draw(st.floats(1, 5)),
        "busy": draw(st.sampled_from((0, 1))),
    }


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
HOSTILE_NUMBERS = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        1e308,
        -1e308,
        10**30,
        -(10**30),
        2**63,
        10**400,
        5e-324,
        -0.0,
    ]
)
HOSTILE_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "2026-01-05T09:00:00Z",  # an hour before BASE: late
        "2026-01-05T12:30:00+13:00",
        "2030-01-01T00:00:00Z",  # years ahead of its Kafka timestamp
        "9999-12-31T23:59:59Z",
        "2026-13-45T99:99:99Z",
        "yesterday",
        "",
        "2026-01-05T10:15:00",  # no zone: taken as UTC
    ]
) | st.one_of(st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=2))


@st.composite
def hostile_value(draw: st.DrawFn) -> bytes | None:
    """One record value: good, broken or hostile."""
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "not json",
                "wrong shape",
                "missing",
                "extra",
                "wrong type",
                "out of range",
                "hostile number",
                "huge string",
                "hostile time",
                "empty",
            ]
        )
    )
    if kind == "not json":
        return draw(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
    if kind == "wrong shape":
        shape = draw(JSON_SCALARS | st.lists(JSON_VALUES, max_size=4))
        return json.dumps(shape).encode()
    if kind == "empty":
        return None
    record = draw(good_record())
    if kind == "missing":
        for name in draw(st.sets(st.sampled_from(FIELDS), min_size=1, max_size=4)):
            if draw(st.booleans()):
                del record[name]
            else:
                record[name] = None
    elif kind == "extra":
        extra = draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, min_size=1, max_size=3))
        record = {**extra, **record} if draw(st.booleans()) else {**record, **extra}
    elif kind == "wrong type":
        record[draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
    elif kind == "out of range":  # well-typed, so only validation can catch it
        name, value = draw(
            st.sampled_from(
                [
                    ("avg_rating", st.floats(5.01, 1e6)),
                    ("avg_distance_km", st.floats(-1e6, -0.01)),
                    ("hour", st.integers(24, 10**6)),
                    ("day_of_week", st.integers(8, 100)),
                    ("store_type", st.text(max_size=10)),
                    ("store_id", st.integers(-(2**63), 0)),
                ]
            )
        )
        record[name] = draw(value)
    elif kind == "hostile number":
        name = draw(st.sampled_from(FIELDS[1:4] + FIELDS[6:]))
        record[name] = draw(HOSTILE_NUMBERS)
    elif kind == "huge string":
        name = draw(st.sampled_from(("suburb", "store_type", "event_time", "avg_rating")))
        record[name] = draw(st.sampled_from(("x", "é", "\x00", "🚁"))) * draw(
            st.sampled_from((1_000, 50_000))
        )
    elif kind == "hostile time":
        record["event_time"] = draw(HOSTILE_TIMES)
    return json.dumps(record).encode()  # NaN and Infinity go out as JSON's non-standard tokens


@st.composite
def hostile_batch(draw: st.DrawFn, *, min_size: int = 1, max_size: int = 40) -> list[Raw]:
    """Records in any order, some repeated byte for byte (at-least-once producers)."""
    records = []
    for _ in range(draw(st.integers(min_size, max_size))):
        value = draw(hostile_value())
        key = draw(st.sampled_from((b"1", b"7", b"", b"\xff\x00", b"store-3")))
        stamp = BASE_MS + draw(st.integers(0, 2 * HOUR_MS - 1))
        records.append(Raw(key, value, stamp))  # type: ignore[arg-type]
    for index in draw(st.lists(st.integers(0, len(records) - 1), max_size=5)):
        records.append(records[index])
    return draw(st.permutations(records))


def drone_window(stores: int = 60, hour: datetime = BASE) -> list[Raw]:
    """Well-formed records for one window: each store once, on time."""
    out = []
    for store in range(1, stores + 1):
        when = hour + timedelta(minutes=store % 60)
        value = {
            "event_time": iso(when),
            "store_id": store,
            "day_of_week": when.isoweekday(),
            "hour": when.hour,
            "store_type": STORE_TYPES[store % 5],
            "suburb": "Carlton",
            "avg_delivery_minutes": 12.5,
            "avg_distance_km": 3.1,
            "avg_rating": 4.2,
            "busy": int(store % 5 == 0),
        }
        out.append(Raw(str(store).encode(), json.dumps(value).encode(), to_ms(when)))
    return out


def out_of_range_rows(count: int = 20) -> list[Raw]:
    """Well-typed records whose rating is impossible: enough to make validation reject a window."""
    rows = drone_window(count)
    out = []
    for raw in rows:
        value = json.loads(raw.value)
        value["store_id"] += 1000
        value["avg_rating"] = 9.5
        out.append(
            Raw(str(value["store_id"]).encode(), json.dumps(value).encode(), raw.timestamp_ms)
        )
    return out
