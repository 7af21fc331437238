"""Operating the gateway: its metrics count exactly, its limits trip and reset, its parser survives
fuzzing. Real daphne processes, real sockets."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from websockets.exceptions import ConnectionClosed

from harness.server import DaphneServer
from tests.builders import make_conversation, make_dev
from tests.fuzz.frames import ws_frames
from tests.messaging.test_gateway import send_frame
from tests.messaging.wsclient import Socket

pytestmark = pytest.mark.django_db(transaction=True)


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when the series does not exist yet)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_ten_messages_over_the_socket_count_exactly_ten(fresh_daphne_url: str) -> None:
    daphne_url = fresh_daphne_url
    alice, bob = make_dev(), make_dev()
    conversation = make_conversation(alice, bob.user)
    before = metric(daphne_url, "e2ee_messages_sent_total", transport="websocket")
    accepted = metric(daphne_url, "e2ee_websocket_connections_total", outcome="accepted")
    alices, bobs = Socket.open(daphne_url, alice.token), Socket.open(daphne_url, bob.token)
    assert metric(daphne_url, "e2ee_connected_devices") == 2
    frames = [send_frame(alice, conversation, frame_id=f"m{i}") for i in range(10)]
    for frame in frames:
        alices.send(frame)
    for _ in frames:
        alices.expect("sent")
    alices.send({**frames[0], "id": "resend"})  # idempotent: not a new message
    alices.expect("sent", id="resend")
    seqs = [envelope["seq"] for envelope in bobs.messages(10)]
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": seqs[-1]})
    bobs.send({"type": "ping", "id": "p"})
    bobs.expect("pong")

    assert metric(daphne_url, "e2ee_messages_sent_total", transport="websocket") - before == 10
    assert metric(daphne_url, "e2ee_websocket_connections_total", outcome="accepted") - accepted == 2
    assert metric(daphne_url, "e2ee_websocket_frames_total", direction="in", type="send") == 11
    assert metric(daphne_url, "e2ee_websocket_frames_total", direction="out", type="message") == 10
    assert metric(daphne_url, "e2ee_websocket_frames_total", direction="out", type="sent") == 11
    assert metric(daphne_url, "e2ee_delivery_latency_seconds_count") == 10
    alices.close()
    bobs.close()
    deadline = time.monotonic() + 10
    while metric(daphne_url, "e2ee_connected_devices") != 0:
        assert time.monotonic() < deadline, "connections not counted as closed"
        time.sleep(0.05)


def wait_for_window_start(period_s: int) -> None:
    """Limits count in fixed windows (Unix time // period): start a burst right after the *next*
    boundary. Returning inside the current window's first moments would let frames sent before
    the call (the hello) count against the burst; CI once caught exactly that."""
    window = int(time.time() // period_s)
    while int(time.time() // period_s) == window:
        time.sleep(0.005)


def test_the_frame_limit_trips_at_its_setting_and_resets(daphne_factory: Callable[..., DaphneServer]) -> None:
    alice = make_dev()
    server = daphne_factory(extra_env={"E2EE_RATE_LIMITS": "ws_frame=5/4"})
    socket = Socket.open(server.url, alice.token)
    socket.expect("caught_up")
    wait_for_window_start(4)
    for index in range(6):
        socket.send({"type": "ping", "id": f"p{index}"})
    assert [socket.expect("pong")["id"] for _ in range(5)] == ["p0", "p1", "p2", "p3", "p4"]
    error = socket.expect("error")
    assert error["code"] == "rate_limited"
    assert 1 <= error["extra"]["retry_after_s"] <= 4
    assert socket.silent("pong", 0.2)  # the sixth frame was dropped, not answered late
    wait_for_window_start(4)
    socket.send({"type": "ping", "id": "after"})
    assert socket.expect("pong", id="after")["id"] == "after"
    assert metric(server.url, "e2ee_rate_limited_total", limit="ws_frame") == 1


def test_sends_over_the_socket_count_against_the_device_send_limit(
    daphne_factory: Callable[..., DaphneServer],
) -> None:
    alice, bob = make_dev(), make_dev()
    conversation = make_conversation(alice, bob.user)
    server = daphne_factory(extra_env={"E2EE_RATE_LIMITS": "send_device=3/60"})
    socket = Socket.open(server.url, alice.token)
    for index in range(5):
        socket.send(send_frame(alice, conversation, frame_id=f"m{index}"))
    sent = sorted(socket.expect("sent")["id"] for _ in range(3))
    errors = [socket.expect("error") for _ in range(2)]
    assert sent == ["m0", "m1", "m2"]  # in frame order: the limit counts them in order too
    assert [(e["id"], e["code"]) for e in errors] == [("m3", "rate_limited"), ("m4", "rate_limited")]
    assert all(1 <= e["extra"]["retry_after_s"] <= 60 for e in errors)


def test_fuzzed_frames_get_error_frames_or_a_clean_close_and_never_crash_the_server(
    daphne_factory: Callable[..., DaphneServer],
) -> None:
    alice = make_dev()
    make_conversation(alice, make_dev().user)
    server = daphne_factory(extra_env={"E2EE_WS_MAX_FRAME_BYTES": "4096", "E2EE_RATE_LIMIT_ENABLED": "0"})
    state: dict[str, Any] = {"socket": Socket.open(server.url, alice.token), "closes": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=ws_frames(max_frame_bytes=4096))
    def one_frame(frame: str | bytes) -> None:
        socket: Socket = state["socket"]
        if isinstance(frame, str):
            try:
                frame.encode("utf-8")
            except UnicodeEncodeError:
                return  # a lone surrogate cannot be put in a text frame at all: nothing to send
        socket.connection.send(frame)
        try:
            socket.send({"type": "ping", "id": "alive"})
            socket.expect("pong", id="alive", timeout=10)
        except ConnectionClosed as closed:
            # Only a deliberate close is acceptable: frame too large.
            assert closed.rcvd is not None and closed.rcvd.code == 4413, closed
            state["closes"] += 1
            state["socket"] = Socket.open(server.url, alice.token)
        for seen in socket.backlog:
            assert seen["type"] in {"error", "pong", "caught_up", "presence", "fetched", "message"}, seen
        socket.backlog.clear()

    one_frame()
    os.kill(server.pid, 0)  # still running
    log = server.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert state["closes"] >= 1  # the huge frames were drawn and refused


def test_a_sigterm_closes_sockets_cleanly_and_clients_can_reconnect(
    daphne_factory: Callable[..., DaphneServer],
) -> None:
    alice = make_dev()
    server = daphne_factory()
    socket = Socket.open(server.url, alice.token)
    os.kill(server.pid, signal.SIGTERM)
    socket.closed_with(timeout=20)  # however it ends, the client sees the end
    server.start()
    Socket.open(server.url, alice.token).expect("caught_up")
