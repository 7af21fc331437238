"""A real S3-compatible HTTP endpoint on loopback: moto's server in a subprocess, reached through
boto3 exactly as production reaches S3 (presigned URLs included). Import the fixtures into a test
module or conftest to use them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from harness.server import free_port, process_stop

ACCESS_KEY = "moto-test-access-key"
SECRET_KEY = "moto-test-secret-key"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with Path(log).open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process_stop(process)
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    yield url
    process_stop(process)


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    name: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def env(self) -> dict[str, str]:
        """The production settings that point a server process at this bucket."""
        return {
            "E2EE_MEDIA_BACKEND": "s3",
            "E2EE_S3_BUCKET": self.name,
            "E2EE_S3_ENDPOINT_URL": self.endpoint,
            "E2EE_S3_REGION": REGION,
            "E2EE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "E2EE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "E2EE_S3_ADDRESSING_STYLE": "path",
        }

    def objects(self) -> dict[str, bytes]:
        client = self.client()
        listed = client.list_objects_v2(Bucket=self.name).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=self.name, Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> S3Bucket:
    bucket = S3Bucket(endpoint=moto_endpoint, name=f"media-{uuid.uuid4().hex[:12]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


def s3_storages(bucket: S3Bucket) -> dict[str, Any]:
    """settings.STORAGES as config/settings.py builds it from `bucket.env()`."""
    return {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "media": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket.name,
                "endpoint_url": bucket.endpoint,
                "region_name": REGION,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "addressing_style": "path",
                "signature_version": "s3v4",
                "querystring_auth": True,
                "querystring_expire": 300,
                "file_overwrite": True,
                "default_acl": None,
            },
        },
    }


@pytest.fixture
def s3_media(settings: Any, s3_bucket: S3Bucket) -> S3Bucket:
    """This process's settings switched to the S3 backend on a fresh bucket."""
    settings.E2EE_MEDIA_BACKEND = "s3"
    settings.STORAGES = s3_storages(s3_bucket)
    return s3_bucket
