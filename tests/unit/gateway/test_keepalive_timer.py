"""The keepalive's timing and the head's once-only send, on a recording stand-in for the client."""

from __future__ import annotations

import asyncio

from teamrouter.gateway.keepalive import COMMENT, Keepalive
from teamrouter.gateway.streaming import Head


class _Client:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def head(self) -> None:
        await asyncio.sleep(0.02)  # a head that takes a while to go out
        self.sent.append(b"HEAD")

    async def emit(self, data: bytes) -> None:
        self.sent.append(data)


async def test_a_second_caller_waits_for_the_head_so_nothing_goes_out_before_it() -> None:
    client = _Client()
    head = Head(client.head)
    assert not head.sent

    async def event() -> None:
        await head.start()
        await client.emit(b"data")

    await asyncio.gather(head.start(), event())
    assert client.sent == [b"HEAD", b"data"] and head.sent


async def test_comments_come_only_after_silence_and_never_after_stop() -> None:
    client = _Client()
    head = Head(client.head)
    keepalive = Keepalive(0.1, head.start, client.emit)
    for _ in range(6):  # talking every 40 ms: never silent for 100 ms
        await keepalive.emit(b"data")
        await asyncio.sleep(0.04)
    assert COMMENT not in client.sent
    await asyncio.sleep(0.35)  # silent: the head goes out, then a comment about every 100 ms
    assert client.sent[0] == b"data" and 2 <= client.sent.count(COMMENT) <= 4
    await keepalive.stop()
    count = len(client.sent)
    await asyncio.sleep(0.25)
    assert len(client.sent) == count


async def test_zero_turns_it_off() -> None:
    client = _Client()
    keepalive = Keepalive(0, Head(client.head).start, client.emit)
    await asyncio.sleep(0.1)
    await keepalive.stop()
    assert client.sent == []


async def test_no_comment_while_a_slow_reader_holds_up_an_event() -> None:
    client = _Client()
    release = asyncio.Event()

    async def slow_emit(data: bytes) -> None:
        client.sent.append(data)
        if data == b"last":
            await release.wait()  # the client is not reading

    keepalive = Keepalive(0.05, Head(client.head).start, slow_emit)
    sending = asyncio.ensure_future(keepalive.emit(b"last"))
    await asyncio.sleep(0.2)
    assert client.sent == [b"last"]  # held up, not silent: no comment after the last event
    release.set()
    await sending
    await keepalive.stop()
    await asyncio.sleep(0.1)
    assert client.sent == [b"last"]
