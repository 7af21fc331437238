"""Query parameters mean what the schema says (issue 13, found by the schema fuzz): an empty value
is a value, refused like any other non-integer, and a name given twice is refused, where DRF's form
reading took `after=` as absent and the last of repeated names silently."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import Dev, make_conversation

pytestmark = pytest.mark.django_db


def _device_list(dev: Dev, query: str) -> tuple[int, dict[str, Any]]:
    response = dev.client().get(f"/api/v1/users/{dev.user.username}/device-list?{query}")
    return response.status_code, response.json()


def test_an_empty_after_is_refused_not_read_as_zero(alice: Dev) -> None:
    status, body = _device_list(alice, "after=")

    assert status == 400
    assert body["code"] == "invalid_request"
    assert list(body["extra"]["fields"]) == ["after"]


def test_a_repeated_parameter_is_refused(alice: Dev) -> None:
    status, body = _device_list(alice, "after=1&after=2")

    assert status == 400
    assert body["extra"]["fields"] == {"after": ["Give this parameter once."]}


def test_a_single_after_still_pages(alice: Dev) -> None:
    assert _device_list(alice, "after=0")[0] == 200


def test_history_refuses_an_empty_or_repeated_after(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    url = f"/api/v1/conversations/{conversation.id}/messages"

    assert alice.client().get(f"{url}?after=").status_code == 400
    assert alice.client().get(f"{url}?after=1&after=2").status_code == 400
    assert alice.client().get(f"{url}?after=0").status_code == 200
