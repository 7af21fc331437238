from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.common.test_logs_hold_no_secrets import every_log_line  # noqa: F401 (fixture)
from tests.media.s3server import moto_endpoint, s3_bucket, s3_media  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Every media test stores blobs in its own folder (filesystem backend unless switched)."""
    root = tmp_path / "media"
    settings.E2EE_MEDIA_BACKEND = "filesystem"
    settings.STORAGES = {
        **settings.STORAGES,
        "media": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root
