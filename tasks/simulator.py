"""Simulated drone-delivery observations: the demo stream, with drift and faults on demand.

Pure and deterministic: one `SimulationConfig` gives the same records byte for byte, so a demo,
a test and a benchmark replay the same stream. Producing the records to Kafka is done elsewhere.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

from tasks.errors import InputError

SCENARIOS = ("none", "sudden", "gradual", "recurring", "new-stores", "corrupt", "seasonal")
CORRUPTIONS = (
    "not_json",
    "truncated",
    "json_array",
    "missing_field",
    "wrong_type",
    "nan_string",
    "bad_event_time",
    "out_of_range",  # well-formed, decodes, but breaks the schema's min/max
    "duplicate",  # well-formed copy of the previous record (same key and event time)
)
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday, so week N starts on day 7N
SUBURBS = ("Northgate", "Riverside", "Old Town", "Hillcrest", "Westfield", "Eastbank")
NEW_SUBURB = "Harbourside"
STORE_TYPE_MIX = {"cafe": 30, "restaurant": 25, "grocery": 20, "pharmacy": 10, "bakery": 15}
NEW_STORE_TYPE_MIX = {"cafe": 10, "restaurant": 0, "grocery": 40, "pharmacy": 30, "bakery": 20}
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HOUR_MS = 3_600_000
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_OUT_OF_RANGE = (("avg_rating", 9.5), ("avg_distance_km", -3.2), ("avg_delivery_minutes", 240.0))


# --- busy rules: the one place that says when a store is busy --------------------------------


@dataclass(frozen=True)
class BusyRule:
    """A store type is busy on these ISO days (1 = Monday) at these hours of day."""

    days: frozenset[int]
    hours: frozenset[int]


def _rule(days: Iterable[int], first: int, last: int | None = None) -> BusyRule:
    return BusyRule(frozenset(days), frozenset(range(first, (last or first) + 1)))


RuleSet = Mapping[str, tuple[BusyRule, ...]]
EVERY_DAY, WEEKDAYS, WEEKEND = range(1, 8), range(1, 6), (6, 7)

RULES_BASE: RuleSet = {
    "cafe": (_rule(EVERY_DAY, 9, 10), _rule(WEEKEND, 11, 12)),
    "restaurant": (_rule(EVERY_DAY, 12, 13), _rule((5, 6), 16)),
    "grocery": (_rule(WEEKEND, 10, 15),),
    "pharmacy": (_rule((1,), 9, 11),),
    "bakery": (_rule(EVERY_DAY, 9),),
}
# After drift every type keeps roughly its share of busy hours, but at other times, so a model
# trained on RULES_BASE is confidently wrong rather than merely less sure.
RULES_SHIFTED: RuleSet = {
    "cafe": (_rule(EVERY_DAY, 13, 14), _rule(WEEKEND, 15, 16)),
    "restaurant": (_rule(EVERY_DAY, 15, 16), _rule((7,), 11)),
    "grocery": (_rule(WEEKDAYS, 14, 16),),
    "pharmacy": (_rule(EVERY_DAY, 9, 10),),
    "bakery": (_rule(EVERY_DAY, 16), _rule(WEEKEND, 12, 13)),
}


def is_busy(rules: RuleSet, store_type: str, day_of_week: int, hour: int) -> bool:
    """Whether `rules` make this store type busy at this ISO day and hour (before label noise)."""
    return any(day_of_week in r.days and hour in r.hours for r in rules[store_type])


def describe_rules(rules: RuleSet, hours: Iterable[int] = range(24)) -> str:
    """A Markdown table (store type x day -> busy hours) for docs; the docs test compares it."""
    wanted = set(hours)
    lines = ["| store type | " + " | ".join(_DAY_NAMES) + " |", "|---" * 8 + "|"]
    for store_type in rules:
        cells = []
        for day in range(1, 8):
            busy = [h for h in sorted(wanted) if is_busy(rules, store_type, day, h)]
            cells.append(_runs(busy) or "-")
        lines.append(f"| {store_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runs(hours: list[int]) -> str:
    """[9, 10, 11, 16] -> '9-11, 16'."""
    runs: list[list[int]] = []
    for h in hours:
        if runs and h == runs[-1][-1] + 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


# --- configuration and records ---------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; `drift_at` defaults to the start of the third week."""

    start: datetime = DEFAULT_START
    hours: int = 4 * 7 * 24
    scenario: str = "none"
    seed: int = 0
    stores: int = 100
    daylight_hours: int = 8
    first_daylight_hour: int = 9
    drift_at: datetime | None = None
    drift_period: timedelta = timedelta(days=7)  # gradual: ramp length; recurring: period
    season_period: timedelta = timedelta(days=7)  # seasonal: length of one cycle
    season_amplitude: float = 0.5  # seasonal: distances swing by this share around the mean
    corrupt_share: float = 0.02  # of records from drift_at on, scenario "corrupt" only
    new_stores: int = 20  # scenario "new-stores": ids stores+1 .. stores+new_stores
    new_suburb: str = NEW_SUBURB
    label_noise: float = 0.05
    out_of_order_share: float = 0.0  # any scenario: event time moved back, position kept
    max_lateness: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise InputError(f"unknown scenario {self.scenario!r}; choose one of {SCENARIOS}")
        for name in ("start", "drift_at"):
            stamp = getattr(self, name)
            if stamp is not None and stamp.tzinfo is None:
                raise InputError(f"{name} must be timezone-aware (UTC), got {stamp}")
            if stamp is not None:  # hours and days are UTC; keep one clock throughout
                object.__setattr__(self, name, stamp.astimezone(UTC))
        if self.start != self.start.replace(minute=0, second=0, microsecond=0):
            raise InputError(f"start must be on the hour, got {self.start.isoformat()}")
        if self.hours < 0 or self.stores < 1 or self.new_stores < 0:
            raise InputError("hours and new_stores must be >= 0 and stores >= 1")
        if not 0 <= self.first_daylight_hour < self.first_daylight_hour + self.daylight_hours <= 24:
            raise InputError("daylight hours must be a non-empty range inside 0..23")
        for name in ("corrupt_share", "label_noise", "out_of_order_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be between 0 and 1")
        if self.drift_period <= timedelta(0) or self.max_lateness < timedelta(0):
            raise InputError("drift_period must be positive and max_lateness not negative")
        if self.season_period <= timedelta(0) or not 0.0 <= self.season_amplitude < 1.0:
            raise InputError("season_period must be positive and season_amplitude in [0, 1)")

    @cached_property  # rules_at asks once per record
    def drift_time(self) -> datetime:
        return self.drift_at if self.drift_at is not None else self.start + timedelta(days=14)

    @property
    def daylight(self) -> range:
        return range(self.first_daylight_hour, self.first_daylight_hour + self.daylight_hours)


@dataclass(frozen=True)
class SimRecord:
    """One Kafka record to produce: `timestamp_ms` is its place in the stream, `event_ms` the
    event time written in `value` (earlier for late records; the slot time when unreadable)."""

    key: bytes
    value: bytes
    timestamp_ms: int
    event_ms: int
    corruption: str | None = None  # one of CORRUPTIONS, None for a good record


@dataclass(frozen=True)
class Store:
    """A store's static attributes, fixed by the seed."""

    store_id: int
    store_type: str
    suburb: str
    distance_km: float
    rating: float


def stores_for(config: SimulationConfig) -> tuple[tuple[Store, ...], tuple[Store, ...]]:
    """The stores from the start and, for scenario "new-stores", those appearing at drift_at."""
    rng = _rng(config.seed, "stores", 0)
    base = tuple(
        Store(
            i,
            _pick(rng, STORE_TYPE_MIX),
            rng.choice(SUBURBS),
            rng.uniform(1, 12),
            rng.uniform(3.4, 4.9),
        )
        for i in range(1, config.stores + 1)
    )
    if config.scenario != "new-stores":
        return base, ()
    rng = _rng(config.seed, "new-stores", 0)
    new = tuple(
        Store(
            i,
            _pick(rng, NEW_STORE_TYPE_MIX),
            config.new_suburb,
            rng.uniform(6, 20),
            rng.uniform(3.0, 4.5),
        )
        for i in range(config.stores + 1, config.stores + config.new_stores + 1)
    )
    return base, new


def shifted_share(config: SimulationConfig, event_time: datetime) -> float:
    """The chance that a record at `event_time` follows RULES_SHIFTED: 0 or 1, except on a
    gradual ramp, where it rises from 0 at `drift_at` to 1 after `drift_period`."""
    since = event_time - config.drift_time
    if config.scenario not in ("sudden", "gradual", "recurring") or since < timedelta(0):
        return 0.0
    if config.scenario == "gradual":
        return min(1.0, since / config.drift_period)
    if config.scenario == "recurring" and (since // config.drift_period) % 2 == 1:
        return 0.0
    return 1.0


def rules_at(config: SimulationConfig, event_time: datetime, rng: random.Random) -> RuleSet:
    """The rule set a record at `event_time` follows; `rng` decides the gradual mix."""
    share = shifted_share(config, event_time)
    if config.scenario == "gradual" and event_time >= config.drift_time:
        return RULES_SHIFTED if rng.random() < share else RULES_BASE  # one draw per record
    return RULES_SHIFTED if share >= 0.5 else RULES_BASE


# --- generation ------------------------------------------------------------------------------


def generate(config: SimulationConfig) -> Iterator[SimRecord]:
    """All records, hour by hour, each hour in event-time order."""
    base, new = stores_for(config)
    for hour_start in _daylight_starts(config):
        stores = base + new if hour_start >= config.drift_time else base
        yield from _hour_records(config, stores, hour_start)


def expected_counts(config: SimulationConfig) -> int:
    """How many records `generate(config)` yields, without generating them."""
    base, new = stores_for(config)
    return sum(
        len(base) + (len(new) if hour_start >= config.drift_time else 0)
        for hour_start in _daylight_starts(config)
    )


class PacingClock:
    """Where each record falls on a paced stream's clock, in ms after the pacing's start.

    With `skip_empty_hours`, whole hours that hold no record (the simulated nights) are cut
    out: a live stream then goes from the day's last observed hour to the next morning's at
    once, rather than spending 16 stream hours (16 minutes at 60x) with nothing to fine-tune.
    Records keep their own timestamps; only the waiting between them changes.
    """

    def __init__(self, start_ms: int, *, skip_empty_hours: bool = True) -> None:
        self.start_ms, self.skip_empty_hours = start_ms, skip_empty_hours
        self._last_hour = start_ms // _HOUR_MS - 1  # the start's own hour may be empty too
        self._skipped_ms = 0

    def offset_ms(self, timestamp_ms: int) -> int:
        """The record's offset on the clock (records come in stream order)."""
        hour = timestamp_ms // _HOUR_MS
        if self.skip_empty_hours and hour > self._last_hour + 1:
            self._skipped_ms += (hour - self._last_hour - 1) * _HOUR_MS
        self._last_hour = max(self._last_hour, hour)
        return timestamp_ms - self.start_ms - self._skipped_ms


def _daylight_starts(config: SimulationConfig) -> Iterator[datetime]:
    for i in range(config.hours):
        hour_start = config.start + timedelta(hours=i)
        if hour_start.hour in config.daylight:
            yield hour_start


def _rng(seed: int, purpose: str, hour: int) -> random.Random:
    """An independent stream per purpose and hour: a scenario or option changes only what it
    is about (sudden drift leaves features alone) and any hour range replays identically."""
    return random.Random(f"{seed}:{purpose}:{hour}")


def _pick(rng: random.Random, mix: Mapping[str, int]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _hour_records(
    config: SimulationConfig, stores: tuple[Store, ...], hour_start: datetime
) -> list[SimRecord]:
    hour_ms = int(hour_start.timestamp() * 1000)
    tag = hour_ms // _HOUR_MS
    late, mix, broken = (_rng(config.seed, p, tag) for p in ("late", "mix", "corrupt"))
    # New stores draw from their own stream so the original stores match scenario "none".
    observe, observe_new = _rng(config.seed, "observe", tag), _rng(config.seed, "observe-new", tag)
    rows = [
        _observe(config, s, hour_ms, observe_new if s.store_id > config.stores else observe)
        for s in stores
    ]
    rows.sort(key=lambda row: (row[0], row[1]["store_id"]))
    day_open_ms = hour_ms - (hour_start.hour - config.first_daylight_hour) * _HOUR_MS
    corrupting = config.scenario == "corrupt" and hour_start >= config.drift_time
    out: list[SimRecord] = []
    last_good: SimRecord | None = None
    for slot_ms, obs, flip in rows:
        event_ms = slot_ms - _lateness(config, late, slot_ms - day_open_ms)
        record = _label_and_encode(config, obs, flip, slot_ms, event_ms, mix)
        if corrupting and broken.random() < config.corrupt_share:
            out.append(_corrupt(broken.choice(CORRUPTIONS), obs, record, last_good, broken))
        else:
            out.append(record)
            last_good = record
    return out


def _label_and_encode(
    config: SimulationConfig,
    obs: dict[str, Any],
    flip: bool,
    slot_ms: int,
    event_ms: int,
    mix: random.Random,
) -> SimRecord:
    """Complete an observation with its time fields and label (from the event time, so a late
    record describes the hour it happened in) and encode it."""
    stamp = datetime.fromtimestamp(event_ms // 1000, UTC)
    day, hour = stamp.isoweekday(), stamp.hour
    busy = is_busy(rules_at(config, stamp, mix), obs["store_type"], day, hour) != flip
    obs |= {"event_time": _iso(event_ms), "day_of_week": day, "hour": hour, "busy": int(busy)}
    return SimRecord(str(obs["store_id"]).encode(), _encode_good(obs), slot_ms, event_ms)


def _observe(
    config: SimulationConfig, store: Store, hour_ms: int, rng: random.Random
) -> tuple[int, dict[str, Any], bool]:
    """Slot time, the fields that do not depend on the rules, and whether the label flips."""
    slot_ms = hour_ms + rng.randrange(3600) * 1000
    flip = rng.random() < config.label_noise
    stretch = store.distance_km * season_factor(config, hour_ms)
    distance = min(30.0, max(0.1, stretch * rng.gauss(1.0, 0.08)))
    minutes = min(120.0, max(1.0, 5 + 2.5 * distance + rng.gauss(0, 3)))
    rating = min(5.0, max(1.0, store.rating + rng.gauss(0, 0.15)))
    obs = {
        "store_id": store.store_id,
        "store_type": store.store_type,
        "suburb": store.suburb,
        "avg_distance_km": round(distance, 2),
        "avg_delivery_minutes": round(minutes, 2),
        "avg_rating": round(rating, 2),
    }
    return slot_ms, obs, flip


def season_factor(config: SimulationConfig, hour_ms: int) -> float:
    """How far distances (and so delivery times) stretch this hour: a sine over
    `season_period`, phased from the epoch so any hour range replays the same values."""
    if config.scenario != "seasonal":
        return 1.0
    period_ms = config.season_period.total_seconds() * 1000
    return 1.0 + config.season_amplitude * math.sin(2 * math.pi * hour_ms / period_ms)


def _lateness(config: SimulationConfig, rng: random.Random, since_open_ms: int) -> int:
    """How far back a late record's event time moves; never before the day's first daylight
    hour, so a late record still describes a daylight hour."""
    if not config.out_of_order_share or rng.random() >= config.out_of_order_share:
        return 0
    back_ms = rng.randint(1, max(1, int(config.max_lateness.total_seconds()))) * 1000
    return min(back_ms, since_open_ms)


def _iso(event_ms: int) -> str:
    """ISO 8601 with Z, to the second; strftime per record dominated generation time."""
    minute, second = divmod(event_ms % _HOUR_MS // 1000, 60)
    return f"{_hour_prefix(event_ms - event_ms % _HOUR_MS)}{minute:02d}:{second:02d}Z"


@lru_cache(maxsize=1024)
def _hour_prefix(hour_ms: int) -> str:
    return datetime.fromtimestamp(hour_ms // 1000, UTC).strftime("%Y-%m-%dT%H:")


@lru_cache(maxsize=1024)
def _quote(text: str) -> str:
    return json.dumps(text)


def _encode_good(obs: dict[str, Any]) -> bytes:
    """The same bytes as `_encode(obs)` for a good record (a test checks), laid out by hand
    because the json module's per-call setup was half of the generation time."""
    return (
        f'{{"avg_delivery_minutes":{obs["avg_delivery_minutes"]!r},'
        f'"avg_distance_km":{obs["avg_distance_km"]!r},"avg_rating":{obs["avg_rating"]!r},'
        f'"busy":{obs["busy"]},"day_of_week":{obs["day_of_week"]},'
        f'"event_time":{_quote(obs["event_time"])},"hour":{obs["hour"]},'
        f'"store_id":{obs["store_id"]},"store_type":{_quote(obs["store_type"])},'
        f'"suburb":{_quote(obs["suburb"])}}}'
    ).encode()


def _encode(obj: object) -> bytes:
    return _JSON.encode(obj).encode()


def _corrupt(
    kind: str,
    obs: dict[str, Any],
    good: SimRecord,
    previous: SimRecord | None,
    rng: random.Random,
) -> SimRecord:
    """A broken variant of a good record, as a faulty producer would send it. Its
    `timestamp_ms` stays the slot time, so it lands in the right window even when unreadable."""
    if kind == "duplicate" and previous is not None:
        return SimRecord(
            previous.key, previous.value, previous.timestamp_ms, previous.event_ms, kind
        )
    kind = "missing_field" if kind == "duplicate" else kind  # first record of the hour
    bad = dict(obs)
    if kind == "not_json":  # a CSV line from a misconfigured producer
        value = f"{obs['store_id']},{obs['event_time']},{obs['store_type']},{obs['busy']}".encode()
    elif kind == "truncated":
        value = good.value[: len(good.value) // 2]
    elif kind == "json_array":
        value = _encode([obs[k] for k in sorted(obs)])
    else:
        if kind == "missing_field":
            del bad[rng.choice(sorted(bad))]
        elif kind == "wrong_type":
            name = rng.choice(["store_id", "hour", "avg_distance_km", "avg_rating", "busy"])
            bad[name] = str(bad[name])
        elif kind == "nan_string":  # strict JSON has no NaN, so producers write a string
            bad[rng.choice(["avg_delivery_minutes", "avg_distance_km", "avg_rating"])] = "NaN"
        elif kind == "bad_event_time":
            bad["event_time"] = rng.choice(["yesterday", "2024-13-45T25:61:00Z", ""])
        elif kind == "out_of_range":
            name, number = rng.choice(_OUT_OF_RANGE)
            bad[name] = number
        value = _encode(bad)
    unreadable = kind in ("not_json", "truncated", "json_array", "bad_event_time")
    event_ms = good.timestamp_ms if unreadable or "event_time" not in bad else good.event_ms
    return SimRecord(good.key, value, good.timestamp_ms, event_ms, kind)


# --- summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimSummary:
    """What a run produced, for CLI output and run logs."""

    records: int
    stores: int
    busy_share: float  # among good records
    late: int
    corrupt: Mapping[str, int]
    first_event_ms: int | None
    last_event_ms: int | None


def summarize(records: Iterable[SimRecord]) -> SimSummary:
    """Counts and shares over records from `generate` (good records are parsed, not checked)."""
    total = busy = good = late = 0
    keys: set[bytes] = set()
    corrupt: Counter[str] = Counter()
    first: int | None = None
    last: int | None = None
    for record in records:
        total += 1
        keys.add(record.key)
        late += record.event_ms < record.timestamp_ms
        first = record.event_ms if first is None else min(first, record.event_ms)
        last = record.event_ms if last is None else max(last, record.event_ms)
        if record.corruption is not None:
            corrupt[record.corruption] += 1
            continue
        good += 1
        busy += json.loads(record.value)["busy"]
    return SimSummary(
        total, len(keys), busy / good if good else 0.0, late, dict(corrupt), first, last
    )
