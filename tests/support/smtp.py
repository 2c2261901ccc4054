"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for email tests."""

from __future__ import annotations

import asyncio
import email
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

HOLD_AT_MOST = 30.0  # a test that fails with the gate closed must not hang the sink for ever


def _open() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


@dataclass
class Sink:
    messages: list[Message] = field(default_factory=list)
    # Cleared, the sink takes each message but does not answer it until the gate opens: a sender
    # that waits for its mail waits with it (tests/integration/test_mail_after_answer.py).
    gate: threading.Event = field(default_factory=_open)
    arrived: int = 0  # messages received, answered or still held
    # The next this many messages are refused with `refusal` and not kept (a mail server that is
    # full, greylisting, or refusing for good: tests/integration/test_mail_outbox.py).
    refuse_next: int = 0
    refusal: str = "451 4.3.0 Try again later"
    refused: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return self.refusal
        self.arrived += 1
        deadline = time.monotonic() + HOLD_AT_MOST
        while not self.gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the sink's own loop and thread: other sessions go on
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def wait_until_arrived(self, count: int, *, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.arrived < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.arrived} message(s) arrived within {timeout}s, not {count}")
            time.sleep(0.02)

    def wait_for(self, to: str, *, count: int = 1, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if m["To"] == to]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no email to {to} within {timeout}s; got {[m['To'] for m in self.messages]}")

    @staticmethod
    def token_in(message: Message) -> str:
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        match = re.search(r"token=([A-Za-z0-9_\-]+)", payload.decode())
        assert match, "no token link in the message"
        return match.group(1)


async def delivered(rt: Any, smtp: SmtpServer, to: str, *, count: int = 1) -> list[Message]:
    """The mails to `to` once an in-process runtime's queued work has run. Mail leaves after the
    answer (teamrouter.background), and `Sink.wait_for` sleeps: called alone on the event loop
    that sends the mail, it would wait for nothing."""
    await rt.background.idle()
    return smtp.sink.wait_for(to, count=count, timeout=1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SmtpServer:
    def __init__(self) -> None:
        self.sink = Sink()
        self.port = free_port()
        self._controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
