"""The registry against a real sqlite MLflow store in a temp dir (no broker, no server)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tasks import aliases, registry, run_logging, versions
from tasks.lineage import Lineage
from tasks.run_logging import RunRef
from tasks.schema import StreamSchema
from tasks.settings import Settings

if TYPE_CHECKING:
    import keras

pytestmark = pytest.mark.integration

SCHEMA = StreamSchema.model_validate(
    {
        "name": "registry-test",
        "topic": "registry-test",
        "description": "A two-feature stream for registry tests.",
        "window": "1h",
        "event_time": {"field": "event_time"},
        "label": {"field": "busy", "classes": [0, 1], "positive": 1},
        "features": [
            {"name": "a", "kind": "numeric", "type": "float"},
            {"name": "b", "kind": "numeric", "type": "float"},
        ],
    }
)
NAME = SCHEMA.name
X = np.random.default_rng(0).random((64, 2)).astype("float32")
Y = (X[:, 0] > 0.5).astype("float32")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sqlite store with its tables created once (migrations take seconds); tests copy it."""
    home = tmp_path_factory.mktemp("template")
    settings = Settings(home=home, mlflow_dir=home / "mlflow")
    registry.connect(settings).search_experiments()
    return home / "mlflow" / "mlflow.db"


@pytest.fixture
def settings(tmp_path: Path, empty_store: Path) -> Settings:
    (tmp_path / "mlflow").mkdir()
    shutil.copy(empty_store, tmp_path / "mlflow" / "mlflow.db")
    return Settings(home=tmp_path, mlflow_dir=tmp_path / "mlflow")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A tiny trained functional model (2 dense layers) with optimizer state."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((2,), name="features")
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
    net = keras.Model(inputs, outputs)
    net.compile(optimizer="adam", loss="binary_crossentropy")
    net.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    return net


def make_lineage(hour: int = 10, parent: str | None = None, **extra: object) -> Lineage:
    fields: dict[str, object] = {
        "parent_version": parent,
        "training_kind": "finetune",
        "window_start": f"2026-01-05T{hour:02d}:00Z",
        "window_end": f"2026-01-05T{hour + 1:02d}:00Z",
        "trained_windows": [f"2026-01-05T{h:02d}:00:00+00:00" for h in range(hour - 3, hour + 1)],
        "offsets": {"registry-test-0": (100, 180), "registry-test-1": (90, 170)},
        "data_hash": "d" * 16,
        "schema_hash": SCHEMA.fingerprint(),
        "seed": 7,
        "trigger": "schedule",
        "holdout_metrics": {"f1": 0.81, "accuracy": 0.9},
        "champion_version": parent,
        "champion_metrics": {"f1": 0.79},
        "gate_decision": "promote",
        "gate_reasons": ("f1 0.81 >= champion 0.79 - 0.02", "above floor 0.5"),
    }
    return Lineage.model_validate(fields | extra)


LogFn = Callable[..., tuple[RunRef, str]]


@pytest.fixture
def log_version(settings: Settings, model: keras.Model) -> LogFn:
    """Log one run with the tiny model and register it; returns (run ref, version)."""

    def log(
        lineage: Lineage | None = None, description: str = "hourly fine-tune"
    ) -> tuple[RunRef, str]:
        lineage = lineage or make_lineage()
        ref = run_logging.log_training_run(
            settings,
            SCHEMA,
            run_name=run_logging.format_run_name(lineage.training_kind, lineage.window_start),
            params={"learning_rate": 1e-3, "epochs": 2},
            metrics={"holdout_f1": 0.81},
            metric_series={"prequential_accuracy": {0: 0.5, 1: 0.7, 2: 0.75}},
            tags={"streamtrain.flow": "finetune"},
            model=model,
            lineage=lineage,
            artifacts={"gate.json": '{"promote": true}', "reports/drift.bin": b"\x00\x01"},
        )
        return ref, versions.register_version(settings, SCHEMA, ref, lineage, description)

    return log


def test_registered_version_shows_lineage_tags_and_description(
    settings: Settings, log_version: LogFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    lineage = make_lineage(parent="3")
    ref, version = log_version(lineage, "fine-tuned on 10:00 from v3")

    assert version == "1"
    # A retried registration of the same run returns its version instead of adding one.
    assert versions.register_version(settings, SCHEMA, ref, lineage, "retry") == "1"
    [info] = versions.list_versions(settings, NAME)
    assert info.description == "fine-tuned on 10:00 from v3"
    assert info.run_id == ref.run_id
    assert info.lineage == lineage
    assert info.tags["lineage.parent_version"] == "3"
    assert info.tags["lineage.window_start"] == "2026-01-05T10:00Z"
    assert info.tags["lineage.trained_windows"] == (
        "2026-01-05T07:00Z..2026-01-05T10:00Z (4 windows)"
    )
    assert info.tags["lineage.offsets"] == "registry-test-0:100-180, registry-test-1:90-170"
    assert info.tags["metrics.holdout.f1"] == "0.81"
    assert info.tags["metrics.champion.f1"] == "0.79"
    assert info.tags["gate.decision"] == "promote"
    assert info.tags["gate.reasons"].startswith("f1 0.81 >= champion")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(ref.run_id)
    assert run.info.run_name == "finetune 2026-01-05T10:00Z"
    assert run.data.tags["lineage.training_kind"] == "finetune"
    assert "from version 3" in run.data.tags["mlflow.note.content"]
    assert run.data.params["learning_rate"] == "0.001"
    series = client.get_metric_history(ref.run_id, "prequential_accuracy")
    assert [(m.step, m.value) for m in series] == [(0, 0.5), (1, 0.7), (2, 0.75)]

    # Artifacts land in the pinned store, not in ./mlruns of the cwd.
    assert not (elsewhere / "mlruns").exists()
    assert list(elsewhere.iterdir()) == []
    root = settings.mlflow_artifacts_dir / NAME
    run_files = root / ref.run_id / "artifacts"
    assert Lineage.model_validate_json((run_files / "lineage.json").read_text()) == lineage
    assert (run_files / "gate.json").read_text() == '{"promote": true}'
    assert (run_files / "reports" / "drift.bin").read_bytes() == b"\x00\x01"
    assert list(root.glob("models/m-*/artifacts/data/model.keras"))


def test_alias_moves_are_recorded_in_order(settings: Settings, log_version: LogFn) -> None:
    _, v1 = log_version()
    _, v2 = log_version(make_lineage(11, "1"), "v2")
    _, v3 = log_version(make_lineage(12, "2"), "v3")

    aliases.promote(settings, NAME, v1, trigger="bootstrap", reasons=["first model"])
    aliases.set_challenger(settings, NAME, v2, trigger="schedule")
    aliases.promote(settings, NAME, v2, trigger="schedule", reasons=["better f1"])
    aliases.set_challenger(settings, NAME, v3, trigger="drift:concept@2026-01-05T12:00Z")
    aliases.promote(settings, NAME, v3, trigger="schedule", reasons=["better f1"])
    aliases.promote(settings, NAME, v3, trigger="schedule", reasons=["no-op"])

    get = aliases.get_alias_version
    assert get(settings, NAME, "champion") == "3"
    assert get(settings, NAME, "previous-champion") == "2"
    assert get(settings, NAME, "challenger") is None  # promoted, so no longer a challenger
    moves = [(m.alias, m.from_version, m.to_version) for m in aliases.alias_history(settings, NAME)]
    assert moves == [
        ("champion", None, "1"),
        ("challenger", None, "2"),
        ("previous-champion", None, "1"),
        ("champion", "1", "2"),
        ("challenger", "2", None),
        ("challenger", None, "3"),
        ("previous-champion", "1", "2"),
        ("champion", "2", "3"),
        ("challenger", "3", None),
    ]
    history = aliases.alias_history(settings, NAME)
    assert [m.seq for m in history] == list(range(1, 10))
    assert history[5].trigger == "drift:concept@2026-01-05T12:00Z"
    assert history[0].reasons == ("first model",) and history[0].who == "streamtrain"
    assert {v.version: v.aliases for v in versions.list_versions(settings, NAME)} == {
        "1": (),
        "2": ("previous-champion",),
        "3": ("champion",),
    }


def test_rollback_restores_previous_champion_and_records_who_and_why(
    settings: Settings, log_version: LogFn
) -> None:
    _, v1 = log_version()
    _, v2 = log_version(make_lineage(11, "1"), "v2")
    aliases.promote(settings, NAME, v1, trigger="bootstrap", reasons=[])
    aliases.promote(settings, NAME, v2, trigger="schedule", reasons=["better"])

    restored = aliases.rollback(settings, NAME, who="alice", why="live accuracy fell 9 points")

    assert restored == "1"
    assert aliases.get_alias_version(settings, NAME, "champion") == "1"
    assert aliases.get_alias_version(settings, NAME, "previous-champion") is None
    last = aliases.alias_history(settings, NAME)[-2:]
    assert [(m.alias, m.from_version, m.to_version) for m in last] == [
        ("champion", "2", "1"),
        ("previous-champion", "1", None),
    ]
    assert last[0].who == "alice" and last[0].trigger == "rollback"
    assert last[0].reasons == ("live accuracy fell 9 points",)
    [rolled_back] = [v for v in versions.list_versions(settings, NAME) if v.version == "2"]
    assert "by alice: live accuracy fell 9 points" in rolled_back.tags["rolled_back"]
    # A second rollback would bring the bad version back: refused.
    with pytest.raises(registry.NoPreviousChampion, match="no version holds"):
        aliases.rollback(settings, NAME, who="alice", why="again")


def test_rollback_without_previous_champion_is_a_clear_error(
    settings: Settings, log_version: LogFn
) -> None:
    with pytest.raises(registry.NoPreviousChampion, match=r"'previous-champion'.*unset"):
        aliases.rollback(settings, "never-registered", who="bob", why="test")
    _, v1 = log_version()
    aliases.promote(settings, NAME, v1, trigger="bootstrap", reasons=[])
    with pytest.raises(registry.NoPreviousChampion, match=r"champion is 1\)"):
        aliases.rollback(settings, NAME, who="bob", why="test")
    assert aliases.get_alias_version(settings, NAME, "champion") == "1"


def test_load_keras_by_alias_predicts_like_logged_model_and_keeps_optimizer(
    settings: Settings, log_version: LogFn, model: keras.Model
) -> None:
    _, v1 = log_version()
    aliases.promote(settings, NAME, v1, trigger="bootstrap", reasons=[])

    loaded = versions.load_keras(settings, NAME, "champion")

    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), 1e-6)
    steps = int(model.optimizer.iterations)
    assert steps > 0 and int(loaded.optimizer.iterations) == steps
    loaded.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    assert int(loaded.optimizer.iterations) == steps + 4
    served = versions.load_pyfunc(settings, NAME, v1)
    np.testing.assert_allclose(served.predict(X), model.predict(X, verbose=0), 1e-6)
    with pytest.raises(registry.RegistryError, match="no version with alias 'challenger'"):
        versions.load_keras(settings, NAME, "challenger")


def test_find_version_finds_rerun_of_same_window_and_parent_only(
    settings: Settings, log_version: LogFn
) -> None:
    assert (
        versions.find_version(
            settings,
            NAME,
            window_start="2026-01-05T10:00Z",
            parent_version="3",
            training_kind="finetune",
        )
        is None
    )  # the model does not exist yet
    log_version(make_lineage(10, parent="3"))

    def find(window_start: str, parent: str | None, kind: str = "finetune") -> str | None:
        return versions.find_version(
            settings, NAME, window_start=window_start, parent_version=parent, training_kind=kind
        )

    assert find("2026-01-05T10:00:00+00:00", "3") == "1"
    assert find("2026-01-05T10:00Z", "4") is None
    assert find("2026-01-05T10:00Z", None) is None
    assert find("2026-01-05T11:00Z", "3") is None
    assert find("2026-01-05T10:00Z", "3", "retrain") is None


def test_long_reasons_are_truncated_to_fit_one_history_tag(
    settings: Settings, log_version: LogFn
) -> None:
    _, v1 = log_version()
    reasons = ["x" * 9000, "short reason", "é" * 3000]
    aliases.promote(settings, NAME, v1, trigger="schedule", reasons=reasons)

    [move] = aliases.alias_history(settings, NAME)
    assert move.truncated and move.to_version == "1"
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(settings.tracking_uri).get_registered_model(NAME).tags
    assert len(tags["alias_history.000001"]) <= 4000


def test_training_lock_refuses_then_lets_a_waiting_holder_in(settings: Settings) -> None:
    acquired = threading.Event()

    def second_holder() -> None:
        with registry.training_lock(settings, NAME, timeout_s=30):
            acquired.set()

    with registry.training_lock(settings, NAME, timeout_s=1):
        with (
            pytest.raises(registry.LockTimeout, match=r"held by pid \d+"),
            registry.training_lock(settings, NAME, timeout_s=0.2),
        ):
            pass
        waiter = threading.Thread(target=second_holder)
        waiter.start()
        assert not acquired.wait(0.3)  # still waiting while the first holder runs
    assert acquired.wait(10)
    waiter.join(10)
    with registry.training_lock(settings, "other-model", timeout_s=0):
        pass  # locks are per model


def test_gate_audit_recomputes_the_decision_instead_of_trusting_the_recorded_one(
    settings: Settings, log_version: LogFn
) -> None:
    from tests.integration.gate_audit import assert_champion_moved_only_through_the_gate

    rows = {"recent": 40, "long": 200}
    good = {"recent.f1": 0.82, "long.f1": 0.80}
    _, v1 = log_version(make_lineage(10, holdout_metrics=good, holdout_rows=rows))
    aliases.promote(settings, NAME, v1, trigger="test", reasons=["first champion"])
    # Better than v1 on both holdouts: the gate would promote it.
    better = {"recent.f1": 0.84, "long.f1": 0.81}
    _, v2 = log_version(
        make_lineage(
            11,
            "1",
            holdout_metrics=better,
            champion_metrics=good,
            holdout_rows=rows,
            gate_decision="promoted",
        )
    )
    aliases.promote(settings, NAME, v2, trigger="schedule", reasons=["better f1"])
    assert_champion_moved_only_through_the_gate(settings, NAME)

    # Recorded as "promoted", but far worse than its champion: the audit must not believe it.
    worse = {"recent.f1": 0.55, "long.f1": 0.52}
    lineage = make_lineage(
        12,
        "2",
        holdout_metrics=worse,
        champion_metrics=better,
        holdout_rows=rows,
        gate_decision="promoted",
    )
    _, v3 = log_version(lineage)
    aliases.promote(settings, NAME, v3, trigger="schedule", reasons=["by mistake"])
    with pytest.raises(AssertionError, match="the gate refuses"):
        assert_champion_moved_only_through_the_gate(settings, NAME)


def test_many_moves_keep_the_tags_bounded_while_the_full_history_stays_intact(
    settings: Settings, log_version: LogFn
) -> None:
    from mlflow.tracking import MlflowClient

    _, v1 = log_version()
    _, v2 = log_version(make_lineage(11, "1"), "v2")
    promotions = 16  # 31 moves: more than the tags keep
    for i in range(promotions):
        aliases.promote(settings, NAME, (v1, v2)[i % 2], trigger="schedule", reasons=[f"n{i}"])

    history = aliases.alias_history(settings, NAME)
    assert [m.seq for m in history] == list(range(1, 2 * promotions))
    assert [m.reasons for m in history if m.alias == "champion"] == [
        (f"n{i}",) for i in range(promotions)
    ]
    client = MlflowClient(settings.tracking_uri)
    model = client.get_registered_model(NAME)
    kept = sorted(k for k in model.tags if k.startswith("alias_history."))
    assert len(kept) == aliases._HISTORY_KEPT < len(history)
    assert kept[-1] == f"alias_history.{len(history):06d}"  # the newest moves are the ones kept
    assert aliases.recent_alias_moves(settings, NAME) == history[-aliases._HISTORY_KEPT :]
    # Each move is a run of the history experiment, readable in the MLflow UI.
    experiment = client.get_experiment_by_name(aliases.history_experiment(NAME))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == len(history)
    assert {r.info.run_name for r in runs} >= {"champion: 1 -> 2", "previous-champion: - -> 1"}
    # Recovery asks for the moves onto one version without reading the whole history.
    onto_2 = aliases.moves_to(settings, NAME, "2")
    assert onto_2 == [m for m in history if m.to_version == "2"]


def test_moves_kept_only_in_tags_are_archived_before_they_are_trimmed(
    settings: Settings, log_version: LogFn
) -> None:
    """A store from before the archive: its history in tags alone survives the next move."""
    from mlflow.tracking import MlflowClient

    _, v1 = log_version()
    client = MlflowClient(settings.tracking_uri)
    legacy = [
        aliases.AliasMove(n, "2026-01-05T10:00Z", "challenger", None, v1, "old", (f"{n}",), "x")
        for n in range(1, 31)
    ]
    for move in legacy:
        key = f"alias_history.{move.seq:06d}"
        client.set_registered_model_tag(NAME, key, aliases._encode_move(move))
    _, v2 = log_version(make_lineage(11, "1"), "v2")

    aliases.set_challenger(settings, NAME, v2, trigger="schedule")

    history = aliases.alias_history(settings, NAME)
    assert [m.seq for m in history] == list(range(1, 32))
    assert history[:30] == legacy and history[30].to_version == v2
    tags = client.get_registered_model(NAME).tags
    assert len([k for k in tags if k.startswith("alias_history.")]) == aliases._HISTORY_KEPT


def test_the_scorers_alias_poll_fetches_neither_the_model_nor_its_history(
    settings: Settings, log_version: LogFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from tasks.scoring import champion_lookup

    _, v1 = log_version()
    poll = champion_lookup(settings, SCHEMA)
    assert poll() is None  # no champion yet
    aliases.promote(settings, NAME, v1, trigger="bootstrap", reasons=["first"])
    calls: list[str] = []
    for method in ("get_registered_model", "search_runs", "search_registered_models"):
        real = getattr(MlflowClient, method)

        def spy(
            self: MlflowClient,
            *args: object,
            _real: object = real,
            _name: str = method,
            **kwargs: object,
        ) -> object:
            calls.append(_name)
            return _real(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(MlflowClient, method, spy)

    assert poll() == v1
    assert calls == []
    assert champion_lookup(settings, SCHEMA.model_copy(update={"name": "unknown"}))() is None
