"""Hostile records against the real broker: every record is accounted for, nothing crashes.

Property (issue 8): for any batch a producer can send, records used + duplicate + malformed +
late = records produced, and after validation used = kept + quarantined (or the whole window
rejected); everything set aside carries its reason, and the dead letters match.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings

from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.stream import ensure_topic, produce, read_window, window_reader
from tasks.validation import REASONS, validate_window
from tasks.windowing import Window
from tests.integration.helpers import Raw, fresh_schema, read_json
from tests.integration.hostile import BASE, hostile_batch

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
# Every record of a batch counts somewhere in here (see hostile.py for the timestamp range).
SPAN = Window(BASE - 2 * HOUR, BASE + 4 * HOUR)


@pytest.fixture(scope="module")
def broker(kafka_broker: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session broker as an external cluster, with a home of this module's own."""
    return kafka_broker.model_copy(
        update={
            "home": tmp_path_factory.mktemp("hostile"),
            "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
        }
    )


def produce_batch(settings: Settings, records: list[Raw]) -> StreamSchema:
    schema = fresh_schema(prefix="hostile")
    ensure_topic(settings, schema.topic, partitions=2)
    assert produce(settings, schema.topic, records) == len(records)
    return schema


@settings(max_examples=20)
@given(records=hostile_batch())
def test_every_hostile_record_is_used_set_aside_or_late_exactly_once(
    broker: Settings, records: list[Raw]
) -> None:
    schema = produce_batch(broker, records)

    # One read of the whole span, dead letters on.
    span = read_window(broker, schema, SPAN)
    m = span.manifest
    assert m.rows + m.duplicates + m.malformed + m.late == len(records), m.to_dict()
    assert len(m.set_aside) == m.duplicates + m.malformed + m.late
    kinds = {"duplicate", "malformed", "late"}
    assert all(item.reason and item.kind in kinds for item in m.set_aside)
    letters = read_json(broker, schema.dead_letter_topic())
    assert m.dead_lettered == len(letters) == m.malformed + m.late
    assert all(letter["reason"] and letter["kind"] in {"malformed", "late"} for letter in letters)
    sources = {(d["source"]["partition"], d["source"]["offset"]) for d in letters}
    assert len(sources) == len(letters)  # one dead letter per set-aside record

    # Window by window, in reverse order, with one reused reader: the same total.
    total = 0
    with window_reader(broker) as reader:
        for hour in reversed(range(6)):
            window = Window(SPAN.start + hour * HOUR, SPAN.start + (hour + 1) * HOUR)
            part = read_window(broker, schema, window, send_dead_letters=False, reader=reader)
            total += part.manifest.records_read
    assert total == len(records)

    # Validation splits the used rows into kept and quarantined (with reasons), or rejects.
    frame = span.frame
    outcome = validate_window(schema, frame, max_failing_share=0.5)
    if outcome.rejected:
        assert outcome.reasons and outcome.kept.empty
    else:
        assert len(outcome.kept) + len(outcome.quarantined) == len(frame)
        assert all(reasons for reasons in outcome.quarantined[REASONS])
    for spec in schema.numeric_features:  # nothing non-finite reaches the model
        assert frame[spec.name].map(lambda v: v == v and abs(v) != float("inf")).all()
