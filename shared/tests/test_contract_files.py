from handshake_shared.events.registry import EVENT_MODELS
from handshake_shared.events.schemas import SCHEMA_DIR, rendered


def test_committed_schemas_match_the_payload_models():
    stale = [p.name for p, text in rendered().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `make schemas` and commit: {stale}"


def test_every_event_type_has_a_schema_file_and_nothing_else_is_there():
    on_disk = {p.name.removesuffix(".schema.json") for p in (SCHEMA_DIR / "events").glob("*.schema.json")}
    assert on_disk == set(EVENT_MODELS)
