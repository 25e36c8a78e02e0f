"""One typed settings object for the whole pipeline, read from the environment.

`STREAMTRAIN_*` variables plus the ecosystem's own names (`KAFKA_BOOTSTRAP_SERVERS`,
`MLFLOW_TRACKING_URI`, `PREFECT_API_URL`). Defaults give the embedded local setup.
Reading settings has no side effects: nothing is created at import or construction.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything that is configuration, with the local embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMTRAIN_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    # --- where things live -------------------------------------------------------------
    home: Path = Field(
        default=PROJECT_ROOT / ".streamtrain",
        description="Runtime state (broker data, logs, pid files); git-ignored.",
    )
    schema_path: Path = Field(
        default=PROJECT_ROOT / "schemas" / "drone.yaml",
        validation_alias=AliasChoices("STREAMTRAIN_SCHEMA", "schema_path"),
        description="The stream's schema file.",
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="An existing cluster; when unset the embedded broker is used.",
    )
    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int | None = Field(
        default=None, ge=1, le=65535, description="Defaults to kafka_port + 1."
    )
    kafka_jars_dir: Path = PROJECT_ROOT / "infra" / "kafka" / "libs"
    kafka_heap: str = "512M"
    kafka_start_timeout_s: float = Field(default=60.0, gt=0)
    kafka_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="min.insync.replicas of topics the project creates (unset: the broker's).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_request_timeout_ms: int = Field(default=30000, ge=1000)
    kafka_topic_retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="retention.ms of topics the project creates. Retention follows record "
        "timestamps (event time), so a finite value deletes replayed history; -1 keeps it.",
    )
    dead_letter_topic: str | None = Field(
        default=None, description="Defaults to '<schema topic>.dead-letter'."
    )

    # --- windows -------------------------------------------------------------------------
    allowed_lateness_s: int = Field(
        default=600,
        ge=0,
        description="How far stream time may pass a window's end before it closes.",
    )
    max_clock_skew_s: int = Field(
        default=300,
        ge=0,
        description="How far an event time may lie after its Kafka timestamp before it is "
        "distrusted (the record is then placed by its Kafka timestamp).",
    )

    # --- MLflow / Prefect ------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
    )
    mlflow_dir: Path = PROJECT_ROOT / "mlflow"
    # Exported to MLflow's MLFLOW_HTTP_REQUEST_* for a tracking server: bounded, so an outage
    # fails a run within about a minute rather than MLflow's default several minutes.
    mlflow_http_max_retries: int = Field(default=4, ge=0, le=10)
    mlflow_http_backoff_factor: int = Field(default=1, ge=0)
    mlflow_http_timeout_s: int = Field(default=30, ge=1)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_URL", "prefect_api_url"),
    )

    # --- the local stack (`streamtrain up`) and the hourly schedule -----------------------
    stack_start_timeout_s: float = Field(default=120.0, gt=0)
    live_speedup: float = Field(
        default=60.0, gt=0, description="Simulated seconds per wall second of the live simulator."
    )
    catch_up_max_windows: int = Field(
        default=168,
        ge=1,
        description="Closed windows one scheduled fine-tune run catches up at most (oldest first).",
    )
    window_clock_poll_s: float = Field(default=5.0, gt=0)
    stage_retry_delays_s: tuple[float, ...] = Field(
        default=(2.0, 10.0, 30.0),
        min_length=1,
        description="Seconds before each retry of a step that does I/O (the last one repeats), "
        "the same under Prefect and in a replay; tests shorten them.",
    )

    # --- test hooks ----------------------------------------------------------------------
    fault_kill_at: Literal["after_read", "during_fit", "after_register"] | None = Field(
        default=None,
        description="Test hook (tasks/faults.py): SIGKILL the training run at this stage.",
    )

    # --- determinism ---------------------------------------------------------------------
    seed: int = 7

    # --- the model -----------------------------------------------------------------------
    hidden_units: tuple[int, ...] = (32, 16)
    embedding_dim: int = Field(default=4, ge=1, description="For open-vocabulary categoricals.")
    dropout: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Dropout after each hidden layer: with 5 % label noise a model without it "
        "learns the noise (make bench, section 5: about half a point of accuracy in each "
        "scenario).",
    )
    retrain_learning_rate: float = Field(default=3e-3, gt=0)
    finetune_learning_rate: float = Field(default=1e-3, gt=0)
    retrain_epochs: int = Field(default=20, ge=1)
    finetune_epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)

    # --- training data -------------------------------------------------------------------
    retrain_days: int = Field(default=14, ge=1, description="Training range of a full retrain.")
    holdout_hours: int = Field(
        default=24, ge=1, description="Most recent hours of a retrain range kept for evaluation."
    )
    replay_hours: int = Field(
        default=72, ge=0, description="Recent history sampled into each fine-tune (no forgetting)."
    )
    replay_samples: int = Field(default=400, ge=0)

    # --- validation and drift ------------------------------------------------------------
    max_failing_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of failing rows up to which they are quarantined; beyond, the "
        "window is rejected whole.",
    )
    psi_mild: float = Field(default=0.1, gt=0)
    psi_severe: float = Field(default=0.25, gt=0)
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    drift_min_rows: int = Field(default=50, ge=1)
    drift_recent_hours: int = Field(default=24, ge=1)
    concept_delta: float = Field(default=0.02, ge=0)
    concept_threshold: float = Field(default=60.0, gt=0)
    retrain_on_drift: bool = True
    drift_episode_quiet_hours: int = Field(
        default=168,
        ge=0,
        description="Event-time hours without data drift that end a severe drift episode; a "
        "new episode (and its one retrain) can only start after that. The episode's retrain "
        "moves the reference profile, so calm windows right after it do not mean the drift "
        "is over.",
    )
    alarm_confidence: float = Field(
        default=0.99,
        gt=0.5,
        lt=1.0,
        description="Confidence of the one-sided Wilson bound that compares a window's "
        "accuracy with the serving model's holdout accuracy (tasks/detector.py).",
    )
    alarm_margin: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description="Shortfall below the serving model's holdout accuracy that one window may "
        "show before its accuracy bound alarms: some hours are harder than the average (a "
        "rule that holds one hour a week), so a single window needs a large fall.",
    )
    alarm_pooled_margin: float = Field(
        default=0.08,
        ge=0.0,
        le=1.0,
        description="The same shortfall for the last few windows pooled (slower falls).",
    )
    alarm_pool_windows: int = Field(
        default=4, ge=1, description="Windows pooled by the alarm's second (slow-fall) bound."
    )
    same_change_hours: float = Field(
        default=168.0,
        gt=0,
        description="A fall in accuracy that starts within this many hours of the last "
        "alarmed change is that change showing in other hours or days, and the retrain "
        "learns from the first change on. A week: hourly records cycle through the week, and "
        "a change made on a Monday shows in the weekend's hours five days later.",
    )
    alarm_warm_rows: int = Field(
        default=200,
        ge=1,
        description="Records the model's holdout error weighs in a new Page-Hinkley baseline.",
    )
    recency_half_life_hours: float = Field(
        default=72.0,
        gt=0,
        description="Half-life of the sample weights of retrain and replay rows: recent rows "
        "count more (tasks/plan.py).",
    )
    old_concept_weight: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Rows from before an estimated change, when no model of the new concept "
        "can judge them, weigh this much each and together at most this share of the "
        "post-change rows' weight.",
    )
    replay_new_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Least share of a fine-tune's total sample weight that the window's own "
        "rows carry; the replay is weighted down to leave it.",
    )
    reuse_margin: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="How much better a past champion must score on the newest windows than "
        "both the champion and a fresh fine-tune to be brought back.",
    )
    min_change_rows: int = Field(
        default=30,
        ge=1,
        description="Post-change training rows below which a retrain after an alarm falls "
        "back to the recency-weighted range.",
    )
    min_current_holdout_rows: int = Field(
        default=50,
        ge=1,
        description="Held-out rows since a change needed before a challenger is judged on "
        "them alone: one odd window (a batch of flipped labels) is not yet a new concept.",
    )

    # --- the promotion gate --------------------------------------------------------------
    primary_metric: Literal["accuracy", "f1", "auc"] = "f1"
    absolute_floor: float = Field(default=0.5, ge=0.0, le=1.0)
    tolerance: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="How much worse, on the point estimate, a challenger may be and still be "
        "promoted when the paired interval straddles zero. None by default: at 0.02, hourly "
        "fine-tunes a point worse were promoted one after another and walked a steady model "
        "down (0.4 points of mean accuracy over four weeks in the benchmark's steady stream).",
    )
    recent_holdout_hours: int = Field(default=8, ge=1)
    long_holdout_hours: int = Field(default=48, ge=1)
    bootstrap_samples: int = Field(default=500, ge=50)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    rollback_hours: int = Field(
        default=6, ge=1, description="Hours of live accuracy a new champion is judged on."
    )
    rollback_margin: float = Field(default=0.05, ge=0.0, le=1.0)

    @field_validator("kafka_bootstrap_servers", "mlflow_tracking_uri", "prefect_api_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _check_ports(self) -> Settings:
        if self.psi_mild >= self.psi_severe:
            raise ValueError("psi_mild must be below psi_severe")
        if self.kafka_controller_port is not None and self.kafka_controller_port == self.kafka_port:
            raise ValueError("kafka_controller_port must differ from kafka_port")
        return self

    @model_validator(mode="before")
    @classmethod
    def _known_environment(cls, data: Any) -> Any:
        """A mistyped STREAMTRAIN_* variable would otherwise be ignored without a word."""
        unknown = unknown_environment(os.environ)
        if unknown:
            raise ValueError("; ".join(unknown))
        return data

    @model_validator(mode="after")
    def _possible(self) -> Settings:
        """Combinations that cannot work, refused at start rather than found mid-run."""
        if self.holdout_hours >= self.retrain_days * 24:
            raise ValueError(
                f"holdout_hours ({self.holdout_hours}) must be shorter than the retrain range "
                f"(retrain_days {self.retrain_days} = {self.retrain_days * 24} h): "
                "nothing would be left to train on"
            )
        if self.recent_holdout_hours > self.long_holdout_hours:
            raise ValueError(
                f"recent_holdout_hours ({self.recent_holdout_hours}) must not exceed "
                f"long_holdout_hours ({self.long_holdout_hours})"
            )
        ports = {
            "kafka_port": self.kafka_port,
            "kafka_controller_port": self.controller_port,
            "mlflow_port": self.mlflow_port,
            "prefect_port": self.prefect_port,
        }
        if self.controller_port > 65535:
            raise ValueError(f"kafka_controller_port ({self.controller_port}) is above 65535")
        clashes = sorted(
            f"{a} and {b} are both {ports[a]}"
            for a in ports
            for b in ports
            if a < b and ports[a] == ports[b]
        )
        if clashes:
            raise ValueError("ports must differ: " + "; ".join(clashes))
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """Like pydantic's, with credentials in URLs masked (SecretStr masks the rest)."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) else value

    def check_window(self, window: timedelta) -> None:
        """Refuse settings that do not fit the stream's window length (from its schema)."""
        if self.allowed_lateness_s > window.total_seconds():
            raise SettingsError(
                f"STREAMTRAIN_ALLOWED_LATENESS_S ({self.allowed_lateness_s} s) is longer than "
                f"the schema's window ({window}): a window would stay open for more than a "
                "window after it ends and the hourly cycle would trail by several windows; "
                "lower the lateness or lengthen the window"
            )

    # --- derived values ------------------------------------------------------------------
    @property
    def embedded_kafka(self) -> bool:
        """True when the project runs its own broker (no external cluster configured)."""
        return self.kafka_bootstrap_servers is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def controller_port(self) -> int:
        return self.kafka_controller_port or self.kafka_port + 1

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    def kafka_client_config(self) -> dict[str, object]:
        """Connection options shared by every kafka-python client (security passes through)."""
        config: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": self.kafka_request_timeout_ms,
        }
        if self.kafka_sasl_mechanism:
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            config["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return config


class SettingsError(InputError):
    """Settings that cannot work; the message names the variable and the problem."""


# Read by prefect.yaml (the deployments' working directory), not by the code.
NOT_SETTINGS = frozenset({"STREAMTRAIN_ROOT"})


def environment_names() -> dict[str, str]:
    """Environment variable (upper case) -> field name, for every setting."""
    names: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper(): name for choice in alias.choices if choice != name}
        else:
            names[f"STREAMTRAIN_{name.upper()}"] = name
    return names


def unknown_environment(environ: Iterable[str]) -> list[str]:
    """A message for each STREAMTRAIN_* variable that no setting reads, with a guess."""
    known = environment_names()
    out = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith("STREAMTRAIN_") or upper in known or upper in NOT_SETTINGS:
            continue
        guess = difflib.get_close_matches(upper, list(known), n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        out.append(f"unknown setting {var}{hint}")
    return out


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def mask_url(text: str) -> str:
    """'https://user:pw@host' -> 'https://***@host', for anything printed or logged."""
    return _CREDENTIALS.sub("***@", text)


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad variable (as the user wrote it) and the problem."""
    env = {field: var for var, field in environment_names().items()}
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        where = env.get(field, field)
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "invalid settings: " + "; ".join(problems)


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (CLI options) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


# The settings of the command running in this process (its --schema and every other option),
# for the flow runs it starts: flow parameters stay plain JSON for deployments, so the
# settings travel beside them. A worker's run has none set and reads the environment.
_RUN_SETTINGS: ContextVar[Settings | None] = ContextVar("streamtrain_settings", default=None)


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Inside this block, `current_settings()` is `settings` (the CLI sets it per command)."""
    token = _RUN_SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _RUN_SETTINGS.reset(token)


def current_settings() -> Settings:
    """The settings of this run: the starting command's, else read from the environment."""
    return _RUN_SETTINGS.get() or get_settings()
