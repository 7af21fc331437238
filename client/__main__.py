"""`python -m client`: the command-line client."""

from client.cli.main import main

raise SystemExit(main())
