"""Security basics: nothing read is executed, models come from the registry, secrets stay
secret, and the embedded broker listens on loopback only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tasks.broker_config import cluster_nodes, render_server_properties, single_node
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("tasks", "flows") for p in (ROOT / folder).rglob("*.py"))
SECRET = "s3cr3t-Pa55-for-tests"

# Modules whose import alone means "deserialise code or objects".
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRIBUTES = {
    "read_pickle",  # pandas
    "unsafe_load",  # yaml
    "full_load",  # yaml
    "load_all",  # yaml (unsafe loader by default in old versions)
}


def parsed() -> list[tuple[Path, ast.AST]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in SOURCES]


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def test_the_sources_are_scanned() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"tasks/stream.py", "tasks/registry.py", "tasks/scoring.py", "flows/cli.py"} <= names


def test_nothing_is_unpickled_evaluated_or_executed() -> None:
    found = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [where(path, node) for a in node.names if a.name in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
                found.append(where(path, node))
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in UNSAFE_CALLS:
                    found.append(where(path, node))
                if isinstance(func, ast.Attribute) and func.attr in UNSAFE_ATTRIBUTES:
                    found.append(where(path, node))
                for keyword in node.keywords:  # np.load(allow_pickle=True), keras safe_mode=False
                    unsafe = {"allow_pickle": True, "safe_mode": False}
                    if (
                        keyword.arg in unsafe
                        and isinstance(keyword.value, ast.Constant)
                        and keyword.value.value == unsafe[keyword.arg]
                    ):
                        found.append(where(path, node))
    assert found == []


def test_yaml_is_only_read_with_the_safe_loader() -> None:
    calls = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "yaml"
                and node.func.attr.startswith("load")
            ):
                calls.append(where(path, node))
    assert calls == []  # yaml.load(...) in any form: use yaml.safe_load


def test_records_from_kafka_are_decoded_as_json_only() -> None:
    """Deserialisers on the consumers would run on untrusted bytes: there are none."""
    for path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in {
                "value_deserializer",
                "key_deserializer",
            }:
                pytest.fail(f"{where(path, node)} sets a Kafka deserializer")


def test_models_are_loaded_only_from_the_registry() -> None:
    """Every model load goes through tasks/versions.py with a models:/ URI."""
    loads = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load_model"
            ):
                loads.append((path.relative_to(ROOT).as_posix(), ast.unparse(node)))
            if isinstance(node, ast.ImportFrom) and node.module == "tasks.model":
                imported = {a.name for a in node.names}
                assert "load_model" not in imported, where(path, node)
    registry = [call for file, call in loads if file == "tasks/versions.py"]
    elsewhere = [(file, call) for file, call in loads if file != "tasks/versions.py"]
    assert registry and all("model_uri(" in call for call in registry), registry
    # tasks/model.py keeps a local .keras loader for tests and tools, never used by the pipeline
    assert elsewhere in ([], [("tasks/model.py", "keras.saving.load_model(Path(path))")])


def test_registry_uris_name_a_model_version_or_alias() -> None:
    from tasks.versions import model_uri

    assert model_uri("drone-busy", 3) == "models:/drone-busy/3"
    assert model_uri("drone-busy", "champion") == "models:/drone-busy@champion"


# --- secrets ------------------------------------------------------------------------------------


def test_sasl_password_is_masked_everywhere_but_the_kafka_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMTRAIN_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMTRAIN_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAMTRAIN_KAFKA_SASL_USERNAME", "streamtrain")
    monkeypatch.setenv("STREAMTRAIN_KAFKA_SASL_PASSWORD", SECRET)
    settings = Settings()
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        str(settings.model_dump(mode="json")),
        f"{settings}",
    ]
    assert all(SECRET not in text for text in shown)
    assert settings.kafka_client_config()["sasl_plain_password"] == SECRET


def test_every_use_of_the_password_unwraps_it_in_one_place() -> None:
    uses = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "get_secret_value":
                uses.append(where(path, node).split(":")[0])
    assert uses == ["tasks/settings.py"]  # kafka_client_config, which only the clients use


def test_secret_settings_are_secret_strings() -> None:
    """Anything named like a credential is a SecretStr, so it prints as '**********'."""
    words = ("password", "secret", "token", "api_key", "credential")
    risky = [
        name
        for name, info in Settings.model_fields.items()
        if any(word in name for word in words) and "SecretStr" not in str(info.annotation)
    ]
    assert risky == []


# --- loopback -----------------------------------------------------------------------------------


def test_embedded_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.kafka_host == "127.0.0.1"
    for node in (single_node(settings), *cluster_nodes(settings)):
        text = render_server_properties(node)
        props = dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
        for key in ("listeners", "advertised.listeners"):
            hosts = [
                endpoint.split("://", 1)[1].rsplit(":", 1)[0] for endpoint in props[key].split(",")
            ]
            assert hosts and set(hosts) == {"127.0.0.1"}, (key, props[key])
        voters = props["controller.quorum.voters"].split(",")
        assert all(v.split("@", 1)[1].startswith("127.0.0.1:") for v in voters)
        assert "0.0.0.0" not in text
