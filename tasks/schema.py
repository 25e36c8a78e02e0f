"""The stream's schema: which fields a record has, which is the label, how windows are cut.

Everything downstream (parsing, validation, model inputs, drift checks) is derived from a
`StreamSchema`, so that nothing in the pipeline is specific to one stream.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.errors import InputError

Scalar = int | str
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SchemaError(InputError):
    """A schema file that cannot be used; the message names the file, field and problem."""


class MalformedRecord(ValueError):
    """A record that cannot be read as the schema says (undecodable, missing field, wrong type)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields that really are yes/no; anywhere else a YAML boolean is a mistake.
    _FLAGS: ClassVar[frozenset[str]] = frozenset({"drives_label", "drift_check"})

    @field_validator("*", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, value: object, info: ValidationInfo) -> object:
        """YAML 1.1 reads unquoted yes/no/on/off/true/false as booleans, and pydantic would
        quietly turn them into 1 and 0: `classes: [no, yes]` would become `[0, 1]`."""
        if info.field_name in cls._FLAGS:
            return value
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, bool) for item in items):
            raise ValueError(
                f"{value!r}: unquoted yes/no, on/off and true/false are YAML booleans; "
                "quote them if they are strings, e.g. ['no', 'yes']"
            )
        return value


class FeatureSpec(_Strict):
    """One input feature: its kind decides its preprocessing, its type how it is parsed."""

    name: str
    kind: Literal["categorical", "numeric"]
    type: Literal["int", "float", "string"]
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    values: list[Scalar] | None = Field(
        default=None, description="Closed value set; absent means an open vocabulary."
    )
    drives_label: bool | None = Field(
        default=None, description="Documentation only: whether the label depends on it."
    )
    drift_check: bool = Field(
        default=True,
        description="Compare its distribution with the reference; false for features that "
        "change with the window by construction (hour of day, day of week).",
    )
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.kind == "numeric" and self.type == "string":
            raise ValueError("a numeric feature cannot have type 'string'")
        if self.kind == "numeric" and self.values is not None:
            raise ValueError("'values' is for categorical features; use min/max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.values is not None:
            if not self.values:
                raise ValueError("'values' must not be empty")
            want = str if self.type == "string" else int
            bad = [v for v in self.values if not isinstance(v, want) or isinstance(v, bool)]
            if bad:
                raise ValueError(f"values {bad} are not of type '{self.type}'")
        return self


class LabelSpec(_Strict):
    """The label field and its two classes; `positive` is the class the model predicts."""

    field: str
    classes: list[Scalar]
    positive: Scalar

    @model_validator(mode="after")
    def _binary(self) -> LabelSpec:
        if len(self.classes) != 2 or len(set(self.classes)) != 2:
            raise ValueError("exactly two distinct label classes are supported")
        if self.positive not in self.classes:
            raise ValueError(f"positive class {self.positive!r} is not one of {self.classes}")
        return self

    @property
    def negative(self) -> Scalar:
        return next(c for c in self.classes if c != self.positive)


class EventTimeSpec(_Strict):
    field: str
    format: Literal["iso8601", "epoch_ms", "epoch_s"] = "iso8601"


class RowCountSpec(_Strict):
    """Plausible number of records per window (for validation)."""

    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> RowCountSpec:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class StreamSchema(_Strict):
    """A declared stream of records: topic, windowing, key, label and features."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    window: timedelta = timedelta(hours=1)
    event_time: EventTimeSpec
    key: str | None = None
    label: LabelSpec
    features: list[FeatureSpec]
    row_count: RowCountSpec | None = None
    expectations: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra hand-written expectations (validation)."
    )

    @field_validator("window", mode="before")
    @classmethod
    def _parse_window(cls, value: object) -> object:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError(f"window {value!r} is not a duration like '1h', '30m', '900s'")
            return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
        return value

    @field_validator("expectations")
    @classmethod
    def _expectation_shape(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each entry is {type: expect_..., kwargs: {...}}; GX checks the names when it runs."""
        for i, entry in enumerate(value):
            extra = sorted(set(entry) - {"type", "kwargs"})
            if extra:
                raise ValueError(f"expectations[{i}]: unknown keys {extra} (type, kwargs)")
            kind = entry.get("type")
            if not isinstance(kind, str) or not kind.startswith("expect_"):
                raise ValueError(f"expectations[{i}]: type {kind!r} is not an expect_... name")
            if not isinstance(entry.get("kwargs", {}), dict):
                raise ValueError(f"expectations[{i}]: kwargs must be a mapping")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StreamSchema:
        if self.window <= timedelta(0) or timedelta(days=1) % self.window:
            raise ValueError("window must be a positive divisor of one day (e.g. 1h, 15m)")
        names = [f.name for f in self.features]
        if not names:
            raise ValueError("at least one feature is needed")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names repeat: {dupes}")
        reserved = {self.event_time.field, self.label.field}
        clash = reserved & set(names)
        if clash:
            raise ValueError(f"{sorted(clash)} cannot be both a feature and time/label")
        if self.key is not None and self.key == self.label.field:
            raise ValueError("the key cannot be the label")
        return self

    # --- derived views -------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "categorical"]

    @property
    def numeric_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "numeric"]

    @property
    def window_ms(self) -> int:
        return int(self.window.total_seconds() * 1000)

    @property
    def columns(self) -> list[str]:
        """Columns of a window's DataFrame, in a fixed order."""
        cols = [self.event_time.field]
        if self.key is not None and self.key not in self.feature_names:
            cols.append(self.key)
        return [*cols, *self.feature_names, self.label.field]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def fingerprint(self) -> str:
        """A short hash of the schema's content, recorded in lineage."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def dead_letter_topic(self, override: str | None = None) -> str:
        return override or f"{self.topic}.dead-letter"


def load_schema(path: str | Path) -> StreamSchema:
    """Load and check a schema file; errors name the file, the field and the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"{path}: schema file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read the schema file ({exc})") from None
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: expected a mapping at the top level")
    try:
        return StreamSchema.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(_field_name(raw, err["loc"])) or "(top level)"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise SchemaError(f"{path}: " + "; ".join(problems)) from None


def _field_name(raw: dict[str, Any], loc: tuple[int | str, ...]) -> list[str]:
    """Turn pydantic's location into names a person recognises (features.2 -> features.hour)."""
    out: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            item = node[part]
            label = item.get("name") if isinstance(item, dict) else None
            out.append(str(label) if label else str(part))
            node = item
        else:
            out.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return out


# --- parsing one record ---------------------------------------------------------------------


def parse_event_time(spec: EventTimeSpec, value: object) -> int:
    """Event time as epoch milliseconds (UTC); raises MalformedRecord when unreadable."""
    try:
        if spec.format == "iso8601":
            if not isinstance(value, str):
                raise TypeError
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            return int(stamp.timestamp() * 1000)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TypeError
        millis = value if spec.format == "epoch_ms" else value * 1000
        if abs(millis) > 253402300799999:  # beyond year 9999
            raise ValueError
        return int(millis)
    except (TypeError, ValueError, OverflowError):
        raise MalformedRecord(
            f"field '{spec.field}': {_show(value)} is not a {spec.format} timestamp"
        ) from None


_INT64 = (-(2**63), 2**63 - 1)


def _show(value: object, limit: int = 60) -> str:
    """A value as a reason may quote it: hostile records can hold megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _coerce(name: str, kind: str, value: object) -> Scalar | float:
    # Fast paths for what nearly every record holds (exact types; subclasses such as bool
    # take the checks below). Scorers and reads decode every record, so this is the hot loop.
    kind_of = type(value)
    if kind_of is str and kind == "string":
        return value  # type: ignore[return-value]
    if kind_of is float and kind == "float" and math.isfinite(value):  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind_of is int and kind == "int" and _INT64[0] <= value <= _INT64[1]:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if kind == "string":
        if isinstance(value, str):
            return value
        raise MalformedRecord(f"field '{name}': expected a string, got {type(value).__name__}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedRecord(f"field '{name}': expected a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        raise MalformedRecord(f"field '{name}': {_show(value)} is not a finite number")
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise MalformedRecord(f"field '{name}': expected an integer, got {value}")
        if not _INT64[0] <= value <= _INT64[1]:
            raise MalformedRecord(f"field '{name}': {_show(value)} is not a 64-bit integer")
        return int(value)
    return float(value)


def decode_record(
    schema: StreamSchema, raw: bytes | None, *, require_label: bool = True
) -> dict[str, Any]:
    """Decode a JSON record into typed fields plus `_event_ms`; raise MalformedRecord if not."""
    if raw is None:
        raise MalformedRecord("empty value")
    obj = _parse_json(raw)
    if not isinstance(obj, dict):
        raise MalformedRecord(f"expected a JSON object, got {type(obj).__name__}")
    out: dict[str, Any] = {
        "_event_ms": parse_event_time(schema.event_time, _required(obj, schema.event_time.field))
    }
    out[schema.event_time.field] = obj[schema.event_time.field]
    if schema.key is not None and schema.key not in schema.feature_names:
        key = _required(obj, schema.key)
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise MalformedRecord(f"field '{schema.key}': key must be a string or integer")
        out[schema.key] = key
    for spec in schema.features:
        out[spec.name] = _coerce(spec.name, spec.type, _required(obj, spec.name))
    label = schema.label
    if require_label or label.field in obj:
        value = _required(obj, label.field)
        matches = [c for c in label.classes if c == value and type(c) is type(value)]
        if not matches:
            raise MalformedRecord(
                f"field '{label.field}': {_show(value)} is not one of {label.classes}"
            )
        out[label.field] = matches[0]
    return out


_BEYOND_INT64 = float(2**63)


def _parse_json(raw: bytes) -> Any:
    """orjson (about 4x faster) with the json module's results and reasons.

    orjson refuses NaN, infinities and lone surrogates, and reads integers beyond 64 bits as
    floats; the json module decides those records, so what is malformed, and why, is its call.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    else:
        if not isinstance(obj, dict) or not any(
            type(v) is float and abs(v) >= _BEYOND_INT64 for v in obj.values()
        ):
            return obj
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(f"not JSON: {exc.__class__.__name__}") from None


def _required(obj: dict[str, Any], field: str) -> Any:
    if field not in obj or obj[field] is None:
        raise MalformedRecord(f"missing field '{field}'")
    return obj[field]
