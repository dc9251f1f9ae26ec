import pytest

pytest_plugins = ["handshake_devstack.testing.fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a test marked unit runs in `make test-unit`, which promises no embedded stack: one that asks for it is mislabelled
    mislabelled = [
        item.nodeid
        for item in items
        if item.get_closest_marker("unit") and "stack" in getattr(item, "fixturenames", ())
    ]
    if mislabelled:
        raise pytest.UsageError("marked unit but needs the embedded stack: " + ", ".join(mislabelled))
