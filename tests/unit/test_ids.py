"""Object ids carry their hash slot: the parsing rules that routing (and every 404) rests on."""

from __future__ import annotations

import pytest

from shardpay import ids


@pytest.mark.parametrize("slot", [0, 1, 0xA3F, ids.SLOTS - 1])
def test_a_new_id_parses_back_to_its_slot(slot: int) -> None:
    object_id = ids.new_id("tr", slot)
    assert object_id.startswith("tr_") and len(object_id) == len("tr_") + 24
    assert ids.parse(object_id, "tr") == slot


def test_new_ids_are_unique() -> None:
    assert len({ids.new_id("wal", 7) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "object_id",
    [
        "wal_00a3" + "0" * 20,  # another prefix
        "tr_00a3" + "0" * 19,  # too short
        "tr_00a3" + "0" * 21,  # too long
        "tr_00A3" + "0" * 20,  # uppercase hex
        "tr_00g3" + "0" * 20,  # not hex
        "tr_1000" + "0" * 20,  # slot 4096: outside the map
        "tr_ffff" + "0" * 20,
        " tr_00a3" + "0" * 20,
        "tr_00a3" + "0" * 20 + "\n",  # a trailing newline is not part of an id
        "",
    ],
)
def test_malformed_ids_have_no_slot(object_id: str) -> None:
    assert ids.parse(object_id, "tr") is None


def test_the_highest_slot_is_accepted() -> None:
    assert ids.parse("tr_0fff" + "0" * 20, "tr") == ids.SLOTS - 1


@pytest.mark.parametrize(("prefix", "slot"), [("xx", 0), ("wal", -1), ("wal", ids.SLOTS)])
def test_new_id_refuses_unknown_prefixes_and_slots(prefix: str, slot: int) -> None:
    with pytest.raises(ValueError):
        ids.new_id(prefix, slot)


def test_slot_for_is_stable_and_in_range() -> None:
    slots = [ids.slot_for("mer_1", f"key-{n}") for n in range(2000)]
    assert slots == [ids.slot_for("mer_1", f"key-{n}") for n in range(2000)]
    assert all(0 <= slot < ids.SLOTS for slot in slots)
    assert len(set(slots)) > 1000  # spread over the slots, not bunched
    assert ids.slot_for("a", "bc") != ids.slot_for("ab", "c")  # parts are separated, not concatenated


def test_random_hex_never_repeats_across_threads_or_a_fork() -> None:
    import os
    import threading

    from shardpay.ids import random_hex

    assert len(random_hex(10)) == 20 and len(random_hex(5000)) == 10_000  # more than the pool at once
    seen: list[str] = []

    def take() -> None:
        seen.extend(random_hex(10) for _ in range(2000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 8000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it draws next must not be what the parent draws next from the same buffer
        os.write(write, random_hex(10).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != random_hex(10)
