"""Validate a window's rows with Great Expectations before they are used for training.

The suite is generated from the schema (ranges, value sets, label classes, not-null, one row
per key and event time, row count) plus the schema's hand-written expectations. Rows failing a
row-level expectation are quarantined with their reasons; a failing table-level expectation, or
too many failing rows, rejects the whole window.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.schema import StreamSchema

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

EVENT_MS = "_event_ms"
REASONS = "_reasons"
_RESULT_FORMAT: dict[str, Any] = {"result_format": "COMPLETE"}  # index lists name failing rows
_LOCK = threading.Lock()
_YES_NO: dict[str, Any] = {"result_format": "BOOLEAN_ONLY"}
_CHECKPOINTS: dict[str, gx.Checkpoint] = {}
_CONTEXT: list[AbstractDataContext] = []  # the process's ephemeral context, made on first use


@dataclass(frozen=True)
class ValidationOutcome:
    """What validation decided about one window.

    `success`: every expectation held. `rejected`: the window must not be used at all. When
    not rejected, `kept` and `quarantined` together are exactly the input rows.
    """

    success: bool
    rows_checked: int
    kept: pd.DataFrame
    quarantined: pd.DataFrame  # failing rows plus a `_reasons` column (list of strings)
    rejected: bool
    failed_expectations: list[str] = field(default_factory=list)
    failing_rows: dict[str, int | None] = field(default_factory=dict)  # None: table-level
    reasons: list[str] = field(default_factory=list)  # why the window was rejected
    full_result: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A compact, JSON-able account for logs and run records."""
        return {
            "success": self.success,
            "rows": self.rows_checked,
            "kept": len(self.kept),
            "quarantined": len(self.quarantined),
            "rejected": self.rejected,
            "reasons": list(self.reasons),
            "failed_expectations": dict(self.failing_rows),
        }


# --- the suite -------------------------------------------------------------------------------


def build_suite(schema: StreamSchema) -> gx.ExpectationSuite:
    """The expectation suite for `schema`'s windows (not yet added to any context)."""
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=f"{schema.name}-{schema.fingerprint()}",
        expectations=[*_generated(schema), *_hand_written(schema)],
    )


def _generated(schema: StreamSchema) -> list[Expectation]:
    import great_expectations.expectations as gxe

    out: list[Expectation] = [gxe.ExpectColumnValuesToNotBeNull(column=schema.event_time.field)]
    if schema.key is not None:
        if schema.key not in schema.feature_names:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=schema.key))
        out.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=[schema.key, EVENT_MS]))
    else:
        out.append(gxe.ExpectColumnValuesToBeUnique(column=EVENT_MS))
    for spec in schema.features:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=spec.name))
        if spec.values is not None:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=spec.name, value_set=spec.values))
        elif spec.min is not None or spec.max is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=spec.name, min_value=spec.min, max_value=spec.max
                )
            )
    label = schema.label
    out.append(gxe.ExpectColumnValuesToNotBeNull(column=label.field))
    out.append(gxe.ExpectColumnValuesToBeInSet(column=label.field, value_set=label.classes))
    if schema.row_count is not None:
        out.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=schema.row_count.min, max_value=schema.row_count.max
            )
        )
    return out


def _hand_written(schema: StreamSchema) -> list[Expectation]:
    """The schema's `expectations` entries, by GX type name (expect_column_mean_to_be_between)."""
    classes = _expectation_classes()
    out: list[Expectation] = []
    for i, entry in enumerate(schema.expectations):
        kind = entry.get("type")
        if kind not in classes:
            raise ValueError(
                f"schema '{schema.name}': expectations[{i}] has unknown type {kind!r}; "
                "use a Great Expectations name such as 'expect_column_mean_to_be_between'"
            )
        try:
            out.append(classes[kind](**entry.get("kwargs", {})))
        except Exception as exc:  # pydantic errors from GX, with the kwargs that failed
            raise ValueError(
                f"schema '{schema.name}': expectations[{i}] ({kind}) has bad kwargs: {exc}"
            ) from None
    return out


def _expectation_classes() -> dict[str, type[Expectation]]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations import Expectation

    return {
        value.expectation_type: value
        for value in vars(gxe).values()
        if isinstance(value, type)
        and issubclass(value, Expectation)
        and isinstance(getattr(value, "expectation_type", None), str)
    }


# --- running it ------------------------------------------------------------------------------


def validate_window(
    schema: StreamSchema, frame: pd.DataFrame, *, max_failing_share: float
) -> ValidationOutcome:
    """Validate one window's rows; quarantine failing rows or reject the whole window."""
    missing = [c for c in [*schema.columns, EVENT_MS] if c not in frame.columns]
    if missing:
        raise ValueError(f"window frame lacks columns {missing}")
    if frame.empty:  # nothing to train on, nothing wrong with the data
        return ValidationOutcome(True, 0, frame, frame.assign(**{REASONS: []}), False)
    rows = frame.reset_index(drop=True)  # index = row position
    # Most windows are clean: a yes/no pass costs about half of one that names failing rows.
    result = _run(_prepared(schema, detailed=False), rows)
    if not result.success:
        result = _run(_prepared(schema, detailed=True), rows)
    per_row: dict[int, list[str]] = {}
    failing: dict[str, int | None] = {}
    reasons: list[str] = []
    for r in result.results:
        if not r.success:
            _record_failure(r, failing, per_row, reasons)
    bad = sorted(per_row)
    share = len(bad) / len(frame)
    if share > max_failing_share:
        reasons.insert(
            0, f"{len(bad)} of {len(frame)} rows fail ({share:.0%} > {max_failing_share:.0%})"
        )
    failed = np.zeros(len(frame), dtype=bool)
    failed[bad] = True
    quarantined = frame[failed].assign(**{REASONS: [per_row[i] for i in bad]})
    kept = frame.iloc[:0] if reasons else frame[~failed]
    return ValidationOutcome(
        success=bool(result.success),
        rows_checked=len(frame),
        kept=kept,
        quarantined=quarantined,
        rejected=bool(reasons),
        failed_expectations=list(failing),
        failing_rows=failing,
        reasons=reasons,
        full_result=result.to_json_dict(),
    )


def _record_failure(
    r: ExpectationValidationResult,
    failing: dict[str, int | None],
    per_row: dict[int, list[str]],
    reasons: list[str],
) -> None:
    """File one failed expectation under its rows (row-level) or the window (table-level)."""
    config = r.expectation_config
    assert config is not None
    name = describe_expectation(config.type, config.kwargs)
    if r.exception_info and r.exception_info.get("raised_exception"):
        # A broken schema, not bad data: say so loudly rather than reject every window.
        raise RuntimeError(
            f"{name} could not be evaluated: {r.exception_info['exception_message']}"
        )
    indices = r.result.get("unexpected_index_list")
    if indices is not None:
        failing[name] = int(r.result.get("unexpected_count", len(indices)))
        for i in indices:
            per_row.setdefault(int(i), []).append(name)
    else:
        observed = r.result.get("observed_value")
        name = f"{name} (observed {_fmt(observed)})"
        failing[name] = None
        reasons.append(name)


def describe_expectation(kind: str, kwargs: dict[str, Any]) -> str:
    """A short human-readable name: "avg_rating: expect_column_values_to_be_between [1, 5]"."""
    if "column" in kwargs:
        subject = str(kwargs["column"])
    elif "column_list" in kwargs:
        subject = ", ".join(map(str, kwargs["column_list"]))
    elif "column_A" in kwargs:
        subject = f"{kwargs['column_A']}, {kwargs['column_B']}"
    else:
        subject = "table"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        bounds = f" [{_fmt(low)}, {_fmt(high)}]"
    elif low is not None:
        bounds = f" >= {_fmt(low)}"
    elif high is not None:
        bounds = f" <= {_fmt(high)}"
    elif "value_set" in kwargs:
        values = [_fmt(v) for v in kwargs["value_set"]]
        shown = values if len(values) <= 8 else [*values[:7], "..."]
        bounds = " {" + ", ".join(shown) + "}"
    else:
        bounds = ""
    return f"{subject}: {kind}{bounds}"


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "item"):  # numpy scalars
        return _fmt(value.item())
    return str(value)


def _run(checkpoint: gx.Checkpoint, rows: pd.DataFrame) -> ExpectationSuiteValidationResult:
    """Validate `rows` against the checkpoint's suite with GX's validator, as its run does.

    `Checkpoint.run` would first re-check that every object is still the stored one and
    serialise them, then keep every result in the context's store: a quarter of the time of a
    window, and memory that grows with every window in a long-lived process (the trainer).
    """
    from great_expectations.validator.v1_validator import Validator

    (definition,) = checkpoint.validation_definitions
    validator = Validator(
        batch_definition=definition.batch_definition,
        batch_parameters={"dataframe": rows},
        result_format=checkpoint.result_format,
    )
    return validator.validate_expectation_suite(definition.suite)


# --- GX objects, made once per process and schema ----------------------------------------------


def _prepared(schema: StreamSchema, *, detailed: bool = True) -> gx.Checkpoint:
    """The cached checkpoint for `schema` in the process's ephemeral context; `detailed`
    ones list the failing rows, the others only say whether each expectation held."""
    key = f"{schema.fingerprint()}-{'complete' if detailed else 'boolean'}"
    with _LOCK:
        if key not in _CHECKPOINTS:
            if not _CONTEXT:
                _CONTEXT.append(_quiet(_ephemeral_context()))
            _CHECKPOINTS[key] = _add_objects(
                _CONTEXT[0], schema, actions=[], result_format=None if detailed else _YES_NO
            )
        return _CHECKPOINTS[key]


def _ephemeral_context() -> AbstractDataContext:
    import great_expectations as gx

    # Its import resets these: the package to ERROR... and one module to INFO, which then
    # announces the temporary folder of every ephemeral context.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx.get_context(mode="ephemeral")


def _quiet(context: AbstractDataContext) -> AbstractDataContext:
    """No tqdm bars on stderr, no INFO chatter from GX."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return context


def _add_objects(
    context: AbstractDataContext,
    schema: StreamSchema,
    actions: list[Any],
    result_format: dict[str, Any] | None = None,
) -> Any:
    """Data source, dataframe asset, batch definition, suite, validation definition, checkpoint."""
    import great_expectations as gx

    name = f"{schema.name}-{schema.fingerprint()}" + ("-yes-no" if result_format else "")
    source = context.data_sources.add_or_update_pandas(name)
    asset = source.add_dataframe_asset("window")
    batch = asset.add_batch_definition_whole_dataframe("whole-window")
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=name, expectations=[*_generated(schema), *_hand_written(schema)])
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=actions,
            result_format=result_format or _RESULT_FORMAT,
        )
    )


def build_data_docs(schema: StreamSchema, frame: pd.DataFrame, target_dir: Path) -> Path:
    """Validate `frame` in a file context under `target_dir` and render GX's data docs there;
    returns the site's index.html (it persists, unlike an ephemeral context's)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    target_dir.mkdir(parents=True, exist_ok=True)
    context = _quiet(gx.get_context(mode="file", project_root_dir=target_dir))
    checkpoint = _add_objects(context, schema, actions=[UpdateDataDocsAction(name="data-docs")])
    checkpoint.run(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    index = target_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"GX did not write data docs at {index}")
    return index
