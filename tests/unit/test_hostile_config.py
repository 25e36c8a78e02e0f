"""Hostile schema files and settings are refused at start, with one clear line, not a traceback."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from tasks.schema import SchemaError, load_schema
from tasks.settings import (
    Settings,
    SettingsError,
    describe_settings_error,
    mask_url,
    unknown_environment,
)

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = ROOT / ".venv" / "bin" / "streamtrain"
GOOD = """
name: s
topic: t
window: 1h
event_time: {field: ts, format: epoch_ms}
label: {field: y, classes: [ok, bad], positive: bad}
features:
  - {name: x, kind: numeric, type: float, min: 0, max: 10}
  - {name: c, kind: categorical, type: int, values: [1, 2]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(SchemaError) as caught:
        load_schema(write(tmp_path, text))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'hostile.yaml'}: ")
    return message


def test_the_good_schema_loads(tmp_path: Path) -> None:
    assert load_schema(write(tmp_path, GOOD)).label.classes == ["ok", "bad"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # YAML 1.1 booleans: [no, yes] would silently become [0, 1]
        ("classes: [ok, bad], positive: bad", "classes: [no, yes], positive: yes", "quote them"),
        ("values: [1, 2]", "values: [on, off]", "YAML booleans"),
        ("min: 0, max: 10", "min: false, max: 10", "YAML booleans"),
        # wrong types
        ("window: 1h", "window: [1, h]", "window"),
        ("min: 0, max: 10", "min: zero, max: 10", "features.x.min"),
        ("name: s", "name: {a: 1}", "name"),
        ("kind: numeric, type: float", "kind: numeric, type: decimal", "features.x.type"),
        # unknown fields
        ("name: s", "name: s\nowner: me", "owner: Extra inputs are not permitted"),
        ("kind: numeric,", "kind: numeric, unit: C,", "features.x.unit"),
        # impossible values
        ("window: 1h", "window: -1h", "is not a duration"),
        ("window: 1h", "window: -3600", "positive divisor of one day"),
        ("window: 1h", "window: 7m", "positive divisor of one day"),
        ("min: 0, max: 10", "min: 10, max: 0", "min (10.0) is greater than max (0.0)"),
        ("min: 0, max: 10", "min: .nan, max: 10", "finite number"),
        ("min: 0, max: 10", "min: -.inf, max: 10", "finite number"),
        ("positive: bad", "positive: maybe", "positive class 'maybe' is not one of"),
        ("classes: [ok, bad]", "classes: [ok, ok, bad]", "exactly two distinct"),
        ("values: [1, 2]", "values: []", "must not be empty"),
        ("values: [1, 2]", "values: [a, b]", "not of type 'int'"),
    ],
)
def test_hostile_schema_is_refused_naming_the_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    assert message in refused(tmp_path, GOOD.replace(old, new, 1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("row_count: {min: 50, max: 5}", "row_count: min (50) is greater than max (5)"),
        ("row_count: {min: -1}", "row_count.min"),
        ("expectations: [{type: expect_x, kwarg: {}}]", "unknown keys ['kwarg']"),
        ("expectations: [{type: drop_table}]", "is not an expect_... name"),
        ("expectations: [{type: expect_x, kwargs: [1]}]", "kwargs must be a mapping"),
        ("expectations: [[1, 2]]", "expectations.0"),
    ],
)
def test_hostile_row_counts_and_expectations_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    assert message in refused(tmp_path, GOOD + extra + "\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00 not utf-8", "cannot read the schema file"),
        (b"!!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
        (b"- a\n- list\n", "expected a mapping at the top level"),
        (b"name: [unclosed", "not valid YAML"),
    ],
)
def test_unreadable_or_unsafe_schema_files_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(SchemaError, match=r"cannot read|not valid|expected a mapping") as caught:
        load_schema(path)
    assert message in str(caught.value)


def test_a_schema_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read the schema file"):
        load_schema(tmp_path)


# --- settings ----------------------------------------------------------------------------------


def settings_error(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    return describe_settings_error(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_port": 70000}, "STREAMTRAIN_KAFKA_PORT: Input should be less than or equal"),
        ({"kafka_port": 0}, "STREAMTRAIN_KAFKA_PORT"),
        ({"kafka_port": "ninety"}, "STREAMTRAIN_KAFKA_PORT: Input should be a valid integer"),
        ({"allowed_lateness_s": -5}, "STREAMTRAIN_ALLOWED_LATENESS_S"),
        ({"absolute_floor": 1.5}, "STREAMTRAIN_ABSOLUTE_FLOOR"),
        ({"tolerance": -0.1}, "STREAMTRAIN_TOLERANCE"),
        ({"max_failing_share": 2}, "STREAMTRAIN_MAX_FAILING_SHARE"),
        ({"confidence": 1.0}, "STREAMTRAIN_CONFIDENCE"),
        ({"primary_metric": "loss"}, "STREAMTRAIN_PRIMARY_METRIC"),
        ({"holdout_hours": 24 * 14}, "nothing would be left to train on"),
        ({"recent_holdout_hours": 72}, "must not exceed long_holdout_hours"),
        ({"psi_mild": 0.5}, "psi_mild must be below psi_severe"),
        ({"mlflow_port": 4200}, "mlflow_port and prefect_port are both 4200"),
        ({"kafka_port": 5000}, "kafka_port and mlflow_port are both 5000"),
        ({"kafka_port": 65535}, "kafka_controller_port (65536) is above 65535"),
        ({"retrian_days": 3}, "retrian_days: Extra inputs are not permitted"),
        ({"kafka_bootstrap_servers": 9092}, "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_hostile_settings_are_refused_naming_the_variable(
    values: dict[str, object], message: str
) -> None:
    assert message in settings_error(**values)


def test_lateness_longer_than_the_window_is_refused() -> None:
    Settings(allowed_lateness_s=3600).check_window(timedelta(hours=1))
    with pytest.raises(SettingsError, match=r"STREAMTRAIN_ALLOWED_LATENESS_S \(3601 s\)"):
        Settings(allowed_lateness_s=3601).check_window(timedelta(hours=1))


def test_unknown_streamtrain_variables_are_refused_with_a_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert unknown_environment(["STREAMTRAIN_ROOT", "STREAMTRAIN_SCHEMA", "PATH"]) == []
    assert unknown_environment(["streamtrain_kafka_port", "KAFKA_BOOTSTRAP_SERVERS"]) == []
    (message,) = unknown_environment(["STREAMTRAIN_ALLOWED_LATENES_S"])
    assert "did you mean STREAMTRAIN_ALLOWED_LATENESS_S?" in message
    monkeypatch.setenv("STREAMTRAIN_SCHEMA_PATH", "x.yaml")  # the variable is STREAMTRAIN_SCHEMA
    assert "unknown setting STREAMTRAIN_SCHEMA_PATH" in settings_error()


def test_credentials_in_urls_are_masked_in_repr() -> None:
    assert mask_url("https://bob:hunter2@mlflow.example/") == "https://***@mlflow.example/"
    assert mask_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    settings = Settings(
        mlflow_tracking_uri="https://bob:hunter2@mlflow.example/",
        prefect_api_url="http://ann:token-xyz@127.0.0.1:4200/api",
    )
    shown = repr(settings) + str(settings)
    assert "hunter2" not in shown and "token-xyz" not in shown
    assert settings.tracking_uri == "https://bob:hunter2@mlflow.example/"  # the client gets it


# --- the command line -----------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def assert_one_line(output: str, *needles: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], output


@pytest.mark.parametrize("command", [["finetune", "--hour", "2026-01-05T10:00Z"], ["report"]])
def test_cli_refuses_a_bad_schema_in_one_line(tmp_path: Path, command: list[str]) -> None:
    bad = write(tmp_path, GOOD.replace("positive: bad", "positive: yes"))
    code, output = invoke("--schema", str(bad), *command)
    assert code == 2
    assert_one_line(output, str(bad), "label.positive", "quote them")


def test_cli_refuses_a_bad_setting_in_one_line() -> None:
    code, output = invoke("kafka", "status", env={"STREAMTRAIN_KAFKA_PORT": "99999"})
    assert code == 2
    assert_one_line(output, "invalid settings: STREAMTRAIN_KAFKA_PORT")


def test_cli_refuses_a_setting_that_is_not_json_in_one_line() -> None:
    code, output = invoke("kafka", "status", env={"STREAMTRAIN_HIDDEN_UNITS": "32 and 16"})
    assert code == 2
    assert_one_line(output, 'invalid settings: error parsing value for field "hidden_units"')


def test_cli_refuses_lateness_longer_than_the_window() -> None:
    env = {"STREAMTRAIN_ALLOWED_LATENESS_S": "7200"}
    code, output = invoke("finetune", "--hour", "2026-01-05T10:00Z", env=env)
    assert code == 2
    assert_one_line(output, "STREAMTRAIN_ALLOWED_LATENESS_S (7200 s)")


def test_installed_command_refuses_bad_input_without_a_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("classes: [ok, bad], positive: bad", "classes: [no, yes]"))
    for args, env_extra, needle in [
        (["--schema", str(bad), "finetune", "--hour", "2026-01-05T10:00Z"], {}, "label.classes"),
        (["kafka", "status"], {"STREAMTRAIN_TOLERANCE": "-1"}, "STREAMTRAIN_TOLERANCE"),
    ]:
        done = subprocess.run(
            [str(STREAMTRAIN), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env_extra},
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert_one_line(done.stderr, needle)


def test_a_held_training_lock_is_reported_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from flows.cli import expected_errors
    from tasks.registry import LockTimeout

    message = "training lock m.train.lock is held by pid 42 since 2026-01-05T10:00Z; gave up"
    with pytest.raises(typer.Exit) as caught, expected_errors():
        raise LockTimeout(message)
    assert caught.value.exit_code == 1
    assert_one_line(capsys.readouterr().err, message)


def test_only_the_projects_input_errors_exit_2_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    from flows.cli import expected_errors
    from tasks.windowing import parse_instant

    with pytest.raises(typer.Exit) as caught, expected_errors():
        parse_instant("yesterday at ten")
    assert caught.value.exit_code == 2
    assert_one_line(capsys.readouterr().err, "'yesterday at ten' is not an ISO 8601 time")


def test_any_other_value_error_is_a_bug_and_keeps_its_traceback() -> None:
    import numpy as np

    from flows.cli import expected_errors

    with pytest.raises(ValueError, match="could not be broadcast"), expected_errors():
        np.zeros(3) + np.zeros(2)  # a bug deep in the numbers, not bad input
