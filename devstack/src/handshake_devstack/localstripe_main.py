"""Runs localstripe without its persistence: upstream pickles the whole store to a fixed /tmp file
after every POST, which grows with every request and would be shared by concurrent test stacks."""

from localstripe import resources, server

type(resources.store).dump_to_disk = lambda self: None
type(resources.store).try_load_from_disk = lambda self: None

if __name__ == "__main__":
    server.start()
