"""The protocol's numbers are the same on both sides: the server's (common/protocol.py) and the
SDK's own copies (it must not import the server)."""

from __future__ import annotations

from client import frames as sdk_frames
from client import protocol as sdk_protocol
from client.crypto import labels as sdk_labels
from client.crypto import wrap as sdk_wrap
from common import protocol


def test_the_sdk_speaks_the_servers_protocol_version() -> None:
    assert sdk_protocol.PROTOCOL_VERSION == sdk_labels.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION
    assert sdk_frames.hello_frame("t")["v"] == protocol.PROTOCOL_VERSION


def test_the_sdk_can_seal_every_epoch_the_server_accepts() -> None:
    # The SDK encodes epochs in 4 unsigned bytes; the server stores 31 bits.
    assert sdk_wrap.MAX_EPOCH >= protocol.MAX_EPOCH


def test_sequence_numbers_fit_the_databases_64_bit_columns() -> None:
    assert protocol.MAX_SEQ == 2**63 - 1
