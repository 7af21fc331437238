"""HTTP transport: executes protocol `Request`s against a server and returns parsed JSON."""

from __future__ import annotations

from typing import Any

import httpx

from client.errors import ServerUnreachableError
from client.protocol import ApiError, Request, raise_for_error


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

    def close(self) -> None:
        self._client.close()
