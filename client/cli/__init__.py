"""The command-line client: thin commands over `client.session.Session`."""
