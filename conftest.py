pytest_plugins = ["handshake_shared.testing.fixtures"]
