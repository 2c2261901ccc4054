"""Outgoing email: real SMTP when TEAMROUTER_SMTP_URL is set, otherwise (dev) an outbox folder.

The outbox writes each message as an .eml file under var/outbox/ and logs the first link in it, so
someone running `make serve` locally can still verify their email. Links carry one-time tokens; the
log line is the only place one is printed, and only in dev mode.
"""

from __future__ import annotations

import logging
import re
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from teamrouter.ids import new_id

log = logging.getLogger(__name__)
# A link as prose holds it: not the closing bracket or full stop of the sentence around it.
_LINK = re.compile(r"https?://\S+?(?=[).,;:!?\]>'\"]*(?:\s|$))")


class Mailer(Protocol):
    async def send(self, *, to: str, subject: str, body: str) -> None: ...


# One SMTP conversation's bound (connect, send, quit), so a dead mail server cannot hold mail jobs.
SMTP_TIMEOUT_SECONDS = 10.0


def _header_text(text: str) -> str:
    # A header is one line: the email package refuses a CR or LF in one (ValueError), which no retry
    # cures. Subjects quote names, and a name stored before teamrouter.domain.names refused line
    # breaks, or a mail queued with one, would otherwise never leave.
    return " ".join(text.splitlines())


def _message(sender: str, to: str, subject: str, body: str, *, readable: bool = False) -> EmailMessage:
    """`readable`: the body as written, for a file a person opens (the dev outbox). By default the
    email package picks quoted-printable for a body with non-ASCII text or long lines, which SMTP
    carries safely but which breaks a link in a file (`=3D` for `=`, soft line breaks)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = _header_text(subject)
    message["Message-ID"] = make_msgid(domain="teamrouter.local")
    try:
        message.set_content(body, cte="8bit" if readable else None)
    except ValueError:  # a line longer than a message may carry: encoded after all
        message.set_content(body)
    return message


def describe_send_failure(exc: BaseException) -> str:
    """A failed send, for a log line and the outbox row: the error's kind and the server's reply
    code, never its text (a refusal often quotes the recipient's address)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{type(exc).__name__} {exc.code}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return f"{type(exc).__name__} {exc.recipients[0].code}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return type(exc).__name__


def is_permanent_refusal(exc: BaseException) -> bool:
    """The mail server refused this mail for good (a 5xx reply to its recipient or its content: no
    such mailbox, rejected by policy): sending it again gets the same answer. A 5xx to anything else
    (a wrong SMTP password, the greeting, our sender address) is the deployment's to fix and would
    refuse every mail alike, so it is retried like a 4xx, a timeout or a refused connection."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return all(500 <= refusal.code < 600 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return 500 <= exc.code < 600
    return False


class SmtpMailer:
    def __init__(self, url: str, sender: str, *, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(f"TEAMROUTER_SMTP_URL must look like smtp://host:port, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self._tls = parts.scheme == "smtps"
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender
        self._timeout = timeout

    async def send(self, *, to: str, subject: str, body: str) -> None:
        await aiosmtplib.send(
            _message(self._sender, to, subject, body),
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            start_tls=False if self._tls else None,
            username=self._user,
            password=self._password,
            timeout=self._timeout,
        )


class OutboxMailer:
    def __init__(self, folder: Path, sender: str) -> None:
        self._folder = folder
        self._sender = sender

    async def send(self, *, to: str, subject: str, body: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"{new_id('mail')}.eml"
        # Written aside, then renamed: whoever watches the folder sees a whole message or none.
        partial = path.with_suffix(".partial")
        partial.write_bytes(bytes(_message(self._sender, to, subject, body, readable=True)))
        partial.replace(path)
        link = _LINK.search(body)
        log.warning(
            "email to %s (%s) written to %s%s",
            to,
            subject,
            path,
            f"; link: {link.group(0)}" if link else "",
        )
