"""Dev mode's outbox files are read by people: a link in one must be there as it was written."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

from teamrouter.mailer import OutboxMailer

LINK = "http://127.0.0.1:8080/invitations/accept?token=" + "Ab-_9" * 16


async def test_an_outbox_file_holds_the_link_and_the_text_as_written(tmp_path: Path) -> None:
    # Non-ASCII text made the email package pick quoted-printable: `=` became `=3D` and a long link
    # was cut by soft line breaks, so a link copied from the file did not work.
    body = f"Ada invited you to join “Café Ünion” on teamrouter.\n\nAccept: {LINK}\n"
    await OutboxMailer(tmp_path, "teamrouter@example.com").send(to="bob@example.com", subject="Join", body=body)
    (path,) = tmp_path.glob("*.eml")
    text = path.read_text(encoding="utf-8")
    assert LINK in text and "“Café Ünion”" in text
    parsed = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed.get_content() == body  # still a well-formed message


async def test_a_line_too_long_for_a_message_is_still_written_encoded(tmp_path: Path) -> None:
    body = "x" * 2_000 + "\n"
    await OutboxMailer(tmp_path, "teamrouter@example.com").send(to="bob@example.com", subject="Long", body=body)
    (path,) = tmp_path.glob("*.eml")
    assert email.message_from_bytes(path.read_bytes(), policy=policy.default).get_content() == body


async def test_the_logged_link_stops_where_the_sentence_goes_on(tmp_path: Path, caplog) -> None:
    body = "Sign in with the new password (http://127.0.0.1:8080).\n"
    await OutboxMailer(tmp_path, "teamrouter@example.com").send(to="bob@example.com", subject="Changed", body=body)
    assert caplog.messages[-1].endswith("; link: http://127.0.0.1:8080")
