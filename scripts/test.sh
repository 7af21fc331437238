#!/usr/bin/env bash
# Quick start, command 2: install, then run the whole test suite. Embedded defaults (SQLite,
# in-memory channel layer) unless DATABASE_URL / REDIS_URL name real servers, as .ci/run does.
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
