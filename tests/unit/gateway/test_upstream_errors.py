"""Which error a client hears when every candidate endpoint failed, and which mail refusals are final."""

from __future__ import annotations

import aiosmtplib
import pytest

from teamrouter.gateway.upstream_errors import as_api_error, worse
from teamrouter.mailer import is_permanent_refusal
from teamrouter.providers.base import UnsupportedRequestError, UpstreamError, upstream_error


def test_an_endpoint_that_could_not_be_asked_never_hides_an_upstreams_own_error() -> None:
    # [OpenAI-compatible answered 503, Anthropic could not take the request] and the reverse order
    # both report the upstream's 503 (a 502 to the client), not the field the skipped one needed.
    down = UpstreamError(503, "overloaded", retryable=True)
    skipped = UnsupportedRequestError("reasoning on Anthropic needs max_tokens above 1024", field="max_tokens")
    for order in ([down, skipped], [skipped, down]):
        last = None
        for error in order:
            last = worse(last, error)
        assert last is down
        assert as_api_error(last).status == 502
    # Only when no endpoint could be asked at all does the client hear which field to change.
    alone = as_api_error(worse(None, skipped))
    assert alone.status == 400 and alone.code == "invalid_field" and alone.metadata == {"field": "max_tokens"}


@pytest.mark.parametrize(
    ("body", "code", "upstream_code"),
    [
        (  # OpenAI
            b'{"error": {"message": "This model\'s maximum context length is 8192 tokens.", "type":'
            b' "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}',
            "context_length_exceeded",
            "context_length_exceeded",
        ),
        (  # Anthropic: no such code, its own words
            b'{"type": "error", "error": {"type": "invalid_request_error",'
            b' "message": "prompt is too long: 210000 tokens > 200000 maximum"}}',
            "context_length_exceeded",
            "invalid_request_error",
        ),
        (  # vLLM: a class name for a type, OpenAI's words
            b'{"object": "error", "message": "This model\'s maximum context length is 4096 tokens. However,'
            b' you requested 5000 tokens.", "type": "BadRequestError", "code": 400}',
            "context_length_exceeded",
            "BadRequestError",
        ),
        (
            b'{"error": {"message": "temperature: too high", "code": "invalid_value"}}',
            "upstream_rejected",
            "invalid_value",
        ),
        (b'{"error": {"message": "no", "code": "<script>"}}', "upstream_rejected", None),  # not a plain code
        (b"[" * 5_000 + b"]" * 5_000, "upstream_rejected", None),  # never a RecursionError
    ],
)
def test_an_upstream_refusal_carries_its_code_and_a_prompt_too_long_is_named_so(
    body: bytes, code: str, upstream_code: str | None
) -> None:
    error = as_api_error(upstream_error(400, body))
    assert error.status == 400 and error.code == code
    assert error.metadata == ({"upstream_code": upstream_code} if upstream_code else {})


def test_only_a_refusal_of_the_mail_itself_is_final() -> None:
    assert is_permanent_refusal(aiosmtplib.SMTPDataError(550, "rejected"))
    assert is_permanent_refusal(aiosmtplib.SMTPRecipientRefused(550, "no such mailbox", "a@b.example"))
    assert is_permanent_refusal(
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b.example")])
    )
    # The deployment's own mistakes refuse every mail alike: retried, never given up at once.
    assert not is_permanent_refusal(aiosmtplib.SMTPAuthenticationError(535, "bad credentials"))
    assert not is_permanent_refusal(aiosmtplib.SMTPSenderRefused(553, "not allowed", "noreply@x.example"))
    assert not is_permanent_refusal(aiosmtplib.SMTPDataError(451, "try later"))
    assert not is_permanent_refusal(TimeoutError())
