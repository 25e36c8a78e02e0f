"""Aliases and their history: which version serves, which is the candidate, which is the way back.

The aliases `champion`, `challenger` and `previous-champion` say which version does what; each
alias move is kept as a run of the model's history experiment (the newest also in the
registered model's tags and description) because MLflow keeps no history of them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.registry import (
    NONE,
    NoPreviousChampion,
    connect,
    ensure_experiment,
    file_lock,
    iso_utc,
    lock_dir,
    registered_model,
)
from tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.tracking import MlflowClient


CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)
HISTORY_PREFIX = "alias_history."
# registered_model_tags.value is VARCHAR(5000) on MySQL/PostgreSQL (sqlite ignores lengths and
# MLflow's own check allows 100,000), so a history entry stays well below 5000 characters.
_HISTORY_ENTRY_LIMIT = 4000
_HISTORY_KEPT = 20  # newest moves kept in the registered model's tags; all are archived as runs
_MOVE_TAG = "alias_move."  # tags of an archived move's run
_HISTORY_HEADING = "## Recent alias moves"
_DESCRIPTION_LIMIT = 4900  # registered_models.description is VARCHAR(5000)


@dataclass(frozen=True)
class AliasMove:
    """One recorded move of an alias (MLflow itself keeps no alias history)."""

    seq: int
    at: str
    alias: str
    from_version: str | None
    to_version: str | None
    trigger: str
    reasons: tuple[str, ...]
    who: str
    truncated: bool = False


def aliases_of(registered: RegisteredModel | None) -> dict[str, str]:
    """Alias -> version as text (the sqlite store gives ints, REST gives strings)."""
    if registered is None:
        return {}
    return {alias: str(version) for alias, version in registered.aliases.items()}


def get_alias_version(settings: Settings, name: str, alias: str) -> str | None:
    """The version holding an alias, or None (also when the model does not exist yet).

    Asks for that one alias, not for the registered model with all its tags: the scorer polls
    this every few seconds.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = connect(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc.message)
        ):
            return None
        raise
    return str(found.version)


def history_experiment(name: str) -> str:
    """The experiment that keeps every alias move of a model, one run per move."""
    return f"{name} alias history"


class _AliasSession:
    """Alias moves of one model under its alias lock; each move is recorded as it happens.

    The full history grows as runs of the model's history experiment (one per move); the
    registered model's tags keep only the newest `_HISTORY_KEPT` moves, so reading the model
    stays cheap however long it has been promoted.
    """

    def __init__(self, settings: Settings, client: MlflowClient, name: str) -> None:
        self.settings, self.client, self.name = settings, client, name
        registered = registered_model(client, name)
        self.aliases = aliases_of(registered)
        self.recent = _read_history(registered)
        self.description = (registered.description or "") if registered is not None else ""
        self.history_id = _history_experiment_id(client, name)
        archived = _newest_archived_seq(client, self.history_id)
        # Moves only in tags (a store from before the archive) are archived before any trim.
        for move in self.recent:
            if move.seq > archived:
                self.archive(move)
        self.next_seq = max([archived, *(m.seq for m in self.recent)]) + 1
        self.moved = False

    def move(
        self, alias: str, to: str | None, *, trigger: str, reasons: Sequence[str], who: str
    ) -> None:
        before = self.aliases.get(alias)
        if before == to:
            return
        if to is None:
            self.client.delete_registered_model_alias(self.name, alias)
            self.aliases.pop(alias, None)
        else:
            self.client.set_registered_model_alias(self.name, alias, to)
            self.aliases[alias] = to
        record = AliasMove(
            seq=self.next_seq,
            at=iso_utc(datetime.now(UTC).replace(microsecond=0)),
            alias=alias,
            from_version=before,
            to_version=to,
            trigger=trigger,
            reasons=tuple(reasons),
            who=who,
        )
        # The archive first: a crash before the tag loses nothing, and next_seq sees the run.
        self.archive(record)
        key = f"{HISTORY_PREFIX}{record.seq:06d}"
        self.client.set_registered_model_tag(self.name, key, _encode_move(record))
        self.recent.append(record)
        self.next_seq += 1
        self.moved = True

    def archive(self, move: AliasMove) -> None:
        if self.history_id is None:
            self.history_id = ensure_experiment(self.settings, history_experiment(self.name))
        _archive_move(self.client, self.history_id, self.name, move)

    def trim(self) -> None:
        """Drop the tags of all but the newest moves (they stay in the archive)."""
        for move in sorted(self.recent, key=lambda m: m.seq)[:-_HISTORY_KEPT]:
            self.client.delete_registered_model_tag(self.name, f"{HISTORY_PREFIX}{move.seq:06d}")
        self.recent = sorted(self.recent, key=lambda m: m.seq)[-_HISTORY_KEPT:]

    def describe(self) -> None:
        """Show the newest moves as a table in the registered model's description."""
        text = describe_with_history(self.description, self.name, self.recent)
        if text != self.description:
            self.client.update_registered_model(self.name, description=text)
            self.description = text


@contextlib.contextmanager
def _alias_session(settings: Settings, name: str) -> Iterator[_AliasSession]:
    # Alias moves read, then write: the lock keeps two movers on this machine from interleaving.
    with file_lock(lock_dir(settings) / f"{name}.aliases.lock", 30.0, "alias lock"):
        session = _AliasSession(settings, connect(settings), name)
        yield session
        if session.moved or len(session.recent) > _HISTORY_KEPT:
            session.trim()
            session.describe()


def promote(
    settings: Settings,
    name: str,
    version: str | int,
    *,
    trigger: str,
    reasons: Sequence[str],
    who: str = "streamtrain",
) -> None:
    """Make `version` champion; the old champion becomes previous-champion. No-op if already."""
    with _alias_session(settings, name) as session:
        _promote(session, str(version), trigger=trigger, reasons=reasons, who=who)


def challenge(
    settings: Settings,
    name: str,
    version: str | int,
    *,
    promote: bool,
    trigger: str,
    reasons: Sequence[str],
    who: str = "streamtrain",
) -> None:
    """A gate's moves in one alias session: `version` becomes challenger, then champion if
    `promote`; the same moves as `set_challenger` then `promote`, with one description update."""
    with _alias_session(settings, name) as session:
        session.move(CHALLENGER, str(version), trigger=trigger, reasons=reasons, who=who)
        if promote:
            _promote(session, str(version), trigger=trigger, reasons=reasons, who=who)


def _promote(
    session: _AliasSession, version: str, *, trigger: str, reasons: Sequence[str], who: str
) -> None:
    old = session.aliases.get(CHAMPION)
    if old == version:
        return
    if old is not None:
        session.move(PREVIOUS_CHAMPION, old, trigger=trigger, reasons=reasons, who=who)
    session.move(CHAMPION, version, trigger=trigger, reasons=reasons, who=who)
    if session.aliases.get(CHALLENGER) == version:
        session.move(CHALLENGER, None, trigger=trigger, reasons=["promoted"], who=who)


def set_challenger(
    settings: Settings,
    name: str,
    version: str | int,
    *,
    trigger: str,
    reasons: Sequence[str] = (),
    who: str = "streamtrain",
) -> None:
    """Point `challenger` at the latest candidate version."""
    with _alias_session(settings, name) as session:
        session.move(CHALLENGER, str(version), trigger=trigger, reasons=reasons, who=who)


def rollback(settings: Settings, name: str, *, who: str, why: str) -> str:
    """Give `champion` back to previous-champion (which is then cleared); returns that version."""
    with _alias_session(settings, name) as session:
        previous = session.aliases.get(PREVIOUS_CHAMPION)
        current = session.aliases.get(CHAMPION)
        if previous is None:
            raise NoPreviousChampion(
                f"cannot roll back model {name!r}: no version holds the "
                f"'{PREVIOUS_CHAMPION}' alias (champion is {current or 'unset'}); "
                "promote a version explicitly instead"
            )
        session.move(CHAMPION, previous, trigger="rollback", reasons=[why], who=who)
        # Cleared, so that a second rollback cannot bring back the version just rolled back.
        done = f"version {previous} restored as champion"
        session.move(PREVIOUS_CHAMPION, None, trigger="rollback", reasons=[done], who=who)
        if current is not None:
            note = f"{iso_utc(datetime.now(UTC).replace(microsecond=0))} by {who}: {why}"
            session.client.set_model_version_tag(name, current, "rolled_back", note)
        return previous


def alias_history(settings: Settings, name: str) -> list[AliasMove]:
    """Every recorded alias move of a model, oldest first (the archive and the newest tags)."""
    client = connect(settings)
    return _merged(_archived_moves(client, name), _read_history(registered_model(client, name)))


def recent_alias_moves(settings: Settings, name: str) -> list[AliasMove]:
    """The newest alias moves (at most `_HISTORY_KEPT`), from the registered model's tags."""
    return _read_history(registered_model(connect(settings), name))[-_HISTORY_KEPT:]


def moves_to(settings: Settings, name: str, version: str) -> list[AliasMove]:
    """The recorded moves of any alias onto `version` (one filtered query, not the history)."""
    client = connect(settings)
    recent = [m for m in _read_history(registered_model(client, name)) if m.to_version == version]
    return _merged(_archived_moves(client, name, f"tags.`{_MOVE_TAG}to` = '{version}'"), recent)


def describe_with_history(description: str, name: str, moves: Sequence[AliasMove]) -> str:
    """The model's description with its part about alias moves replaced by the newest ones.

    Markdown, as the MLflow UI renders it; it stays below the registry's 5000 characters by
    dropping the oldest rows.
    """
    base = description.split(_HISTORY_HEADING)[0].rstrip()
    intro = (
        f"{_HISTORY_HEADING}\n\nNewest first. Every move is kept as a run of the experiment "
        f"'{history_experiment(name)}' and listed by `streamtrain model history`.\n\n"
        "| when | alias | version | from | who | why |\n|---|---|---|---|---|---|\n"
    )
    rows = [_history_row(m) for m in sorted(moves, key=lambda m: m.seq, reverse=True)]
    while rows and len(base) + len(intro) + sum(map(len, rows)) + 2 > _DESCRIPTION_LIMIT:
        rows.pop()
    return f"{base}\n\n{intro}{''.join(rows)}".strip() if rows else base


def _history_row(move: AliasMove) -> str:
    why = "; ".join((move.trigger, *move.reasons))
    cells = [
        move.at,
        move.alias,
        move.to_version or "(cleared)",
        move.from_version or "-",
        move.who[:40],
        why if len(why) <= 120 else why[:117] + "...",
    ]
    return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |\n"


def _merged(archived: Iterable[AliasMove], tagged: Iterable[AliasMove]) -> list[AliasMove]:
    by_seq = {m.seq: m for m in tagged} | {m.seq: m for m in archived}
    return [by_seq[seq] for seq in sorted(by_seq)]


def _read_history(registered: RegisteredModel | None) -> list[AliasMove]:
    tags = registered.tags if registered is not None else {}
    moves = [
        _decode_move(int(key.removeprefix(HISTORY_PREFIX)), value)
        for key, value in tags.items()
        if key.startswith(HISTORY_PREFIX)
    ]
    return sorted(moves, key=lambda m: m.seq)


def _archive_move(client: MlflowClient, experiment_id: str, name: str, move: AliasMove) -> None:
    """One finished run per move: searchable by alias, version and who in the MLflow UI."""
    tags = {
        f"{_MOVE_TAG}seq": f"{move.seq:010d}",  # zero-padded: ordered as text by search_runs
        f"{_MOVE_TAG}at": move.at,
        f"{_MOVE_TAG}alias": move.alias,
        f"{_MOVE_TAG}from": move.from_version or NONE,
        f"{_MOVE_TAG}to": move.to_version or NONE,
        f"{_MOVE_TAG}trigger": move.trigger[:500],
        f"{_MOVE_TAG}who": move.who[:200],
        f"{_MOVE_TAG}reasons": "; ".join(move.reasons)[:1000],
        f"{_MOVE_TAG}json": _encode_move(move),
        "streamtrain.model": name,
    }
    run_name = f"{move.alias}: {move.from_version or '-'} -> {move.to_version or '-'}"
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    client.set_terminated(run.info.run_id)


def _history_experiment_id(client: MlflowClient, name: str) -> str | None:
    experiment = client.get_experiment_by_name(history_experiment(name))
    return None if experiment is None else str(experiment.experiment_id)


def _newest_archived_seq(client: MlflowClient, experiment_id: str | None) -> int:
    if experiment_id is None:
        return 0
    runs = client.search_runs(
        [experiment_id], max_results=1, order_by=[f"tags.`{_MOVE_TAG}seq` DESC"]
    )
    return int(runs[0].data.tags[f"{_MOVE_TAG}seq"]) if runs else 0


def _archived_moves(client: MlflowClient, name: str, filter_string: str = "") -> list[AliasMove]:
    experiment_id = _history_experiment_id(client, name)
    if experiment_id is None:
        return []
    moves, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=1000, page_token=token
        )
        moves += [
            _decode_move(int(run.data.tags[f"{_MOVE_TAG}seq"]), run.data.tags[f"{_MOVE_TAG}json"])
            for run in page
        ]
        token = page.token
        if not token:
            return moves


def _encode_move(move: AliasMove) -> str:
    """Compact JSON within the tag limit: the longest reasons are shortened first."""
    reasons = list(move.reasons)
    truncated = False
    while True:
        entry: dict[str, Any] = {
            "at": move.at,
            "alias": move.alias,
            "from": move.from_version,
            "to": move.to_version,
            "trigger": move.trigger[:500],
            "reasons": reasons,
            "who": move.who[:200],
        }
        if truncated or len(move.trigger) > 500 or len(move.who) > 200:
            entry["truncated"] = True
        text = json.dumps(entry, separators=(",", ":"))  # ASCII only: characters == bytes
        if len(text) <= _HISTORY_ENTRY_LIMIT:
            return text
        truncated = True
        longest = max(range(len(reasons)), key=lambda i: len(reasons[i]))
        if len(reasons[longest]) > 40:
            reasons[longest] = reasons[longest][: len(reasons[longest]) // 2] + "..."
        else:
            reasons.pop()


def _decode_move(seq: int, text: str) -> AliasMove:
    entry = json.loads(text)
    return AliasMove(
        seq=seq,
        at=entry["at"],
        alias=entry["alias"],
        from_version=entry.get("from"),
        to_version=entry.get("to"),
        trigger=entry.get("trigger", ""),
        reasons=tuple(entry.get("reasons", ())),
        who=entry.get("who", ""),
        truncated=bool(entry.get("truncated", False)),
    )
