pytest_plugins = ["handshake_devstack.testing.fixtures"]
