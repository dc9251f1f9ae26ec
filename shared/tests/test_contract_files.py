import pytest

from handshake_shared.events.registry import EVENT_MODELS, TOPIC_OF
from handshake_shared.events.schemas import RELEASED_DIR, SCHEMA_DIR, rendered

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def test_committed_schemas_match_the_payload_models():
    stale = [p.name for p, text in rendered().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `make schemas` and commit: {stale}"


def test_every_event_type_has_a_schema_file_and_nothing_else_is_there():
    on_disk = {p.name.removesuffix(".schema.json") for p in (SCHEMA_DIR / "events").glob("*.schema.json")}
    assert on_disk == set(EVENT_MODELS)


def test_every_event_type_is_recorded_as_released():
    # a type nobody recorded could change shape later with nothing to compare it against
    released = {p.name.removesuffix(".schema.json") for p in RELEASED_DIR.glob("*.schema.json")}
    assert set(EVENT_MODELS) <= released


def test_the_catalogue_lists_every_event_type_under_its_topic():
    catalogue = (SCHEMA_DIR / "CATALOGUE.md").read_text()
    sections = {s.split("`", 2)[1]: s for s in catalogue.split("\n## ")[1:]}
    for event_type, topic in TOPIC_OF.items():
        assert f"[`{event_type}`](events/{event_type}.schema.json)" in sections[topic], event_type


def test_each_payload_class_carries_the_type_it_is_registered_under():
    assert all(model.event_type == event_type for event_type, model in EVENT_MODELS.items())
    assert len(set(EVENT_MODELS.values())) == len(EVENT_MODELS)
