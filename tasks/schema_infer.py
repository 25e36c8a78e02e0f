"""Draft a stream schema from a CSV: types, ranges, categoricals, label classes, time format.

The draft is a starting point a person edits; every guess comes with the reason for it, so
that `streamtrain schema infer` can say what it guessed and why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from tasks.csv_source import CsvRow, CsvTable
from tasks.errors import InputError
from tasks.schema import StreamSchema

# Integer columns with at most this many distinct values are read as categories (shop type,
# location code); more distinct values read as a quantity with a range.
MAX_INT_CATEGORIES = 20
# String columns with at most this many distinct values get a closed value set.
MAX_STRING_VALUES = 50
_POSITIVE_WORDS = ("1", "yes", "true", "y", "positive", "pos", "alarm", "busy", "fraud")


@dataclass(frozen=True)
class Guess:
    """One decision of the draft and why it was made."""

    column: str
    guess: str
    why: str


@dataclass(frozen=True)
class Draft:
    """A schema draft (checked by the schema's own model) and the guesses behind it."""

    schema: dict[str, Any]
    guesses: list[Guess]
    skipped_lines: list[int]

    def to_yaml(self) -> str:
        """YAML that `load_schema` reads back; strings like 'no' are quoted by the dumper."""
        notes = "\n".join(f"#   {g.column}: {g.guess} ({g.why})" for g in self.guesses)
        head = f"# Drafted by `streamtrain schema infer`; check and edit it.\n{notes}\n"
        return head + yaml.safe_dump(
            self.schema, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100
        )


def column_type(values: list[str]) -> str:
    """int, float or string: the narrowest type every non-empty value parses as."""
    present = [v for v in values if v != ""]
    if present and all(_parses(int, v) for v in present):
        return "int"
    if present and all(_parses(float, v) for v in present):
        return "float"
    return "string"


def _parses(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _value(kind: str, text: str) -> int | float | str:
    return int(text) if kind == "int" else float(text) if kind == "float" else text


def _number(value: object) -> int | float:
    number = float(str(value))
    return int(number) if number.is_integer() else number


def infer_feature(name: str, values: list[str], *, is_key: bool) -> tuple[dict[str, Any], Guess]:
    """A feature entry for one column, and the reason for its kind."""
    kind = column_type(values)
    present = [_value(kind, v) for v in values if v != ""]
    distinct = sorted(set(present), key=lambda v: (str(type(v)), v))
    entry: dict[str, Any] = {"name": name}
    if is_key:
        entry.update(kind="categorical", type="int" if kind == "int" else "string")
        if kind == "int":
            entry["min"] = _number(min(present))
        why = f"the key, {len(distinct)} distinct values; open vocabulary so new ones are allowed"
        return entry, Guess(name, "categorical (open)", why)
    if kind == "string" or (kind == "int" and len(distinct) <= MAX_INT_CATEGORIES):
        entry.update(kind="categorical", type=kind)
        closed = kind == "int" or len(distinct) <= MAX_STRING_VALUES
        if closed:
            entry["values"] = distinct
        why = f"{len(distinct)} distinct {kind} values" + ("" if closed else ", open vocabulary")
        shown = ", ".join(str(v) for v in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
        return entry, Guess(name, f"categorical {kind} [{shown}]", why)
    low, high = _number(min(present)), _number(max(present))
    entry.update(kind="numeric", type=kind, min=low, max=high)
    why = f"{len(distinct)} distinct values" if kind == "int" else "decimal values"
    return entry, Guess(name, f"numeric {kind} {low}..{high}", why)


def infer_label(name: str, values: list[str]) -> tuple[dict[str, Any], Guess]:
    """Label field, its two classes and the positive one; more or fewer classes are refused."""
    kind = column_type(values)
    counts = Counter(_value("int" if kind == "int" else "string", v) for v in values if v != "")
    if kind == "float" or len(counts) != 2:
        shown = ", ".join(str(v) for v in sorted(counts, key=str)[:8])
        raise InputError(
            f"label column {name!r} has {len(counts)} distinct values ({shown}"
            f"{', ...' if len(counts) > 8 else ''}); the schema needs exactly two classes: "
            "pick another --label or map the values to two classes first"
        )
    classes = sorted(counts, key=lambda v: (str(type(v)), v))
    named = [c for c in classes if str(c).lower() in _POSITIVE_WORDS]
    if named:
        positive, why = named[0], f"{named[0]!r} reads as the positive class"
    else:
        positive = min(classes, key=lambda c: (counts[c], str(c)))
        why = "the rarer class"
    share = counts[positive] / sum(counts.values())
    entry = {"field": name, "classes": classes, "positive": positive}
    return entry, Guess(
        name, f"label, classes {classes}, positive {positive!r}", f"{why}; {share:.0%} of rows"
    )


def infer_time_format(name: str, values: list[str]) -> tuple[str, Guess]:
    """iso8601, epoch_s or epoch_ms, from what the values look like."""
    kind = column_type(values)
    present = [v for v in values if v != ""]
    if kind in ("int", "float"):
        largest = max(abs(float(v)) for v in present)
        fmt = "epoch_ms" if largest > 1e11 else "epoch_s"  # 1e11 s is the year 5138
        return fmt, Guess(name, f"event time, {fmt}", f"numbers up to {largest:.0f}")
    bad = [v for v in present if not _iso_time(v)]
    if bad:
        raise InputError(f"time column {name!r}: {bad[0]!r} is not ISO 8601 or an epoch number")
    return "iso8601", Guess(name, "event time, iso8601", "ISO 8601 text")


def _iso_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def rows_per_moment(rows: list[CsvRow], index: int | None) -> list[int]:
    """Sizes of the runs of rows `produce --every` gives one event time (a run ends when the
    key comes again; without a key each row is its own run)."""
    if index is None:
        return [1] * len(rows)
    sizes: list[int] = []
    seen: set[str] = set()
    for row in rows:
        if row.fields[index] in seen or not sizes:
            sizes.append(0)
            seen = set()
        seen.add(row.fields[index])
        sizes[-1] += 1
    return sizes


def rows_per_window(values: list[str], fmt: str, window_s: int) -> list[int]:
    """Rows in each window of the time column's values."""
    stamps = [_epoch_s(v, fmt) for v in values if v != ""]
    return list(Counter(int(s // window_s) for s in stamps).values())


def _epoch_s(text: str, fmt: str) -> float:
    if fmt == "iso8601":
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return float(text) / (1000 if fmt == "epoch_ms" else 1)


def slug(text: str) -> str:
    """A name or topic from a file name: letters, digits, dot, dash, underscore."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").lower()
    return cleaned or "csv-stream"


def infer_schema(
    table: CsvTable,
    *,
    label: str | None,
    time: str | None = None,
    key: str | None = None,
    name: str = "csv-stream",
) -> Draft:
    """A schema draft from the rows with the right field count; raises InputError if unusable."""
    if table.header and all(_parses(float, n) for n in table.names):
        raise InputError("the first row looks like data, not a header: pass --no-header")
    rows = table.fitting_rows()
    if not rows:
        raise InputError(f"no row has the {len(table.names)} fields of the first row")
    columns = {n: [r.fields[i] for r in rows] for i, n in enumerate(table.names)}
    label = label or _guess_label(columns)
    for flag, col in (("--label", label), ("--time", time), ("--key", key)):
        if col is not None and col not in columns:
            raise InputError(f"{flag} {col!r} is not a column; columns: {', '.join(columns)}")
    if key is not None and key in (label, time):
        raise InputError(f"--key {key!r} cannot also be the label or the time column")
    label_entry, label_guess = infer_label(label, columns[label])
    guesses = [label_guess]
    schema: dict[str, Any] = {"name": slug(name), "topic": slug(name), "window": "1h"}
    if time is not None:
        fmt, guess = infer_time_format(time, columns[time])
        guesses.append(guess)
        schema["event_time"] = {"field": time, "format": fmt}
        sizes = rows_per_window(columns[time], fmt, 3600)
        timing = "rows per hour of the time column"
    else:
        field = "event_time" if "event_time" not in columns else "event_time_"
        schema["event_time"] = {"field": field, "format": "iso8601"}
        guesses.append(
            Guess(
                field,
                "event time, iso8601",
                "no --time: produce fills it in from --start and --every",
            )
        )
        sizes = rows_per_moment(rows, table.names.index(key) if key else None)
        groups = f"a group ends when {key} repeats" if key else "a row each"
        timing = f"rows per event time of produce --every 1h ({groups})"
    if key is not None:
        schema["key"] = key
    schema["label"] = label_entry
    schema["features"] = []
    for col, values in columns.items():
        if col in (label, time):
            continue
        if len(set(values)) == 1 and col != key:
            guesses.append(Guess(col, "left out", f"always {values[0]!r}: tells the model nothing"))
            continue
        entry, guess = infer_feature(col, values, is_key=col == key)
        schema["features"].append(entry)
        guesses.append(guess)
    schema["row_count"] = {"min": max(1, min(sizes) // 2), "max": max(2, 2 * max(sizes))}
    guesses.append(
        Guess(
            "row_count",
            f"{schema['row_count']['min']}..{schema['row_count']['max']} per 1h window",
            f"{min(sizes)}..{max(sizes)} {timing}, halved and doubled",
        )
    )
    StreamSchema.model_validate(schema)  # a draft the loader would refuse is a bug here
    return Draft(schema, guesses, table.misfit_lines())


def _guess_label(columns: dict[str, list[str]]) -> str:
    for col in columns:
        if col.lower() in ("label", "target", "class", "y", "outcome"):
            return col
    two = [c for c, values in columns.items() if len(set(values)) == 2]
    raise InputError(
        "which column is the label? pass --label COL"
        + (f" (columns with two values: {', '.join(two)})" if two else "")
    )
