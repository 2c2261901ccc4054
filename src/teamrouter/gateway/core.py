"""The inference path, without HTTP types: authenticate → route → reserve → call → settle → record.

`Gateway.prepare` does everything up to and including the hold; `complete` and `stream` call the
upstream (falling back before the first byte), settle exactly once and write the activity row. Every
path out of a prepared request either settles or voids its hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
from sqlalchemy.exc import SQLAlchemyError

from teamrouter.clock import Clock
from teamrouter.config import Settings
from teamrouter.errors import (
    BadRequest,
    ServiceUnavailable,
    bad_field,
    database_unavailable,
)
from teamrouter.gateway import calls
from teamrouter.gateway.admission import Admission, KeyInfo, admit
from teamrouter.gateway.billing import Bill, bill, cost_fields, usage_json
from teamrouter.gateway.catalog import Catalog, Endpoint
from teamrouter.gateway.keepalive import Keepalive
from teamrouter.gateway.ratelimit import RateLimiter, make_rate_limiter
from teamrouter.gateway.routing import (
    InvalidRoutingRequest,
    NoEndpointsError,
    OrgPolicy,
    RouteCache,
    RoutingError,
    UnknownModelError,
    parse_provider_preferences,
)
from teamrouter.gateway.stats import ProviderStats
from teamrouter.gateway.store.base import GatewayStore, GenerationRecord
from teamrouter.gateway.streaming import (
    Committed,
    Emit,
    Head,
    StreamOutcome,
    close_stream,
    unless_client_leaves,
    until_output,
)
from teamrouter.gateway.upstream_errors import as_api_error, error_event, masked, worse
from teamrouter.ids import new_generation_id
from teamrouter.providers.base import (
    DONE,
    ChatRequest,
    Kind,
    ProviderAdapter,
    UnsupportedRequestError,
    UpstreamError,
    UpstreamRequest,
    Usage,
    billable_usage,
    estimate_completion_tokens,
    output_chars,
    usage_chunk,
)
from teamrouter.providers.checks import TOO_DEEP, RequestError, check_nesting

log = logging.getLogger(__name__)

_T = TypeVar("_T")

KeyResolver = Callable[[str], Awaitable[KeyInfo]]
PolicyLoader = Callable[[str], Awaitable[OrgPolicy]]


@dataclass(slots=True)
class Prepared:
    key: KeyInfo
    admission: Admission
    generation_id: str
    started: float  # perf_counter at arrival
    created: int  # unix seconds, the `created` of the answer
    referer: str | None
    title: str | None


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        catalog: Catalog,
        store: GatewayStore,
        http: aiohttp.ClientSession,
        adapters: Mapping[str, ProviderAdapter],
        resolve_key: KeyResolver,
        org_policy: PolicyLoader,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.catalog = catalog
        self.store = store
        self.http = http
        self.adapters = adapters
        self.resolve_key = resolve_key
        self.org_policy = org_policy
        self.limiter = limiter or make_rate_limiter(settings.key_rate_limit_per_minute, settings.redis_url)
        self.timeouts = {p.slug: calls.Timeouts.of(p) for p in catalog.providers()}
        self.stats = ProviderStats()
        self.routes = RouteCache(catalog, stats=self.stats.for_sort())
        # What else lives as long as the gateway (cache invalidations over Redis): closed with it.
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    # -- admission ---------------------------------------------------------------------------

    async def prepare(
        self,
        *,
        token: str,
        body: bytes,
        kind: Kind,
        referer: str | None,
        title: str | None,
        started: float,
        generation_id: str | None = None,
    ) -> Prepared:
        try:
            key = await self.resolve_key(token)
        except _DATABASE_DOWN as exc:
            raise _database_down("key lookup", exc) from exc
        await self.limiter.check(key.key_id)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):  # well-formed, but past the parser's 1,024 levels
                raise bad_field("body", TOO_DEEP) from exc
            raise BadRequest("Malformed JSON body", code="malformed_json", field="body") from exc
        try:
            check_nesting(body, payload)
            request = ChatRequest.parse(payload, kind=kind)
            prefs = parse_provider_preferences(request.provider) if request.provider is not None else None
        except (RequestError, InvalidRoutingRequest) as exc:
            raise bad_field(exc.field, exc.problem) from exc
        try:
            policy = await self.org_policy(key.organization_id) if key.organization_id else None
        except _DATABASE_DOWN as exc:
            raise _database_down("organization policy lookup", exc) from exc
        try:
            candidates = self.routes.route(model=request.model, models=request.models, prefs=prefs, org=policy)
        except UnknownModelError as exc:
            raise BadRequest(str(exc), code="unknown_model", field=exc.field) from exc
        except NoEndpointsError as exc:
            raise ServiceUnavailable(str(exc), code="no_endpoints") from exc
        except InvalidRoutingRequest as exc:  # e.g. a provider the catalog does not list
            raise bad_field(exc.field, exc.problem) from exc
        except RoutingError as exc:
            raise BadRequest(str(exc), code="routing") from exc
        if kind == "completion" or request.n > 1:
            # Anthropic's Messages API has neither legacy text completions nor `n`: decided here,
            # before any hold, rather than by a refusal from the adapter after one.
            candidates = tuple(e for e in candidates if e.provider.kind != "anthropic")
            if not candidates and kind == "completion":
                raise ServiceUnavailable(
                    "No endpoint of this model serves legacy text completions", code="no_endpoints"
                )
            if not candidates:
                raise bad_field("n", "no endpoint of this model supports n > 1")
        admission = await admit(
            self.store,
            key=key,
            request=request,
            candidates=candidates,
            clock=self.clock,
            hold_ttl_seconds=self.settings.hold_ttl_seconds,
        )
        return Prepared(
            key=key,
            admission=admission,
            generation_id=generation_id or new_generation_id(),
            started=started,
            created=int(time.time()),
            referer=referer,
            title=title,
        )

    async def abandon(self, prepared: Prepared) -> None:
        """Void the hold of a request that never reached an upstream answer."""
        await self.store.void(prepared.admission.hold, now=self.clock.now())

    # -- calling upstream ----------------------------------------------------------------------

    def _attempts(
        self, prepared: Prepared, *, stream: bool
    ) -> Iterator[tuple[Endpoint, ProviderAdapter, UpstreamRequest | UnsupportedRequestError]]:
        """Each candidate with its upstream request, built only when it is about to be tried: the
        first candidate usually answers, and a request body is re-encoded per candidate. A candidate
        that cannot take the request as asked comes with the reason instead, raised by the caller
        like any failure before the first byte (so the next candidate is tried)."""
        for endpoint in prepared.admission.candidates:
            adapter = self.adapters[endpoint.provider.kind]
            try:
                upstream: UpstreamRequest | UnsupportedRequestError = adapter.build_request(
                    endpoint,
                    prepared.admission.request.body,
                    stream,
                    max_tokens=prepared.admission.budget(endpoint),
                    kind=prepared.admission.request.kind,
                )
            except UnsupportedRequestError as exc:
                upstream = exc
            yield endpoint, adapter, upstream

    async def _call(
        self,
        call: Callable[..., Coroutine[Any, Any, _T]],
        adapter: ProviderAdapter,
        endpoint: Endpoint,
        upstream: UpstreamRequest,
        disconnected: asyncio.Future[None],
    ) -> tuple[_T | None, bool]:
        """`call` (`calls.fetch` or `calls.open_stream`) to `endpoint`, cut short if the client
        leaves first: its result (None when cut), and whether the request body had gone out."""
        payload = calls.Body(upstream.json_body)
        pending = call(self.http, adapter, endpoint, upstream, self.timeouts[endpoint.provider.slug], payload)
        return await unless_client_leaves(pending, disconnected), payload.sent

    async def complete(self, prepared: Prepared, disconnected: asyncio.Future[None]) -> bytes | None:
        """A whole answer as JSON bytes, settled. Voids the hold if every endpoint failed.

        None when the client left (`disconnected`, resolved when it goes away) before an upstream
        answered: that upstream call is cancelled and only the prompt it received is billed
        (`_bill_the_prompt`), as for a stream whose client left before its first byte. Without
        this, a client that gave up on a slow answer (an SDK's timeout, which then retries) paid
        for the whole answer it never received.
        """
        last: UpstreamError | None = None
        left: Endpoint | None = None  # had the request when the client left
        try:
            for endpoint, adapter, upstream in self._attempts(prepared, stream=False):
                if disconnected.done():
                    break  # nobody to answer: no further upstream is asked
                try:
                    if isinstance(upstream, UnsupportedRequestError):
                        raise upstream
                    fetched, sent = await self._call(calls.fetch, adapter, endpoint, upstream, disconnected)
                    if fetched is None:  # the client left while the call was pending: it is cancelled
                        left = endpoint if sent else None
                        break
                    status, raw = fetched
                    parsed = adapter.parse_response(
                        status,
                        raw,
                        kind=prepared.admission.request.kind,
                        response_id=prepared.generation_id,
                        model=endpoint.model_id,
                        exclude_reasoning=prepared.admission.request.exclude_reasoning,
                    )
                except UpstreamError as exc:
                    last = worse(last, masked(exc, endpoint))
                    log.info("upstream %s failed: %s", endpoint.id, exc.status)
                    if exc.retryable:
                        continue
                    break
                first_byte = time.perf_counter()
                usage = parsed.usage or Usage(
                    prepared.admission.prompt_estimate,
                    estimate_completion_tokens(output_chars(parsed.body) + parsed.withheld_chars),
                    estimated=True,
                )
                charged = bill(endpoint, usage=usage, finish_reason=parsed.finish_reason)
                await self._settle(
                    prepared,
                    endpoint,
                    charged,
                    parsed.finish_reason,
                    streamed=False,
                    first_byte=first_byte,
                    outcome=StreamOutcome(),
                )
                body = parsed.body
                body["id"] = prepared.generation_id
                body["model"] = endpoint.model_id
                body["provider"] = endpoint.provider.name
                body.setdefault("system_fingerprint", None)
                body["usage"] = usage_json(charged)
                return orjson.dumps(body)
        except BaseException:
            await self._void_quietly(prepared)
            raise
        if left is not None:
            await self._bill_the_prompt(prepared, left, streamed=False)
            return None
        await self._void_quietly(prepared)
        if disconnected.done():
            return None
        raise as_api_error(last)

    async def stream(
        self,
        prepared: Prepared,
        emit: Emit,
        response: Head,
        disconnected: asyncio.Future[None],
    ) -> None:
        """Stream the answer through `emit`, ending with one usage chunk (with cost) and [DONE].

        Each `emit` call gets one or more whole SSE events (those of one upstream read).

        `response.start()` sends the response head (once, whoever asks: the front end reads
        `response.sent` too), when the first upstream bytes arrive; a failure before that is an
        ordinary JSON error (and a fallback). An upstream commits once its stream carries
        output (text, reasoning, a tool call) or finishes: its preamble (a role chunk, Anthropic's
        message_start) is passed on as it comes, and an error event, a break or an end before any
        output still falls back to the next endpoint (an overloaded upstream fails just so), nothing
        billed. When none is left after the head went out, the stream ends with an error event.
        `disconnected` is resolved when the client goes away (by the server: teamrouter.server). A
        stream silent for `stream_keepalive_seconds` (an upstream yet to answer, or thinking between
        two tokens) gets an SSE comment, its head going out first if it had not (`keepalive`).
        """
        every = self.settings.stream_keepalive_seconds
        if every <= 0:
            await self._stream(prepared, emit, response, disconnected)
            return
        keepalive = Keepalive(every, response.start, emit)
        try:
            await self._stream(prepared, keepalive.emit, response, disconnected)
        finally:
            await keepalive.stop()

    async def _stream(self, prepared: Prepared, emit: Emit, response: Head, disconnected: asyncio.Future[None]) -> None:
        last: UpstreamError | None = None
        chosen: Committed | None = None
        tried: Endpoint | None = None
        left: Endpoint | None = None  # had the request when the client left
        start = response.start

        try:
            for endpoint, adapter, upstream in self._attempts(prepared, stream=True):
                if disconnected.done():
                    break  # nobody to answer: no further upstream is asked
                opened: calls.OpenStream | None = None
                tried = endpoint
                try:
                    if isinstance(upstream, UnsupportedRequestError):
                        raise upstream
                    opened, sent = await self._call(calls.open_stream, adapter, endpoint, upstream, disconnected)
                    if opened is None:  # the client left while the call was pending: it is cancelled
                        left = endpoint if sent else None
                        break
                    parser = adapter.stream_parser(
                        kind=prepared.admission.request.kind,
                        response_id=prepared.generation_id,
                        model=endpoint.model_id,
                        provider=endpoint.provider.name,
                        exclude_reasoning=prepared.admission.request.exclude_reasoning,
                    )
                    first_byte = time.perf_counter()
                    # The client leaving while the upstream has yet to say anything cancels it.
                    close_upstream = functools.partial(close_stream, opened)
                    disconnected.add_done_callback(close_upstream)
                    try:
                        head = await until_output(parser, opened, disconnected, emit, start)
                    finally:
                        disconnected.remove_done_callback(close_upstream)
                except UpstreamError as exc:
                    if opened is not None and opened.close is not None:
                        opened.close()
                    last = worse(last, masked(exc, endpoint))
                    log.info("upstream %s failed before any output: %s", endpoint.id, exc.status)
                    if exc.retryable:
                        continue
                    break
                except BaseException:
                    if opened is not None and opened.close is not None:
                        opened.close()  # cancelled, or a bug: never leave the connection to the collector
                    raise
                chosen = Committed(endpoint, opened, parser, head, first_byte)
                break
        except BaseException:
            await self._void_quietly(prepared)
            raise
        if left is not None:
            await self._bill_the_prompt(prepared, left, streamed=True)
            return
        if chosen is None:
            await self._void_quietly(prepared)
            if disconnected.done():
                return  # the client left before any upstream had its request: nothing billed
            if not response.sent:
                raise as_api_error(last)
            # The head went out (with a preamble that led nowhere, or a keepalive comment): the
            # stream ends with the error.
            endpoint = tried or prepared.admission.candidates[0]
            await emit(error_event(prepared.generation_id, endpoint, prepared.created, as_api_error(last)))
            return
        await self._pump(prepared, chosen, emit, start, disconnected)

    async def _pump(
        self,
        prepared: Prepared,
        committed: Committed,
        emit: Emit,
        on_start: Callable[[], Awaitable[None]],
        disconnected: asyncio.Future[None],
    ) -> None:
        endpoint, opened, parser, first_byte = (
            committed.endpoint,
            committed.opened,
            committed.parser,
            committed.first_byte,
        )
        # A client gone while the upstream said nothing yet: billed as for any client that leaves.
        outcome = StreamOutcome(cancelled=disconnected.done())

        def client_gone(_: asyncio.Future[None]) -> None:
            outcome.cancelled = True
            if opened.close is not None:
                opened.close()  # cancels the upstream generation: its connection is dropped

        # A done-callback rather than a task waiting on an event: one task fewer per stream.
        disconnected.add_done_callback(client_gone)
        try:
            await on_start()
            # The events of one upstream read leave in one write: the same bytes in the same
            # order, one send (and socket write) instead of one per event.
            if committed.head:
                await emit(b"".join(committed.head))
            try:
                async for chunk in opened.rest:
                    if outcome.cancelled:
                        break
                    if events := parser.feed(chunk):
                        await emit(b"".join(events))
                if events := parser.close():
                    await emit(b"".join(events))
            except (UpstreamError, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                if not outcome.cancelled:
                    outcome.broken = (
                        exc
                        if isinstance(exc, UpstreamError)
                        else UpstreamError(502, f"upstream stream broke: {type(exc).__name__}", retryable=False)
                    )
            if parser.error is not None and outcome.broken is None:
                outcome.broken = parser.error
            if outcome.broken is None and not outcome.cancelled and not parser.done and not parser.finish_reason:
                # The body ended cleanly but the answer did not (no finish reason, no [DONE] or
                # message_stop): a cut the client must hear about, not a short answer.
                outcome.broken = UpstreamError(502, "upstream stream ended before the answer finished", retryable=False)
        finally:
            disconnected.remove_done_callback(client_gone)
            # Settle even when the client is gone or this task is being cancelled: the upstream
            # has done (some of) the work, and the hold must resolve exactly once.
            charged = bill(
                endpoint,
                usage=billable_usage(parser, prompt_estimate=prepared.admission.prompt_estimate),
                finish_reason="error" if outcome.broken and not parser.finish_reason else parser.finish_reason,
                cancelled=outcome.cancelled,
                broken=outcome.broken is not None,
            )
            try:
                await asyncio.shield(
                    self._settle(
                        prepared,
                        endpoint,
                        charged,
                        parser.finish_reason,
                        streamed=True,
                        first_byte=first_byte,
                        outcome=outcome,
                    )
                )
            except ServiceUnavailable as exc:
                outcome.unsettled = exc  # the store retried; its hold is left to the sweeper
        if outcome.cancelled:
            return
        created = parser.created or prepared.created
        if outcome.unsettled is not None:
            # An answer that could not be billed does not complete: an error event, no usage, no [DONE].
            await emit(error_event(prepared.generation_id, endpoint, created, outcome.unsettled))
            return
        tail = (
            [error_event(prepared.generation_id, endpoint, created, outcome.broken)]
            if outcome.broken is not None
            else []
        )
        tail.append(
            usage_chunk(
                response_id=prepared.generation_id,
                model=endpoint.model_id,
                created=created,
                usage=charged.usage,
                kind=prepared.admission.request.kind,
                extra_usage=cost_fields(charged),
                provider=endpoint.provider.name,
            )
        )
        tail.append(DONE)
        await emit(b"".join(tail))

    # -- settlement ------------------------------------------------------------------------------

    async def _bill_the_prompt(self, prepared: Prepared, endpoint: Endpoint, *, streamed: bool) -> None:
        """Settle a request whose client left while `endpoint` worked on it, before any answer came:
        the upstream had the prompt (its body went out: `calls.Body`), so it is billed with any
        per-request price, from the estimate (no usage came back) and flagged so. A client's own
        cancellation is never insured (billing); what an upstream produced after the cancel
        reached no one, and is not billed. Called outside the attempts' `try`, like `_pump`: a
        shutdown cancelling this wait must not void the hold beside the shielded settlement."""
        usage = Usage(prepared.admission.prompt_estimate, 0, estimated=True)
        charged = bill(endpoint, usage=usage, finish_reason=None, cancelled=True)
        # Shielded: a shutdown cancelling this task must not leave the hold half-resolved.
        await asyncio.shield(
            self._settle(
                prepared,
                endpoint,
                charged,
                None,
                streamed=streamed,
                first_byte=time.perf_counter(),  # none came: latency is how long the client waited
                outcome=StreamOutcome(cancelled=True),
            )
        )

    async def _settle(
        self,
        prepared: Prepared,
        endpoint: Endpoint,
        charged: Bill,
        finish_reason: str | None,
        *,
        streamed: bool,
        first_byte: float,
        outcome: StreamOutcome,
    ) -> None:
        now = time.perf_counter()
        key = prepared.key
        request = prepared.admission.request
        record = GenerationRecord(
            id=prepared.generation_id,
            created_at=self.clock.now(),
            account_id=key.account_id,
            organization_id=key.organization_id,
            key_id=key.key_id,
            key_hash=key.hash,
            user_id=key.creator_user_id,
            model=endpoint.model_id,
            provider=endpoint.provider.slug,
            endpoint_id=endpoint.id,
            upstream_model=endpoint.upstream_model,
            tokens_prompt=charged.usage.prompt_tokens,
            tokens_completion=charged.usage.completion_tokens,
            tokens_reasoning=charged.usage.reasoning_tokens,
            tokens_cached=charged.usage.cached_tokens,
            cost=charged.cost,
            latency_ms=int((first_byte - prepared.started) * 1000),
            generation_time_ms=int((now - first_byte) * 1000),
            finish_reason="error" if outcome.broken and not finish_reason else finish_reason,
            streamed=streamed,
            cancelled=outcome.cancelled,
            usage_estimated=charged.estimated,
            status_code=502 if outcome.broken else 200,
            external_user=request.user[:200] if request.user else None,
            app_referer=prepared.referer[:500] if prepared.referer else None,
            app_title=prepared.title[:200] if prepared.title else None,
        )
        if not outcome.broken and not outcome.cancelled:
            self.stats.observe(
                endpoint.provider.slug,
                latency_ms=record.latency_ms,
                tokens=record.tokens_completion,
                generation_ms=record.generation_time_ms,
            )
        try:
            await self.store.settle(prepared.admission.hold, record, now=record.created_at)
        except Exception:
            # The hold stays open; the sweeper expires it. Logged without request content.
            log.exception("settlement failed for %s", prepared.generation_id)
            raise

    async def _void_quietly(self, prepared: Prepared) -> None:
        try:
            await asyncio.shield(self.store.void(prepared.admission.hold, now=self.clock.now()))
        except Exception:
            log.exception("void failed for %s (the sweeper will expire it)", prepared.generation_id)


# The database could not be reached by a look-up outside the store (keys, org policies: SQLAlchemy).
# The store maps its own failures, after retrying, to ServiceUnavailable.
_DATABASE_DOWN = (SQLAlchemyError, OSError)


def _database_down(what: str, exc: Exception) -> ServiceUnavailable:
    log.warning("database unreachable during %s (%s)", what, type(exc).__name__)
    return database_unavailable()
