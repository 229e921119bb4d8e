"""One model call, through every stage, top to bottom:

1. **policy**   every ``taskloom_check`` implementation may deny the call;
2. **routing**  ``taskloom_route`` picks the model chain (else the request's own model
   and its configured fallbacks);
3. **cache**    a hit answers at once, at no cost;
4. **provider** each deployment of the chain in turn, skipping those a policy refuses
   (``Action(kind="deployment")``) and those whose circuit is open; per attempt a
   timeout, and across all of them the request's overall ``deadline``; transient errors
   retried with exponential backoff and full jitter (a ``Retry-After`` is honoured);
   every failure feeds the breaker;
5. **pricing**  ``taskloom_price`` turns usage into exact dollars (or *unpriced*);
6. **ledger and events**  the call is recorded in the run store and sent to the sinks,
   a failed call too (with its error);
7. **cache store**  the response is kept for next time.

Streaming goes through the same stages; the cache keeps the assembled response.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from .config import ModelConfig
from .errors import (
    AllDeploymentsFailed,
    BadRequest,
    CircuitOpen,
    ConfigError,
    ContextWindowExceeded,
    PolicyDenied,
    ProviderError,
    ProviderTimeout,
)
from .records import CallRecord
from .resilience import CircuitBreaker, DeadlineExceeded, within
from .timeouts import deadline
from .types import (
    Action,
    Cost,
    Event,
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    StreamDelta,
    ToolCall,
    Usage,
    assign,
    build,
)

if TYPE_CHECKING:
    from .kernel import Kernel

_CACHE_EXCLUDE = {"metadata", "cache", "timeout", "deadline", "model"}
_STORED_EXCLUDE = {"cost", "latency_s"}
# The JSON of a request (the cache key's body) and of a response (the cached value), as
# bytes, straight from pydantic-core: the same bytes as ``model_dump_json(...).encode()``.
_request_json = ModelRequest.__pydantic_serializer__.to_json
_response_json = ModelResponse.__pydantic_serializer__.to_json
# Failures caused by the request itself say nothing about the deployment's health.
_REQUEST_FAULTS = (BadRequest, ContextWindowExceeded)


class Gateway:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.settings = kernel.settings
        self.breakers: dict[str, CircuitBreaker] = {}

    # ------------------------------------------------------------------ public

    async def complete(self, request: ModelRequest) -> ModelResponse:
        start = time.perf_counter()
        chain = self._admit_and_route(request)
        key = self._cache_key(request, chain[0])
        response = await self._cache_get(key, request, chain[0]) if key is not None else None
        if response is None:
            try:
                response = await self._call_chain(request, chain)
            except ProviderError as exc:
                await self._record_failure(request, chain, exc, key, time.perf_counter() - start)
                raise
            cost = self.kernel.price(
                response.alias, response.model, response.provider, response.usage, request.metadata
            )
            assign(response, cost=cost, latency_s=time.perf_counter() - start)
        else:
            assign(response, latency_s=time.perf_counter() - start)
        await self._record(request, response, key)
        if key is not None and not response.cached:
            await self._cache_put(key, response)
        return response

    def stream(self, request: ModelRequest) -> ModelStream:
        """Stream a call: iterate the returned object for deltas; its ``response`` holds
        the assembled answer (priced and recorded) once iteration ends."""
        return ModelStream(self, request)

    def breaker(self, alias: str, config: ModelConfig | None = None) -> CircuitBreaker:
        breaker = self.breakers.get(alias)
        if breaker is None:
            config = config or self.settings.model(alias)
            breaker = CircuitBreaker(config.circuit.threshold, config.circuit.cooldown)
            self.breakers[alias] = breaker
        return breaker

    # ------------------------------------------------------------------ stages 1-2

    def _admit_and_route(self, request: ModelRequest) -> list[str]:
        kernel = self.kernel
        if not request.model:
            request.model = self.settings.taskloom.default_model
        if "model_call" in kernel.checked:
            kernel.check(build(Action, kind="model_call", request=request, metadata=request.metadata))
        chain = kernel.route(request) if kernel.has_routers else None
        if chain:
            if kernel.has_sinks:
                kernel.emit(self._event("model.route", request, {"requested": request.model, "chain": list(chain)}))
        elif request.model == "auto":
            raise ConfigError(
                'model "auto" needs a router: enable a plugin that implements taskloom_route (e.g. router)'
            )
        else:
            config = self.settings.model(request.model)
            chain = [request.model, *config.fallbacks]
        return chain

    # ------------------------------------------------------------------ stage 3

    def _cache_key(self, request: ModelRequest, alias: str) -> str | None:
        if not request.cache or self.kernel.cache is None:
            return None
        return f"{alias}:{hashlib.sha256(_request_json(request, exclude=_CACHE_EXCLUDE)).hexdigest()}"

    async def _cache_get(self, key: str | None, request: ModelRequest, alias: str) -> ModelResponse | None:
        if key is None:
            return None
        cache = self.kernel.cache
        assert cache is not None
        try:
            data = await cache.get(key)
            if data is None:
                return None
            response = ModelResponse.model_validate_json(data)
        except Exception as exc:  # the run never fails because of the cache
            self.kernel.plugins.warn_once(
                "cache-get", f"cache read failed ({type(exc).__name__}: {exc}); calling the model"
            )
            return None
        if "deployment" in self.kernel.checked:
            # The cached answer came from response.alias (maybe a fallback): it is only
            # served to a caller that may use that model.
            try:
                self._check_deployment(request, response.alias or alias, None)
            except PolicyDenied:
                return None
        assign(response, cached=True, attempts=0, cost=build(Cost, source="cache"))
        return response

    async def _cache_put(self, key: str | None, response: ModelResponse) -> None:
        if key is None or response.finish_reason == "error":
            return
        cache = self.kernel.cache
        assert cache is not None
        try:
            await cache.set(key, _response_json(response, exclude=_STORED_EXCLUDE))
        except Exception as exc:
            self.kernel.plugins.warn_once("cache-set", f"cache write failed ({type(exc).__name__}: {exc})")

    # ------------------------------------------------------------------ stage 4

    async def _call_chain(self, request: ModelRequest, chain: list[str]) -> ModelResponse:
        failures: list[tuple[str, BaseException]] = []
        for position, alias in enumerate(chain):
            config, breaker, provider = self._enter_deployment(request, chain, position, failures)
            if breaker is None or provider is None:
                continue
            attempt = 0
            while True:
                attempt += 1
                if request.deadline is None:
                    timeout, by_deadline = request.timeout or config.timeout, False
                else:
                    timeout, by_deadline = self._attempt_timeout(request, config, alias, failures, breaker)
                try:
                    response = await within(timeout, provider.complete(request))
                    if not isinstance(response, ModelResponse):
                        raise BadRequest(
                            f"provider {provider.name} returned {type(response).__name__}, not a ModelResponse"
                        )
                except BaseException as exc:
                    if by_deadline and isinstance(exc, TimeoutError):
                        breaker.release()
                        raise self._deadline_passed(request, alias, failures) from None
                    error = self._classify(exc, alias, provider.name, timeout, breaker)
                    delay = self._after_failure(request, alias, config, breaker, error, attempt, streamed=False)
                    if delay is None:
                        failures.append((alias, error))
                        break
                    await anyio.sleep(delay)
                    continue
                return self._succeeded(response, alias, provider.name, breaker, attempt)
        raise self._chain_failed(failures)

    def _enter_deployment(
        self, request: ModelRequest, chain: list[str], position: int, failures: list[tuple[str, BaseException]]
    ) -> tuple[ModelConfig, CircuitBreaker | None, Provider | None]:
        """The deployment's config, breaker and provider; no breaker when a policy refuses
        the deployment or its circuit is open (the reason goes to ``failures``)."""
        alias = chain[position]
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise self._deadline_passed(request, alias, failures)
        config = self.settings.model(alias)
        breaker = self.breaker(alias, config)
        if position and self.kernel.has_sinks:
            self.kernel.emit(self._event("model.fallback", request, {"alias": alias, "after": chain[position - 1]}))
        provider = self.kernel.provider(alias)
        if "deployment" in self.kernel.checked:
            try:
                self._check_deployment(request, alias, provider)
            except PolicyDenied as exc:
                failures.append((alias, exc))
                if self.kernel.has_sinks:
                    self.kernel.emit(
                        self._event("model.skip", request, {"alias": alias, "plugin": exc.plugin, "reason": exc.reason})
                    )
                return config, None, None
        if not breaker.allow():
            failures.append(
                (alias, CircuitOpen(f"circuit open for {alias}; retry in {breaker.retry_in():.1f} s", model=alias))
            )
            return config, None, None
        return config, breaker, provider

    def _check_deployment(self, request: ModelRequest, alias: str, provider: Provider | None) -> None:
        self.kernel.check(
            build(Action, kind="deployment", request=request, model=alias, provider=provider, metadata=request.metadata)
        )

    def _attempt_timeout(
        self,
        request: ModelRequest,
        config: ModelConfig,
        alias: str,
        failures: list[tuple[str, BaseException]],
        breaker: CircuitBreaker,
    ) -> tuple[float, bool]:
        """Seconds for the next attempt (or wait) and whether the overall deadline, not
        the per-attempt timeout, is what bounds it."""
        timeout = request.timeout or config.timeout
        if request.deadline is None:
            return timeout, False
        remaining = request.deadline - time.monotonic()
        if remaining <= 0:
            breaker.release()
            raise self._deadline_passed(request, alias, failures)
        return (remaining, True) if remaining < timeout else (timeout, False)

    def _deadline_passed(
        self, request: ModelRequest, alias: str, failures: list[tuple[str, BaseException]]
    ) -> DeadlineExceeded:
        if self.kernel.has_sinks:
            self.kernel.emit(self._event("model.error", request, {"alias": alias, "error": "deadline passed"}))
        return DeadlineExceeded(f"the call's deadline passed before {alias} answered", model=alias, attempts=failures)

    @staticmethod
    def _classify(
        exc: BaseException, alias: str, provider: str, timeout: float, breaker: CircuitBreaker
    ) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, TimeoutError):
            return ProviderTimeout(f"{alias} did not answer within {timeout:g} s", model=alias)
        if not isinstance(exc, Exception):
            breaker.release()  # no verdict on the deployment: free a half-open trial
            raise exc  # cancellation and KeyboardInterrupt pass through untouched
        # A provider bug or a garbage answer: terminal for this deployment.
        return BadRequest(f"{alias}: provider {provider} failed: {type(exc).__name__}: {exc}", model=alias)

    def _after_failure(
        self,
        request: ModelRequest,
        alias: str,
        config: ModelConfig,
        breaker: CircuitBreaker,
        error: ProviderError,
        attempt: int,
        *,
        streamed: bool,
    ) -> float | None:
        """Record a failed attempt; return the delay before the next one, or None to give
        up on this deployment."""
        if not isinstance(error, _REQUEST_FAULTS):
            breaker.record_failure()
        policy = config.retry
        delay = policy.delay(attempt, error)
        give_up = (
            not error.transient
            or attempt >= policy.attempts
            or streamed
            or breaker.state == "open"
            or delay > policy.max_retry_after
            # a wait that would pass the deadline is not waited for: the next deployment
            # is tried at once (and the call ends if no time is left for it)
            or (request.deadline is not None and time.monotonic() + delay >= request.deadline)
        )
        if self.kernel.has_sinks:
            kind = "model.error" if give_up else "model.retry"
            data: dict[str, Any] = {
                "alias": alias,
                "attempt": attempt,
                "error": f"{type(error).__name__}: {error}",
                "transient": error.transient,
            }
            if not give_up:
                data["delay_s"] = round(delay, 3)
            self.kernel.emit(self._event(kind, request, data))
        return None if give_up else delay

    @staticmethod
    def _succeeded(
        response: ModelResponse, alias: str, provider: str, breaker: CircuitBreaker, attempt: int
    ) -> ModelResponse:
        breaker.record_success()
        assign(response, alias=alias, provider=response.provider or provider, attempts=attempt)
        return response

    @staticmethod
    def _chain_failed(failures: list[tuple[str, BaseException]]) -> BaseException:
        if all(isinstance(e, PolicyDenied) for _, e in failures):
            return failures[0][1]  # no deployment may be used: a denial, not a failure
        if len(failures) == 1:
            return failures[0][1]
        return AllDeploymentsFailed(failures)

    # ------------------------------------------------------------------ stage 6

    async def _record(self, request: ModelRequest, response: ModelResponse, key: str | None) -> None:
        kernel = self.kernel
        meta = request.metadata
        cost = response.cost or Cost.unpriced()
        if not cost.priced and cost.source is None:
            kernel.plugins.warn_once(
                f"unpriced:{response.alias}",
                f"no cost model knows the price of {response.alias} ({response.model}); its calls are reported as unpriced",
            )
        now = time.time()
        record = build(
            CallRecord,
            run_id=meta.run_id,
            task_id=meta.task_id,
            agent=meta.agent,
            user=meta.user,
            request_hash=key.partition(":")[2] if key else "",
            alias=response.alias,
            model=response.model,
            provider=response.provider,
            usage=response.usage,
            cost=cost,
            latency_s=response.latency_s,
            cached=response.cached,
            error=None,
            time=now,
        )
        try:
            await kernel.store.record_call(record)
        except Exception as exc:
            self._ledger_failed(exc)
        if kernel.has_sinks:
            kernel.emit(
                self._event(
                    "model.call",
                    request,
                    {
                        "user": meta.user,
                        "alias": response.alias,
                        "model": response.model,
                        "provider": response.provider,
                        "usage": response.usage,
                        "cost": cost,
                        "latency_s": response.latency_s,
                        "cached": response.cached,
                        "attempts": response.attempts,
                        "finish_reason": response.finish_reason,
                    },
                    now,
                )
            )

    async def _record_failure(
        self, request: ModelRequest, chain: list[str], error: ProviderError, key: str | None, latency: float
    ) -> None:
        """A call that failed after every retry and fallback goes to the ledger too, with
        its error class and message (secret values scrubbed), and as a ``model.failed``
        event. It used no tokens the provider reported, so it costs nothing."""
        if isinstance(error, DeadlineExceeded):
            alias = error.model  # where the deadline cut the call short
        elif isinstance(error, AllDeploymentsFailed) and error.attempts:
            alias = error.attempts[-1][0]  # the last deployment tried
        else:
            alias = chain[0]  # a chain of one
        config = self.settings.models.get(alias)
        meta = request.metadata
        message = self.settings.scrub(f"{type(error).__name__}: {error}")
        await self._ledger(
            CallRecord(
                run_id=meta.run_id,
                task_id=meta.task_id,
                agent=meta.agent,
                user=meta.user,
                request_hash=key.split(":", 1)[1] if key else "",
                alias=alias,
                model=config.model if config else "",
                provider=config.provider if config else "",
                latency_s=latency,
                error=message,
                time=time.time(),
            )
        )
        if self.kernel.has_sinks:
            self.kernel.emit(
                self._event(
                    "model.failed",
                    request,
                    {"user": meta.user, "alias": alias, "chain": list(chain), "error": message, "latency_s": latency},
                )
            )

    async def _ledger(self, record: CallRecord) -> None:
        try:
            await self.kernel.store.record_call(record)
        except Exception as exc:
            self._ledger_failed(exc)

    def _ledger_failed(self, exc: Exception) -> None:
        self.kernel.plugins.warn_once(
            "ledger", f"the run store could not record a model call ({type(exc).__name__}: {exc})"
        )

    @staticmethod
    def _event(kind: str, request: ModelRequest, data: dict[str, Any], now: float | None = None) -> Event:
        meta = request.metadata
        return build(
            Event,
            kind=kind,
            time=time.time() if now is None else now,
            run_id=meta.run_id,
            task_id=meta.task_id,
            agent=meta.agent,
            data=data,
        )


class StreamAssembler:
    """Builds a :class:`ModelResponse` from stream deltas; tool-call fragments are joined
    by their index."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.finish_reason: Any = None
        self.model = ""

    def add(self, delta: StreamDelta) -> None:
        if delta.text:
            self.text.append(delta.text)
        if delta.tool_index is not None:
            call = self.calls.setdefault(delta.tool_index, {"id": None, "name": "", "arguments": []})
            if delta.tool_id:
                call["id"] = delta.tool_id
            if delta.tool_name:
                call["name"] += delta.tool_name
            if delta.arguments:
                call["arguments"].append(delta.arguments)
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        if delta.model:
            self.model = delta.model

    def response(self) -> ModelResponse:
        calls = [
            ToolCall.parse(c["id"] or f"call_{i}", c["name"], "".join(c["arguments"]))
            for i, c in sorted(self.calls.items())
        ]
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return ModelResponse(
            message=Message.assistant("".join(self.text), calls),
            finish_reason=finish,
            usage=self.usage,
            model=self.model,
        )


class ModelStream:
    """``async for delta in gateway.stream(request)``; then ``.response``."""

    def __init__(self, gateway: Gateway, request: ModelRequest) -> None:
        self.gateway = gateway
        self.request = request
        self.response: ModelResponse | None = None

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self._run()

    async def _run(self) -> AsyncIterator[StreamDelta]:
        gw = self.gateway
        request = self.request
        start = time.perf_counter()
        chain = gw._admit_and_route(request)
        key = gw._cache_key(request, chain[0])
        response = await gw._cache_get(key, request, chain[0])
        if response is not None:
            yield StreamDelta(
                text=response.text, usage=response.usage, finish_reason=response.finish_reason, model=response.model
            )
            for i, call in enumerate(response.tool_calls):
                yield StreamDelta(tool_index=i, tool_id=call.id, tool_name=call.name, arguments=call.raw_arguments)
        else:
            holder: list[ModelResponse] = []
            try:
                async for delta in self._stream_chain(chain, holder):
                    yield delta
            except ProviderError as exc:
                await gw._record_failure(request, chain, exc, key, time.perf_counter() - start)
                raise
            response = holder[0]
            response.cost = gw.kernel.price(
                response.alias, response.model, response.provider, response.usage, request.metadata
            )
        response.latency_s = time.perf_counter() - start
        await gw._record(request, response, key)
        if not response.cached:
            await gw._cache_put(key, response)
        self.response = response

    async def _stream_chain(self, chain: list[str], holder: list[ModelResponse]) -> AsyncIterator[StreamDelta]:
        """The provider stage for streams: like ``Gateway._call_chain``, but a deployment
        is retried or abandoned for the next one only while nothing has been yielded.
        The timeout applies to each wait for a delta, so a long answer is not cut off;
        the request's overall deadline bounds the whole stream."""
        gw = self.gateway
        request = self.request
        failures: list[tuple[str, BaseException]] = []
        for position, alias in enumerate(chain):
            config, breaker, provider = gw._enter_deployment(request, chain, position, failures)
            if breaker is None or provider is None:
                continue
            attempt = 0
            while True:
                attempt += 1
                assembler = StreamAssembler()
                started = False
                deltas = provider.stream(request)
                timeout = request.timeout or config.timeout
                try:
                    while True:
                        timeout, by_deadline = gw._attempt_timeout(request, config, alias, failures, breaker)
                        try:
                            async with deadline(timeout):
                                try:
                                    delta = await deltas.__anext__()
                                except StopAsyncIteration:
                                    break
                        except TimeoutError:
                            if by_deadline:
                                breaker.release()
                                raise gw._deadline_passed(request, alias, failures) from None
                            raise
                        assembler.add(delta)
                        started = started or bool(delta.text or delta.tool_name or delta.arguments)
                        yield delta
                except DeadlineExceeded:
                    raise
                except BaseException as exc:
                    error = gw._classify(exc, alias, provider.name, timeout, breaker)
                    delay = gw._after_failure(request, alias, config, breaker, error, attempt, streamed=started)
                    if delay is None:
                        failures.append((alias, error))
                        if started:
                            raise error from exc
                        break
                    await anyio.sleep(delay)
                    continue
                finally:
                    aclose = getattr(deltas, "aclose", None)
                    if aclose is not None:
                        await aclose()
                holder.append(gw._succeeded(assembler.response(), alias, provider.name, breaker, attempt))
                return
        raise gw._chain_failed(failures)
