"""HTTP transport: executes protocol `Request`s against a server and returns parsed JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from client.errors import ServerUnreachableError
from client.protocol import ApiError, MediaLink, Request, raise_for_error

# Progress callback: (bytes done, bytes expected).
Progress = Callable[[int, int], None]
_DOWNLOAD_CHUNK = 256 * 1024


class HttpTransport:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def execute(self, request: Request) -> tuple[int, Any]:
        """Send `request`; return `(status, json body)`, raising `ApiError` for 4xx/5xx answers."""
        headers = {"Accept": "application/json"}
        if request.authenticated:
            if not self.token:
                raise ApiError(401, "not_authenticated", "this device has no token; log in first")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self._client.request(
                request.method,
                request.path,
                json=request.json,
                params=request.params or None,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"cannot reach {self.base_url}: {exc}") from exc
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = None
        raise_for_error(response.status_code, body)
        return response.status_code, body

    def upload_blob(
        self, link: MediaLink, chunks: Iterable[bytes], length: int, *, progress: Progress | None = None
    ) -> None:
        """Stream `chunks` (exactly `length` bytes in all) to a media upload link, never holding
        more than one chunk; no Authorization header goes to it (it may be a storage bucket)."""
        done = 0

        def counted() -> Iterable[bytes]:
            nonlocal done
            for chunk in chunks:
                if chunk:
                    done += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(done, length)

        headers = {**link.headers, "Content-Length": str(length)}
        try:
            response = self._client.request(link.method, link.url, content=counted(), headers=headers)
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"upload to {httpx.URL(link.url).host} failed: {exc}") from exc
        _raise_for_blob(response.status_code, response.content)

    def download_blob(
        self,
        link: MediaLink,
        sink: Callable[[bytes], None],
        *,
        expected_length: int,
        progress: Progress | None = None,
    ) -> int:
        """Stream a media download link into `sink`, chunk by chunk; the number of bytes."""
        done = 0
        try:
            with self._client.stream(link.method, link.url, headers=link.headers) as response:
                if response.status_code >= 400:
                    _raise_for_blob(response.status_code, response.read())
                for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                    done += len(chunk)
                    sink(chunk)
                    if progress is not None:
                        progress(done, expected_length)
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"download from {httpx.URL(link.url).host} failed: {exc}") from exc
        return done

    def close(self) -> None:
        self._client.close()


def _raise_for_blob(status: int, content: bytes) -> None:
    """Our server answers errors as JSON; a bucket answers XML, reported by status."""
    if status < 400:
        return
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        raise_for_error(status, body)
    raise ApiError(status, "storage_error", f"the storage answered HTTP {status}")
