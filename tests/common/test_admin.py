from __future__ import annotations

import base64

import pytest
from django.test import Client

from messaging.models import Message
from messaging.services import envelope_send
from tests.builders import envelope_content, make_conversation, make_dev

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "page",
    [
        "accounts/user",
        "devices/device",
        "devices/devicetoken",
        "conversations/conversation",
        "conversations/chatkeyepoch",
        "messaging/message",
    ],
)
def test_admin_lists_render(admin_client: Client, page: str) -> None:
    dev = make_dev()
    conversation = make_conversation(dev)
    envelope_send(device=dev.device, sender_device_id=dev.device.id, content=envelope_content(conversation))
    assert admin_client.get(f"/admin/{page}/").status_code == 200


def test_admin_shows_message_size_never_ciphertext(admin_client: Client) -> None:
    dev = make_dev()
    conversation = make_conversation(dev)
    content = envelope_content(conversation, ciphertext=b"\x01\x02" * 40)
    envelope_send(device=dev.device, sender_device_id=dev.device.id, content=content)
    message = Message.objects.get()

    for url in ("/admin/messaging/message/", f"/admin/messaging/message/{message.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert "80" in page
        assert base64.b64encode(content.ciphertext).decode() not in page
        assert content.ciphertext.hex() not in page


def test_admin_cannot_change_messages(admin_client: Client) -> None:
    assert admin_client.get("/admin/messaging/message/add/").status_code == 403
