"""`python -m handshake_console [serve]` runs the web console; any other command is the command line
(`order`, `refund`, `replay`, `reconcile`, ...: see `python -m handshake_console --help`)."""

import sys

from handshake_console.cli import main as cli_main
from handshake_console.server import main as serve_main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] == "serve":
        serve_main()
    else:
        sys.exit(cli_main(sys.argv[1:]))
