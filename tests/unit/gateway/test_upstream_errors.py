"""Which error a client hears when every candidate endpoint failed, and which mail refusals are final."""

from __future__ import annotations

import aiosmtplib

from teamrouter.gateway.upstream_errors import as_api_error, worse
from teamrouter.mailer import is_permanent_refusal
from teamrouter.providers.base import UnsupportedRequestError, UpstreamError


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
