"""The realtime gateway (protocol.md 6) over real sockets against a live daphne process."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from common.realtime import conversation_group
from common.testing import PublishedEvent
from conversations.models import Conversation
from devices.models import Device
from harness.polling import wait_for
from harness.server import DaphneServer
from messaging.events import conversation_messages_event
from messaging.models import DeliveryCursor, Message
from tests.builders import Dev, b64, envelope_json, make_conversation, make_dev, manifest_json, wrapped_keys_json
from tests.integration.daphne import multi_process_possible
from tests.messaging.wsclient import Socket

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(sender: Dev, conversation: Conversation, frame_id: str = "s1", **overrides: Any) -> dict[str, Any]:
    return {
        "type": "send",
        "id": frame_id,
        "conversation_id": str(conversation.id),
        "envelope": envelope_json(sender, **overrides),
    }


def over_http(base_url: str, dev: Dev) -> httpx.Client:
    """REST through the live server, so its pushes go out through the server's channel layer."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {dev.token}"}, timeout=10)


def rest_send(base_url: str, sender: Dev, conversation: Conversation, count: int) -> list[int]:
    seqs = []
    with over_http(base_url, sender) as http:
        for _ in range(count):
            response = http.post(f"/api/v1/conversations/{conversation.id}/messages", json=envelope_json(sender))
            assert response.status_code == 201, response.content
            seqs.append(response.json()["seq"])
    return seqs


@pytest.fixture
def pair() -> tuple[Dev, Dev, Conversation]:
    alice, bob = make_dev(), make_dev()
    return alice, bob, make_conversation(alice, bob.user)


# --- authentication -----------------------------------------------------------------------------


def test_hello_with_a_token_gets_a_welcome_naming_the_device(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url)
    assert socket.connection.subprotocol == "e2ee.v1"
    socket.send({"type": "hello", "v": 1, "token": alice.token})
    welcome = socket.expect("welcome")
    assert welcome["device_id"] == str(alice.device.id)
    assert welcome["username"] == alice.user.username


def test_token_in_the_subprotocol_authenticates_without_hello(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url, subprotocols=["e2ee.v1", f"e2ee.token.{alice.token}"])
    assert socket.connection.subprotocol == "e2ee.v1"  # never echoes the token back
    assert socket.expect("welcome")["device_id"] == str(alice.device.id)


@pytest.mark.parametrize("token", ["", "x" * 43, "not a token"])
def test_bad_token_is_refused_with_an_error_frame_and_4401(daphne_url: str, token: str) -> None:
    socket = Socket.open(daphne_url)
    socket.send({"type": "hello", "v": 1, "token": token})
    assert socket.closed_with() == 4401
    assert socket.backlog[-1]["type"] == "error"
    assert socket.backlog[-1]["code"] in {"invalid_token", "invalid_frame"}


def test_another_users_revoked_token_is_refused(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    assert alice.client().post("/api/v1/accounts/logout").status_code == 204
    socket = Socket.open(daphne_url)
    socket.send({"type": "hello", "v": 1, "token": alice.token})
    assert socket.closed_with() == 4401
    assert socket.backlog == [
        {"type": "error", "code": "invalid_token", "message": "Unknown or revoked token.", "extra": {}}
    ]


def test_pending_device_is_refused_with_4403(daphne_url: str) -> None:
    pending = make_dev(status=Device.Status.PENDING)
    socket = Socket.open(daphne_url)
    socket.send({"type": "hello", "v": 1, "token": pending.token})
    assert socket.closed_with() == 4403
    assert socket.backlog[-1]["code"] == "device_not_active"


def test_frames_before_hello_are_refused(daphne_url: str, pair: Any) -> None:
    alice, _, conversation = pair
    socket = Socket.open(daphne_url)
    socket.send(send_frame(alice, conversation))
    assert socket.closed_with() == 4401
    assert socket.backlog[-1]["code"] == "not_authenticated"
    assert not Message.objects.exists()


def test_no_hello_in_time_closes_with_4408(daphne_factory: Callable[..., DaphneServer]) -> None:
    server = daphne_factory(extra_env={"E2EE_WS_AUTH_TIMEOUT_S": "1"})
    socket = Socket.open(server.url)
    assert socket.closed_with(timeout=5) == 4408
    assert socket.backlog[-1]["code"] == "auth_timeout"


def test_logging_out_closes_the_open_socket(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url, alice.token)
    with over_http(daphne_url, alice) as http:
        assert http.post("/api/v1/accounts/logout").status_code == 204
    assert socket.closed_with() == 4401


# --- sending ------------------------------------------------------------------------------------


def test_send_is_answered_with_its_seq_and_pushed_to_the_other_member(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    alices, bobs = Socket.open(daphne_url, alice.token), Socket.open(daphne_url, bob.token)
    frame = send_frame(alice, conversation, frame_id="first")
    alices.send(frame)
    sent = alices.expect("sent")
    assert sent["id"] == "first"
    assert sent["seq"] == 1
    assert sent["created"] is True
    assert sent["client_message_id"] == frame["envelope"]["client_message_id"]
    [envelope] = bobs.messages(1)
    # Exactly what the REST history holds.
    history = bob.client().get(f"/api/v1/conversations/{conversation.id}/messages").json()["messages"]
    assert envelope == history[0]
    assert envelope["ciphertext"] == frame["envelope"]["ciphertext"]


def test_the_sending_connection_is_not_pushed_its_own_message_but_the_senders_other_device_is(
    daphne_url: str, pair: Any
) -> None:
    alice, _bob, conversation = pair
    alices_phone = make_dev(user=alice.user)
    laptop, phone = Socket.open(daphne_url, alice.token), Socket.open(daphne_url, alices_phone.token)
    laptop.send(send_frame(alice, conversation))
    laptop.expect("sent")
    assert phone.messages(1)[0]["sender_device_id"] == str(alice.device.id)
    assert laptop.silent("message", 0.5)


def test_resending_the_same_frame_answers_the_original_seq_and_stores_once(daphne_url: str, pair: Any) -> None:
    alice, _bob, conversation = pair
    socket = Socket.open(daphne_url, alice.token)
    frame = send_frame(alice, conversation)
    socket.send(frame)
    first = socket.expect("sent")
    socket.send({**frame, "id": "again"})
    again = socket.expect("sent", id="again")
    assert (again["seq"], again["created"]) == (first["seq"], False)
    assert Message.objects.count() == 1


def test_reusing_a_client_message_id_for_other_content_is_an_error_for_that_frame(daphne_url: str, pair: Any) -> None:
    alice, _, conversation = pair
    socket = Socket.open(daphne_url, alice.token)
    frame = send_frame(alice, conversation)
    socket.send(frame)
    socket.expect("sent")
    other = send_frame(alice, conversation, frame_id="other", client_message_id=frame["envelope"]["client_message_id"])
    socket.send(other)
    error = socket.expect("error")
    assert (error["id"], error["code"]) == ("other", "client_message_id_reused")
    socket.send({"type": "ping", "id": "p"})
    assert socket.expect("pong")["id"] == "p"  # the connection lives on


def test_sends_pipelined_on_one_socket_get_seqs_in_frame_order(daphne_url: str, pair: Any) -> None:
    alice, _bob, conversation = pair
    socket = Socket.open(daphne_url, alice.token)
    frames = [send_frame(alice, conversation, frame_id=f"m{i}") for i in range(50)]
    for frame in frames:
        socket.send(frame)
    answers = {socket.expect("sent")["id"]: None for _ in frames}
    assert len(answers) == 50
    stored = list(Message.objects.order_by("seq").values_list("seq", "client_message_id"))
    assert [seq for seq, _ in stored] == list(range(1, 51))
    assert [b64(bytes(cmid)) for _, cmid in stored] == [f["envelope"]["client_message_id"] for f in frames]


def test_a_non_member_cannot_send_and_learns_nothing(daphne_url: str, pair: Any) -> None:
    _, _, conversation = pair
    mallory = make_dev()
    socket = Socket.open(daphne_url, mallory.token)
    socket.send(send_frame(mallory, conversation))
    assert socket.expect("error")["code"] == "conversation_not_found"
    assert not Message.objects.exists()


def test_sending_as_another_device_is_refused(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    socket = Socket.open(daphne_url, alice.token)
    socket.send(send_frame(alice, conversation, sender_device_id=str(bob.device.id)))
    assert socket.expect("error")["code"] == "sender_device_mismatch"
    assert not Message.objects.exists()


# --- malformed frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_frame"),
        ("[1, 2]", "invalid_frame"),
        ('{"no": "type"}', "invalid_frame"),
        ('{"type": "teleport"}', "unknown_frame_type"),
        ('{"type": "ack", "conversation_id": "x", "seq": "1"}', "invalid_frame"),
        ('{"type": "ack", "conversation_id": "00000000-0000-4000-8000-000000000000", "seq": true}', "invalid_frame"),
    ],
)
def test_malformed_frames_get_an_error_frame_and_the_connection_lives(
    daphne_url: str, pair: Any, raw: str, code: str
) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url, alice.token)
    socket.connection.send(raw)
    assert socket.expect("error")["code"] == code
    socket.send({"type": "ping", "id": "alive"})
    assert socket.expect("pong")["id"] == "alive"


def test_an_ill_typed_envelope_names_every_bad_field(daphne_url: str, pair: Any) -> None:
    alice, _, conversation = pair
    socket = Socket.open(daphne_url, alice.token)
    socket.send(send_frame(alice, conversation, nonce="AAAA", version="1", ciphertext="not base64!"))
    error = socket.expect("error")
    assert error["id"] == "s1"
    assert set(error["extra"]["fields"]) == {"envelope.nonce", "envelope.version", "envelope.ciphertext"}


def test_a_huge_frame_closes_with_4413(daphne_factory: Callable[..., DaphneServer], pair: Any) -> None:
    alice, _, _ = pair
    server = daphne_factory(extra_env={"E2EE_WS_MAX_FRAME_BYTES": "1000"})
    socket = Socket.open(server.url, alice.token)
    socket.connection.send('{"type": "ping", "id": "' + "x" * 2000 + '"}')
    assert socket.closed_with() == 4413
    assert socket.backlog[-1]["code"] == "frame_too_large"


def test_a_binary_frame_is_refused(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url, alice.token)
    socket.connection.send(b"\x00\x01")
    assert socket.expect("error")["code"] == "invalid_frame"


# --- delivery, catch-up, acknowledgement ------------------------------------------------------


def test_a_device_that_was_away_catches_up_in_order_then_hears_caught_up(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    rest_send(daphne_url, alice, conversation, 30)
    bobs = Socket.open(daphne_url, bob.token)
    assert [e["seq"] for e in bobs.messages(30)] == list(range(1, 31))
    bobs.expect("caught_up")


def test_acknowledged_messages_are_not_delivered_again_after_reconnect(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    rest_send(daphne_url, alice, conversation, 10)
    bobs = Socket.open(daphne_url, bob.token)
    bobs.messages(10)
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 7})
    wait_for(lambda: DeliveryCursor.objects.filter(device=bob.device, delivered_seq=7).exists())
    bobs.close()
    again = Socket.open(daphne_url, bob.token)
    assert [e["seq"] for e in again.messages(3)] == [8, 9, 10]


def test_catch_up_comes_before_any_newer_live_message(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    rest_send(daphne_url, alice, conversation, 100)
    bobs = Socket.open(daphne_url, bob.token)
    alices = Socket.open(daphne_url, alice.token)
    alices.send(send_frame(alice, conversation))
    alices.expect("sent")
    assert [e["seq"] for e in bobs.messages(101)] == list(range(1, 102))


def test_unacknowledged_messages_are_pushed_again(daphne_factory: Callable[..., DaphneServer], pair: Any) -> None:
    alice, bob, conversation = pair
    server = daphne_factory(extra_env={"E2EE_WS_RETRY_S": "0.5"})
    bobs = Socket.open(server.url, bob.token)
    rest_send(server.url, alice, conversation, 2)
    assert [e["seq"] for e in bobs.messages(2)] == [1, 2]
    # No ack: the same two come again, in order.
    assert [e["seq"] for e in bobs.messages(2, timeout=5)] == [1, 2]
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 2})
    assert bobs.silent("message", 1.5)


def test_the_window_holds_back_pushes_until_acknowledgements_arrive(
    daphne_factory: Callable[..., DaphneServer], pair: Any
) -> None:
    alice, bob, conversation = pair
    server = daphne_factory(extra_env={"E2EE_WS_WINDOW": "5"})
    rest_send(server.url, alice, conversation, 12)
    bobs = Socket.open(server.url, bob.token)
    assert [e["seq"] for e in bobs.messages(5)] == [1, 2, 3, 4, 5]
    assert bobs.silent("message", 0.5)
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 5})
    assert [e["seq"] for e in bobs.messages(5)] == [6, 7, 8, 9, 10]
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 10})
    assert [e["seq"] for e in bobs.messages(2)] == [11, 12]


def test_own_sends_read_back_from_the_database_are_not_echoed_to_the_connection_that_sent_them(
    daphne_factory: Callable[..., DaphneServer], pair: Any
) -> None:
    alice, bob, conversation = pair
    server = daphne_factory(extra_env={"E2EE_WS_WINDOW": "3"})
    bobs = Socket.open(server.url, bob.token)
    bobs.expect("caught_up")
    rest_send(server.url, alice, conversation, 5)
    assert [e["seq"] for e in bobs.messages(3)] == [1, 2, 3]  # the window is full
    bobs.send(send_frame(bob, conversation, frame_id="own"))
    assert bobs.expect("sent", id="own")["seq"] == 6
    # Acks open the window: 4 and 5 come from the database, and 6 (bob's own, answered with
    # `sent` on this connection) is counted as pushed but not sent again.
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 3})
    assert [e["seq"] for e in bobs.messages(2)] == [4, 5]
    assert bobs.silent("message", 0.5)
    # A second connection of the same device never got that `sent`: catch-up brings it 6 too.
    wait_for(lambda: DeliveryCursor.objects.filter(device=bob.device, delivered_seq=3).exists())
    other = Socket.open(server.url, bob.token)
    assert [e["seq"] for e in other.messages(3)] == [4, 5, 6]
    # The window still counts 6 on the first connection: acknowledging through 6 frees it all.
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 6})
    rest_send(server.url, alice, conversation, 3)
    assert [e["seq"] for e in bobs.messages(3)] == [7, 8, 9]


def test_fetch_returns_a_range_then_fetched(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    rest_send(daphne_url, alice, conversation, 8)
    bobs = Socket.open(daphne_url, bob.token)
    bobs.messages(8)
    bobs.send({"type": "fetch", "id": "f", "conversation_id": str(conversation.id), "after": 2, "limit": 3})
    assert [e["seq"] for e in bobs.messages(3)] == [3, 4, 5]
    assert bobs.expect("fetched") == {
        "type": "fetched",
        "id": "f",
        "conversation_id": str(conversation.id),
        "next_after": 5,
        "has_more": True,
    }


def test_fetch_of_someone_elses_conversation_is_not_found(daphne_url: str, pair: Any) -> None:
    _, _, conversation = pair
    mallory = make_dev()
    socket = Socket.open(daphne_url, mallory.token)
    socket.send({"type": "fetch", "id": "f", "conversation_id": str(conversation.id), "after": 0})
    assert socket.expect("error")["code"] == "conversation_not_found"


def test_a_new_conversation_reaches_a_connected_member_with_its_messages(daphne_url: str) -> None:
    alice, bob = make_dev(), make_dev()
    bobs = Socket.open(daphne_url, bob.token)
    conversation_id = uuid.uuid4()
    with over_http(daphne_url, alice) as http:
        created = http.post(
            "/api/v1/conversations",
            json={
                "conversation_id": str(conversation_id),
                "kind": "direct",
                "members": [bob.user.username],
                "epoch": {
                    "number": 1,
                    "wrapped_keys": wrapped_keys_json([alice.device, bob.device]),
                    **manifest_json(),
                },
            },
        )
    assert created.status_code == 201, created.content
    conversation = Conversation.objects.get(pk=conversation_id)
    joined = bobs.expect("conversation")
    assert joined["conversation"]["conversation_id"] == str(conversation.id)
    assert sorted(joined["conversation"]["members"]) == sorted([alice.user.username, bob.user.username])
    rest_send(daphne_url, alice, conversation, 2)
    assert [e["seq"] for e in bobs.messages(2)] == [1, 2]


# --- receipts, typing, presence --------------------------------------------------------------


def test_acks_and_reads_reach_the_sender_as_receipts(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    alices, bobs = Socket.open(daphne_url, alice.token), Socket.open(daphne_url, bob.token)
    alices.send(send_frame(alice, conversation))
    seq = alices.expect("sent")["seq"]
    bobs.messages(1)
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": seq})
    receipt = alices.expect("receipt")
    assert receipt["conversation_id"] == str(conversation.id)
    assert {
        "username": bob.user.username,
        "device_id": str(bob.device.id),
        "delivered_seq": seq,
        "read_seq": 0,
    } in receipt["receipts"]
    bobs.send({"type": "read", "conversation_id": str(conversation.id), "seq": seq})
    read = alices.expect("receipt")
    assert read["receipts"][0]["read_seq"] == seq
    cursor = DeliveryCursor.objects.get(device=bob.device, conversation=conversation)
    assert (cursor.delivered_seq, cursor.read_seq) == (seq, seq)


def test_an_ack_beyond_the_last_seq_is_refused_and_later_messages_still_arrive(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    rest_send(daphne_url, alice, conversation, 1)
    bobs = Socket.open(daphne_url, bob.token)
    bobs.messages(1)
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 1_000_000})
    error = bobs.expect("error")
    assert error["code"] == "cursor_beyond_last_seq"
    assert error["extra"] == {"conversation_id": str(conversation.id), "last_seq": 1}
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 1})
    wait_for(lambda: DeliveryCursor.objects.filter(device=bob.device, delivered_seq=1).exists())
    bobs.close()
    rest_send(daphne_url, alice, conversation, 1)
    again = Socket.open(daphne_url, bob.token)
    assert [e["seq"] for e in again.messages(1)] == [2]
    assert DeliveryCursor.objects.get(device=bob.device, conversation=conversation).delivered_seq == 1


def test_a_read_beyond_the_last_seq_is_refused_and_the_senders_receipts_stay_true(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    alices, bobs = Socket.open(daphne_url, alice.token), Socket.open(daphne_url, bob.token)
    alices.send(send_frame(alice, conversation))
    seq = alices.expect("sent")["seq"]
    bobs.messages(1)
    bobs.send({"type": "read", "conversation_id": str(conversation.id), "seq": 1_000_000})
    assert bobs.expect("error")["code"] == "cursor_beyond_last_seq"
    bobs.send({"type": "read", "conversation_id": str(conversation.id), "seq": seq})
    receipt = alices.expect("receipt")
    assert [(r["delivered_seq"], r["read_seq"]) for r in receipt["receipts"]] == [(0, seq)]


def test_typing_is_relayed_to_other_members_only(daphne_url: str, pair: Any) -> None:
    alice, bob, conversation = pair
    alices_phone = make_dev(user=alice.user)
    alices, phone, bobs = (Socket.open(daphne_url, d.token) for d in (alice, alices_phone, bob))
    alices.send({"type": "typing", "conversation_id": str(conversation.id), "state": "start"})
    typing = bobs.expect("typing")
    assert typing == {
        "type": "typing",
        "conversation_id": str(conversation.id),
        "username": alice.user.username,
        "device_id": str(alice.device.id),
        "state": "start",
        "expires_in_ms": 6000,
    }
    assert phone.silent("typing", 0.5)


def test_presence_is_visible_to_contacts_and_hidden_from_strangers(daphne_url: str, pair: Any) -> None:
    alice, bob, _ = pair
    stranger = make_dev()
    alices = Socket.open(daphne_url, alice.token)
    Socket.open(daphne_url, stranger.token)
    bobs = Socket.open(daphne_url, bob.token)
    assert alices.expect("presence")["users"] == {bob.user.username: {"online": True}}
    query = {"type": "presence", "id": "q", "usernames": [alice.user.username, stranger.user.username, "nobody"]}
    bobs.send(query)
    answer = bobs.expect("presence", id="q")
    # The stranger is online, but shares no conversation with bob: shown exactly like "offline".
    assert answer["users"] == {
        alice.user.username: {"online": True},
        stranger.user.username: {"online": False},
        "nobody": {"online": False},
    }
    bobs.close()
    assert alices.expect("presence")["users"] == {bob.user.username: {"online": False}}


def test_a_message_whose_push_was_lost_still_reaches_a_connected_device(
    daphne_factory: Callable[..., DaphneServer], pair: Any, published: list[PublishedEvent]
) -> None:
    alice, bob, conversation = pair
    server = daphne_factory(extra_env={"E2EE_WS_SWEEP_S": "0.5"})
    bobs = Socket.open(server.url, bob.token)
    # Sent in this process with the push swallowed (`published` records instead of sending):
    # exactly what a Redis restart between commit and publish does.
    response = alice.client().post(
        f"/api/v1/conversations/{conversation.id}/messages", envelope_json(alice), format="json"
    )
    assert response.status_code == 201
    assert [p.event["type"] for p in published] == ["conversation.messages"]
    assert [e["seq"] for e in bobs.messages(1, timeout=5)] == [1]


def test_an_up_to_date_device_hears_caught_up_at_once(daphne_url: str, pair: Any) -> None:
    alice, _, _ = pair
    socket = Socket.open(daphne_url, alice.token)
    socket.expect("caught_up", timeout=5)


def test_a_device_that_never_acknowledges_is_closed_after_its_retries_and_resumes_on_reconnect(
    daphne_factory: Callable[..., DaphneServer], pair: Any
) -> None:
    alice, bob, conversation = pair
    server = daphne_factory(extra_env={"E2EE_WS_RETRY_S": "0.3", "E2EE_WS_MAX_RETRIES": "2"})
    rest_send(server.url, alice, conversation, 20)
    bobs = Socket.open(server.url, bob.token)
    # Never acknowledged: pushed once (catch-up), then only the oldest few again per retry, then
    # closed.
    assert bobs.closed_with(timeout=15) == 4420
    pushed = [frame["envelope"]["seq"] for frame in bobs.backlog if frame["type"] == "message"]
    assert sorted(set(pushed)) == list(range(1, 21))
    assert len(pushed) <= 20 + 2 * 16  # each retry pushes at most the 16 oldest again
    assert bobs.backlog[-1]["code"] == "ack_timeout"
    again = Socket.open(server.url, bob.token)
    assert [e["seq"] for e in again.messages(20)] == list(range(1, 21))


def _publish_from_elsewhere(conversation: Conversation, rows: list[tuple[int, str]]) -> None:
    """Publish `message` frames for these seqs to the conversation's group, as another server
    process would, each marked so the test can tell a relayed push from a database read."""
    layer = get_channel_layer()
    for seq, marker in rows:
        frame = {"type": "message", "conversation_id": str(conversation.id), "marker": marker, "envelope": {"seq": seq}}
        event = conversation_messages_event(conversation.id, [(seq, "", json.dumps(frame))], stored_at=time.time())
        async_to_sync(layer.group_send)(conversation_group(conversation.id), dict(event))


@pytest.mark.skipif(not multi_process_possible(), reason="needs a channel layer shared between processes (REDIS_URL)")
def test_pushes_that_cross_between_processes_are_put_back_in_order_without_a_database_read(
    daphne_url: str, pair: Any, published: list[PublishedEvent]
) -> None:
    alice, bob, conversation = pair
    bobs = Socket.open(daphne_url, bob.token)
    bobs.expect("caught_up")
    for _ in range(2):  # stored; their own pushes are swallowed (`published`)
        alice.client().post(f"/api/v1/conversations/{conversation.id}/messages", envelope_json(alice), format="json")
    _publish_from_elsewhere(conversation, [(2, "late"), (1, "early")])
    frames = [bobs.expect("message") for _ in range(2)]
    assert [(f["envelope"]["seq"], f.get("marker")) for f in frames] == [(1, "early"), (2, "late")]


@pytest.mark.skipif(not multi_process_possible(), reason="needs a channel layer shared between processes (REDIS_URL)")
def test_a_push_ahead_of_a_lost_one_waits_briefly_then_the_gap_is_read_from_the_database(
    daphne_url: str, pair: Any, published: list[PublishedEvent]
) -> None:
    alice, bob, conversation = pair
    bobs = Socket.open(daphne_url, bob.token)
    bobs.expect("caught_up")
    for _ in range(2):
        alice.client().post(f"/api/v1/conversations/{conversation.id}/messages", envelope_json(alice), format="json")
    _publish_from_elsewhere(conversation, [(2, "relayed")])  # seq 1's push is lost
    frames = [bobs.expect("message") for _ in range(2)]
    # Both come from the database, in order; the held relay of 2 is dropped, not sent twice.
    assert [(f["envelope"]["seq"], f.get("marker")) for f in frames] == [(1, None), (2, None)]
    assert frames[0]["envelope"]["ciphertext"]
    assert bobs.silent("message", 0.5)
