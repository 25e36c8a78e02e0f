"""The input example logged beside each model: a few training rows in the model's own input
format (one (n, 1) array per feature), so MLflow's model page shows what the model takes.

`run_logging.log_training_run` passes `input_example(...)` to `log_model` after
`allow_input_examples()`, which works around two gaps of the pinned MLflow's Keras flavor.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from tasks.schema import StreamSchema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

EXAMPLE_ROWS = 5


def input_example(
    schema: StreamSchema, rows: pd.DataFrame | None, count: int = EXAMPLE_ROWS
) -> dict[str, np.ndarray] | None:
    """The first `count` rows as the model's inputs, typed as training feeds them (None
    without rows, or when a feature column is missing)."""
    if rows is None or rows.empty or any(f.name not in rows for f in schema.features):
        return None
    from tasks.model import to_arrays

    return to_arrays(schema, rows.head(count))


def allow_input_examples() -> None:
    """Let `mlflow.keras.log_model` save an input example, and keep its failed check quiet.

    MLflow 3.17's Keras flavor writes the example before it creates the model's folder
    (mlflow#16183, open), so the folder is made first here. It then checks the example by
    predicting through pyfunc, which hands string features to Keras 3 as object arrays that
    Keras refuses; the Keras flavor itself (what streamtrain loads) reads the example fine.
    Installed once per process and left in place, so training runs in threads never race.
    """
    import mlflow.keras.save as keras_save

    original = keras_save._save_example
    if getattr(original, "makes_its_folder", False):
        return

    def save_in_existing_folder(mlflow_model: Any, input_example: Any, path: str) -> Any:
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path)

    save_in_existing_folder.makes_its_folder = True  # type: ignore[attr-defined]
    keras_save._save_example = save_in_existing_folder
    logging.getLogger("mlflow.models.model").addFilter(_without_failed_example_check)


def _without_failed_example_check(record: logging.LogRecord) -> bool:
    return "Failed to validate serving input example" not in record.getMessage()
