"""The server's own encoding of the signed device list (devices/device_list.py) gives the hashes of
the test vectors in protocol.md 2.13, so the chain it checks is the one clients sign."""

from __future__ import annotations

import uuid

from devices.device_list import GENESIS_PREV_HASH, DeviceListEntryData, ListedDevice, device_list_entry_hash

LAPTOP = ListedDevice(
    uuid.UUID("11111111-1111-4111-8111-111111111111"),
    bytes.fromhex("7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"),
    bytes.fromhex("204040e364c10f2bec9c1fe500a1cd4c247c89d650a01ed7e82caba867877c21"),
    "laptop",
)
PHONE = ListedDevice(
    uuid.UUID("22222222-2222-4222-8222-222222222222"),
    bytes.fromhex("0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"),
    bytes.fromhex("74f85cda34d1c27c4621484731e91579c3d9c6cfc0d94b281aa11e9162058aa9"),
    "phone",
)


def test_server_encoding_reproduces_the_document_hashes() -> None:
    first = DeviceListEntryData(
        version=1,
        prev_hash=GENESIS_PREV_HASH,
        change="created",
        subject_device_id=LAPTOP.device_id,
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=1764115200000,
        devices=(LAPTOP,),
        signature=b"",
    )
    first_hash = device_list_entry_hash(username="alice", entry=first)
    assert first_hash.hex() == "b0ca02aa03fa2dfd029464bb2e1a88874c7d26ae03f54eb9dc0e5e4d0092501a"
    second = DeviceListEntryData(
        version=2,
        prev_hash=first_hash,
        change="linked",
        subject_device_id=PHONE.device_id,
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=1764115260000,
        devices=(LAPTOP, PHONE),
        signature=b"",
    )
    expected = "fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a"
    assert device_list_entry_hash(username="alice", entry=second).hex() == expected
