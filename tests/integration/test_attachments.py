"""Encrypted attachments end to end: real SDK devices, a real daphne server, real storage (a
folder on the embedded default, moto's S3 server for the S3 backend).

A 20 MiB file sent by one device is saved byte-identical by two others; the stored blob holds no
run of the plaintext; a stored blob with a flipped byte, a dropped, reordered or truncated chunk,
or a chunk appended is refused by the receiver, which then leaves no file behind.
"""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.crypto.attachment import CIPHERTEXT_CHUNK_BYTES
from client.errors import AttachmentError
from client.protocol import ApiError
from client.session import ReceivedMessage, Session
from client.transport.http import HttpTransport
from harness.server import DaphneServer
from tests.integration.conftest import PASSWORD
from tests.media.s3server import S3Bucket, moto_endpoint, s3_bucket  # noqa: F401 (fixtures)

MIB = 1024 * 1024
PHRASE = b"the launch code is 0000, do not share this line with the server. "


def _plaintext(path: Path, size: int) -> bytes:
    """Recognisable text and random bytes, interleaved, written in pieces."""
    rng = uuid.uuid4().bytes
    with path.open("wb") as out:
        written = 0
        block = 0
        while written < size:
            piece = PHRASE * 64 + hashlib.sha256(rng + block.to_bytes(8, "big")).digest() * 256
            piece = piece[: size - written]
            out.write(piece)
            written += len(piece)
            block += 1
    return path.read_bytes()


class World:
    def __init__(self, url: str, tag: str, server_pid: int) -> None:
        self.url = url
        self.server_pid = server_pid
        self.sessions: list[Session] = []
        self.alice = self._register(f"alice_{tag}", "laptop")
        self.bob = self._register(f"bob_{tag}", "phone")
        self.alice_phone = Session.login(
            HttpTransport(url), server_url=url, username=self.alice.username, password=PASSWORD, device_name="phone"
        )
        self.sessions.append(self.alice_phone)
        self.alice.approve_link(self.alice_phone.request_link())
        assert self.alice_phone.complete_link()
        self.conversation = self.alice.create_conversation([self.bob.username]).conversation_id

    def _register(self, username: str, device: str) -> Session:
        session = Session.register(
            HttpTransport(self.url), server_url=self.url, username=username, password=PASSWORD, device_name=device
        )
        self.sessions.append(session)
        return session

    def close(self) -> None:
        for session in self.sessions:
            session.transport.close()  # type: ignore[attr-defined]


def _attachment(receiver: Session, conversation: uuid.UUID) -> dict[str, Any]:
    results = receiver.history(conversation)
    last = results[-1]
    assert isinstance(last, ReceivedMessage), last
    assert last.payload["type"] == "attachment"
    return last.payload


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "server-media"


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, media_dir: Path) -> tuple[str, dict[str, str], Callable[[], bytes]]:
    """(name, server environment, a reader of the one stored blob)."""
    if request.param == "filesystem":

        def stored() -> bytes:
            (blob,) = list((media_dir / "blobs").iterdir())
            return blob.read_bytes()

        return "filesystem", {"E2EE_MEDIA_BACKEND": "filesystem", "E2EE_MEDIA_ROOT": str(media_dir)}, stored
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")

    def stored_s3() -> bytes:
        (blob,) = bucket.objects().values()
        return blob

    return "s3", bucket.env(), stored_s3


@pytest.fixture
def world(
    daphne_factory: Callable[..., DaphneServer], backend: tuple[str, dict[str, str], Callable[[], bytes]]
) -> Iterator[World]:
    server = daphne_factory(extra_env=backend[1])
    w = World(server.url, uuid.uuid4().hex[:6], server.pid)
    yield w
    w.close()


def test_twenty_mib_attachment_saved_byte_identical_by_two_other_devices(
    world: World, backend: tuple[str, dict[str, str], Callable[[], bytes]], tmp_path: Path
) -> None:
    source = tmp_path / "holiday video.mp4"
    plaintext = _plaintext(source, 20 * MIB)
    progress: list[tuple[int, int]] = []

    tracemalloc.start()
    started = time.perf_counter()
    envelope, info = world.alice.send_file(world.conversation, source, progress=lambda d, t: progress.append((d, t)))
    sent_s = time.perf_counter() - started
    send_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()

    assert envelope.seq == 1
    assert progress[-1][0] == progress[-1][1] == info.ciphertext_length
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)

    saved: list[Path] = []
    save_times: list[float] = []
    for receiver in (world.bob, world.alice_phone):
        payload = _attachment(receiver, world.conversation)
        assert payload["name"] == "holiday video.mp4" and payload["size"] == 20 * MIB
        assert payload["mime"] == "video/mp4"
        started = time.perf_counter()
        path = receiver.save_attachment(payload, tmp_path / f"saved-{receiver.device_id}")
        save_times.append(time.perf_counter() - started)
        saved.append(path)
    save_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    for path in saved:
        assert path.name == "holiday video.mp4"
        assert path.read_bytes() == plaintext
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".e2ee-partial-")]

    # The server's copy: ciphertext of the right length, and no run of the plaintext in it.
    blob = backend[2]()
    assert len(blob) == info.ciphertext_length
    assert PHRASE[:16] not in blob
    for offset in range(0, len(plaintext) - 32, 257 * 1024):
        assert plaintext[offset : offset + 32] not in blob

    server_rss = _peak_rss_mib(world.server_pid)
    saves = ", ".join(f"{t:.2f} s" for t in save_times)
    print(
        f"\n[{backend[0]}] server peak RSS {server_rss:.0f} MiB; 20 MiB: send {sent_s:.2f} s, saves {saves}; "
        f"client peak traced memory: send {send_peak / MIB:.1f} MiB, save {save_peak / MIB:.1f} MiB"
    )
    # Streaming: far below the file size on both sides (one chunk plus buffers).
    assert send_peak < 8 * MIB and save_peak < 8 * MIB


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tamper(world: World, media_dir: Path, change: Callable[[list[bytes]], list[bytes]], tmp_path: Path) -> Path:
    """Send a 5-chunk file, rewrite the stored blob, and return the receiver's destination."""
    source = tmp_path / "report.pdf"
    _plaintext(source, 4 * 65536 + 1000)
    world.alice.send_file(world.conversation, source)
    (stored,) = list((media_dir / "blobs").iterdir())
    data = stored.read_bytes()
    chunks = [data[i : i + CIPHERTEXT_CHUNK_BYTES] for i in range(0, len(data), CIPHERTEXT_CHUNK_BYTES)]
    stored.write_bytes(b"".join(change(chunks)))
    return tmp_path / "inbox"


def _flip(chunks: list[bytes]) -> list[bytes]:
    middle = bytearray(chunks[2])
    middle[100] ^= 0x40
    return [*chunks[:2], bytes(middle), *chunks[3:]]


def _swap_same_length(chunks: list[bytes]) -> list[bytes]:
    return [chunks[1], chunks[0], *chunks[2:]]


def _drop_keep_length(chunks: list[bytes]) -> list[bytes]:
    # Chunk 1 dropped and chunk 2 repeated: the length still matches what the message says.
    return [chunks[0], chunks[2], chunks[2], *chunks[3:]]


def _truncate(chunks: list[bytes]) -> list[bytes]:
    return chunks[:-1]


def _append(chunks: list[bytes]) -> list[bytes]:
    return [*chunks, chunks[0]]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_flip, "tampered"),
        (_swap_same_length, "tampered"),
        (_drop_keep_length, "tampered"),
        (_truncate, "bytes"),
        (_append, "longer"),
    ],
    ids=["flipped-byte", "reordered", "dropped", "truncated", "appended"],
)
def test_receiver_detects_a_tampered_blob_and_keeps_nothing(
    world: World,
    media_dir: Path,
    tmp_path: Path,
    change: Callable[[list[bytes]], list[bytes]],
    reason: str,
) -> None:
    inbox = _tamper(world, media_dir, change, tmp_path)
    payload = _attachment(world.bob, world.conversation)
    with pytest.raises(AttachmentError, match=reason):
        world.bob.save_attachment(payload, inbox)
    assert list(inbox.iterdir()) == []


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
def test_a_stranger_cannot_fetch_the_blob_even_with_the_key(world: World, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"private notes\n" * 100)
    world.alice.send_file(world.conversation, source)
    payload = _attachment(world.bob, world.conversation)
    mallory = Session.register(
        HttpTransport(world.url),
        server_url=world.url,
        username=f"mallory_{uuid.uuid4().hex[:6]}",
        password=PASSWORD,
        device_name="x",
    )
    world.sessions.append(mallory)
    with pytest.raises(ApiError) as refused:
        mallory.save_attachment(payload, tmp_path / "stolen")
    assert (refused.value.status, refused.value.code) == (404, "media_not_found")


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
def test_hostile_names_are_saved_inside_the_folder(world: World, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    info = world.alice.upload_file(source)
    for hostile in ("../../etc/passwd", "..\\..\\win.ini", "/abs/path", "..", "", ".hidden\x00name"):
        payload = info.to_payload(sent_at_ms=0) | {"name": hostile}
        world.alice.send_payload(world.conversation, payload, attachments=[info.blob_id])
        path = world.bob.save_attachment(payload, tmp_path / "inbox")
        assert path.parent == tmp_path / "inbox"
        assert path.read_bytes() == b"hello"
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [
        "attachment",
        "attachment (1)",
        "hidden_name",
        "passwd",
        "path",
        "win.ini",
    ]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
def test_attachment_sent_over_the_websocket_outbox_is_saved_by_the_receiver(world: World, tmp_path: Path) -> None:
    """The realtime client queues the attachment message in its outbox like any other; the blob
    id travels in the `send` frame's envelope, also when the send is sealed again for a new epoch."""
    import asyncio

    from client.realtime import Backoff, IncomingMessage, RealtimeClient
    from client.store.messages import MessageStore

    source = tmp_path / "song.ogg"
    source.write_bytes(os.urandom(200_000))
    info = world.alice.upload_file(source)
    # Alice's session still believes epoch 1: her queued send is refused as stale and sealed again,
    # and the blob id must survive that.
    assert world.bob.rotate_epoch(world.conversation) == 2

    async def scenario() -> dict[str, Any]:
        (tmp_path / "rt").mkdir()
        client = RealtimeClient(world.alice, MessageStore.open_in(tmp_path / "rt"), backoff=Backoff(0.05, 0.5))
        received: list[IncomingMessage] = []
        client.on_message(received.append)
        await client.start()
        await client.wait_connected(20)
        pending = await client.send_payload(
            world.conversation, info.to_payload(sent_at_ms=0), attachments=[info.blob_id]
        )
        await pending.wait(20)
        await client.close()
        client.store.close()
        return _attachment(world.bob, world.conversation)

    payload = asyncio.run(asyncio.wait_for(scenario(), 60))
    saved = world.bob.save_attachment(payload, tmp_path / "inbox")
    assert saved.read_bytes() == source.read_bytes()
