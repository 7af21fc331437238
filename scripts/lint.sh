#!/usr/bin/env bash
# Static checks: ruff (lint + format) and mypy --strict with the Django and DRF plugins.
source "$(dirname "$0")/_venv.sh"
if [ "${E2EE_SKIP_INSTALL:-0}" != 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-lint.txt
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy .
