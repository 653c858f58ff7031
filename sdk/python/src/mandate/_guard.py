"""``@guard``: authorize a tool call before it runs, account for it after.

>>> @mandate.guard(action="payments.charge",
...                resource=lambda args: f"merchant://{args['merchant']}",
...                amounts=lambda args: {"usd_cents": args["cents"]})
... def charge(merchant: str, cents: int) -> dict: ...

The order of one guarded call, and what each failure does:

1. The request is built from the call's arguments (``args``: a ``dict`` of
   the bound arguments, defaults applied). A callback that raises: the
   function does not run, the exception propagates.
2. ``POST /v1/authorize``. No answer (server down, timeout, 5xx, 429 after
   retries): the function does not run and :class:`AuthorizationUnavailable`
   is raised -- unless ``fail_open=True``, which runs it unguarded and logs a
   warning. A refusal such as ``401``/``403`` is a configuration error and
   fails closed even with ``fail_open``.
3. ``deny``: :class:`Denied`; the function does not run.
   ``pending``: with ``on_pending="wait"`` the guard long-polls the approval
   for up to ``approval_timeout_s`` (then :class:`ApprovalTimeout`, the
   reservation voided), and a denied or expired approval raises
   :class:`ApprovalDenied`; with ``on_pending="raise"``,
   :class:`ApprovalRequired` at once.
4. The function runs. If it raises, the reservation is voided, an ``error``
   event is recorded and the exception propagates unchanged.
5. On return, the reservation is settled with the actual amounts (the
   ``settle`` callback computes them from the result; by default what was
   reserved) and a ``success`` (or ``failure``, see ``outcome``) event is
   recorded with the duration and a SHA-256 digest of the output.

Bookkeeping after the function ran (settle, void, event) never raises: the
action has happened and reporting it as failed would invite a retry that
acts twice. Its failures are logged on the ``mandate`` logger; an unsettled
reservation expires by itself on the server.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from .client import AsyncClient, Client
from .errors import (
    ApprovalDenied,
    ApprovalRequired,
    ApprovalTimeout,
    AuthorizationUnavailable,
    Denied,
    MandateError,
    ProblemError,
    TransportError,
)
from .types import Amounts, Decision, Outcome

__all__ = [
    "GuardSpec",
    "after_error",
    "after_error_async",
    "configure",
    "decide",
    "decide_async",
    "default_client",
    "finish",
    "finish_async",
    "guard",
    "output_digest",
    "run_guarded",
    "run_guarded_async",
]

logger = logging.getLogger("mandate")

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

#: The arguments of one call, by parameter name.
Args = Mapping[str, Any]
StrOrFn = str | Callable[[Args], str]
AmountsOrFn = Amounts | Callable[[Args], Amounts] | None
ContextOrFn = Mapping[str, Any] | Callable[[Args], Mapping[str, Any]] | None

#: How long the guard waits for a human's approval by default, in seconds.
APPROVAL_TIMEOUT_S_DEFAULT = 300.0

# ------------------------------------------------------------ default client

_default_client: Client | None = None
_default_async_client: AsyncClient | None = None


def configure(url: str | None = None, token: str | None = None, **options: Any) -> Client:
    """Sets the client that guards use when given none (arguments first,
    then ``MANDATE_URL`` / ``MANDATE_TOKEN``) and returns it."""
    global _default_client, _default_async_client
    _default_client = Client(url, token, **options)
    _default_async_client = _default_client.to_async()
    return _default_client


def default_client() -> Client:
    """The client guards use when given none: the one :func:`configure` set,
    or one from ``MANDATE_URL`` / ``MANDATE_TOKEN``, made at first use."""
    if _default_client is None:
        configure()
    assert _default_client is not None
    return _default_client


def _default_async() -> AsyncClient:
    if _default_async_client is None:
        default_client()
    assert _default_async_client is not None
    return _default_async_client


# ---------------------------------------------------------------------- spec


@dataclass(frozen=True)
class GuardSpec:
    """What to ask Mandate about one call, and what to do with the answer.

    The fields are :func:`guard`'s arguments; integrations (LangChain,
    OpenAI Agents) build one per tool.
    """

    action: StrOrFn
    resource: StrOrFn
    amounts: AmountsOrFn = None
    context: ContextOrFn = None
    identity: str | None = None
    settle: Callable[[Any, Args], Amounts] | None = None
    outcome: Callable[[Any], Outcome] | None = None
    on_pending: Literal["wait", "raise"] = "wait"
    approval_timeout_s: float = APPROVAL_TIMEOUT_S_DEFAULT
    fail_open: bool = False
    send_input: bool = True
    reservation_ttl_s: int | None = None
    session_id: str | None = None
    #: What of the result to digest (e.g. a tool message's content); the
    #: result itself by default.
    digest_of: Callable[[Any], Any] | None = None

    def request(self, args: Args) -> dict[str, Any]:
        """The keyword arguments of ``authorize`` for one call."""
        action = self.action(args) if callable(self.action) else self.action
        resource = self.resource(args) if callable(self.resource) else self.resource
        amounts = self.amounts(args) if callable(self.amounts) else self.amounts
        context = self.context(args) if callable(self.context) else self.context
        return {
            "action": action,
            "resource": resource,
            "identity": self.identity,
            "amounts": dict(amounts or {}),
            "context": dict(context or {}),
            "input": _jsonable_object(args) if self.send_input else {},
            "reservation_ttl_s": self.reservation_ttl_s,
            "session_id": self.session_id,
        }


def _jsonable_object(args: Args) -> dict[str, Any]:
    """The arguments as a JSON object (values JSON cannot hold become their
    ``repr``): the server records only its SHA-256 unless told otherwise."""
    return cast(dict[str, Any], json.loads(json.dumps(dict(args), default=repr)))


def output_digest(result: Any) -> str:
    """``sha256:<hex>`` of a tool's output: bytes as they are, text as
    UTF-8, anything else as sorted compact JSON (``repr`` where JSON cannot)."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        data = bytes(result)
    elif isinstance(result, str):
        data = result.encode("utf-8")
    else:
        data = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def refusal_text(error: MandateError) -> str:
    """What an agent's model reads when a guarded tool call was not run."""
    if isinstance(error, Denied):
        return f"Mandate denied this tool call ({error}). The tool did not run."
    if isinstance(error, ApprovalRequired):
        return f"This tool call needs a human's approval ({error}). The tool did not run."
    return f"Mandate could not authorize this tool call ({error}). The tool did not run."


def _unavailable(error: MandateError) -> bool:
    """Whether an error means "no answer" (as opposed to a refusal)."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, ProblemError) and (error.status >= 500 or error.status == 429)


def _describe(error: BaseException, url: str) -> str:
    return (
        f"could not get an authorization decision from Mandate at {url} ({error}); failing closed: the tool was not run"
    )


def _settle_amounts(spec: GuardSpec, decision: Decision, result: Any, args: Args) -> Amounts:
    if spec.settle is None:
        return decision.amounts
    try:
        return spec.settle(result, args)
    except Exception:
        logger.exception("mandate: the settle callback failed; settling what was reserved")
        return decision.amounts


def _outcome(spec: GuardSpec, result: Any) -> Outcome:
    if spec.outcome is None:
        return "success"
    try:
        return spec.outcome(result)
    except Exception:
        logger.exception("mandate: the outcome callback failed; recording `success`")
        return "success"


def _digest(spec: GuardSpec, result: Any) -> str:
    try:
        return output_digest(spec.digest_of(result) if spec.digest_of is not None else result)
    except Exception:
        logger.exception("mandate: the digest_of callback failed; digesting the result's repr")
        return output_digest(repr(result))


def _ms(start: float) -> int:
    return max(0, int((time.monotonic() - start) * 1000))


# ------------------------------------------------------------------ sync run


def run_guarded(client: Client, spec: GuardSpec, args: Args, run: Callable[[], R]) -> R:
    """Authorizes, runs ``run`` only when allowed, then settles or voids and
    records the event (see the module's description)."""
    decision = decide(client, spec, args)
    if decision is None:
        return run()
    start = time.monotonic()
    try:
        result = run()
    except BaseException as error:
        after_error(client, decision, _ms(start), error)
        raise
    finish(client, spec, decision, args, result, _ms(start))
    return result


def decide(client: Client, spec: GuardSpec, args: Args) -> Decision | None:
    """Steps 1--3: the allowed decision (after any approval), ``None`` when
    failing open, or the exception that keeps the function from running."""
    request = spec.request(args)
    try:
        decision = client.authorize(**request)
    except MandateError as error:
        if spec.fail_open and _unavailable(error):
            logger.warning("mandate: %s; fail_open is set, running `%s` unguarded", error, request["action"])
            return None
        raise AuthorizationUnavailable(_describe(error, client.config.url), error) from error
    if decision.denied:
        raise Denied(decision)
    if not decision.pending:
        return decision
    if spec.on_pending == "raise" or decision.approval_id is None:
        raise ApprovalRequired(decision)
    try:
        approval = client.wait_for_approval(decision.approval_id, timeout_s=spec.approval_timeout_s)
    except MandateError as error:
        _bookkeep(lambda: _void(client, decision), "void", decision)
        raise AuthorizationUnavailable(_describe(error, client.config.url), error) from error
    if approval.get("status") == "pending":
        _bookkeep(lambda: _void(client, decision), "void", decision)
    return _approved(decision, approval)


def finish(client: Client, spec: GuardSpec, decision: Decision, args: Args, result: Any, duration_ms: int) -> None:
    """Step 5 for a function that returned ``result``: settle (or void, when
    ``spec.outcome`` says ``error``) and record the event. Never raises."""
    outcome = _outcome(spec, result)
    if outcome == "error":
        after_error(client, decision, duration_ms, None)
        return
    amounts = _settle_amounts(spec, decision, result, args)
    if decision.reservation is not None:
        reservation_id = decision.reservation.id
        _bookkeep(lambda: client.settle(reservation_id, amounts), "settle", decision)
    digest = _digest(spec, result)
    _bookkeep(
        lambda: client.record_event(decision.decision_id, outcome, duration_ms=duration_ms, output_digest=digest),
        "record the event of",
        decision,
    )


def after_error(client: Client, decision: Decision, duration_ms: int, error: BaseException | None) -> None:
    """Step 4 for a function that raised ``error``: void the reservation and
    record an ``error`` event. Never raises."""
    _bookkeep(lambda: _void(client, decision), "void", decision)
    attributes = _error_attributes(error)
    _bookkeep(
        lambda: client.record_event(decision.decision_id, "error", duration_ms=duration_ms, attributes=attributes),
        "record the event of",
        decision,
    )


def _void(client: Client, decision: Decision) -> None:
    if decision.reservation is not None:
        client.void(decision.reservation.id)


def _approved(decision: Decision, approval: Mapping[str, Any]) -> Decision:
    status = approval.get("status")
    if status == "approved":
        return decision
    if status == "pending":
        raise ApprovalTimeout(
            decision, f"no answer to approval `{decision.approval_id}` for `{decision.action}` in time"
        )
    raise ApprovalDenied(decision, approval)


def _error_attributes(error: BaseException | None) -> dict[str, Any] | None:
    return {"exception": type(error).__name__} if error is not None else None


def _bookkeep(step: Callable[[], Any], what: str, decision: Decision) -> None:
    try:
        step()
    except Exception:
        logger.warning("mandate: could not %s decision `%s`", what, decision.decision_id, exc_info=True)


# ----------------------------------------------------------------- async run


async def run_guarded_async(client: AsyncClient, spec: GuardSpec, args: Args, run: Callable[[], Awaitable[R]]) -> R:
    """:func:`run_guarded` for coroutines and an :class:`AsyncClient`."""
    decision = await decide_async(client, spec, args)
    if decision is None:
        return await run()
    start = time.monotonic()
    try:
        result = await run()
    except BaseException as error:
        await after_error_async(client, decision, _ms(start), error)
        raise
    await finish_async(client, spec, decision, args, result, _ms(start))
    return result


async def decide_async(client: AsyncClient, spec: GuardSpec, args: Args) -> Decision | None:
    """:func:`decide` with an :class:`AsyncClient`."""
    request = spec.request(args)
    try:
        decision = await client.authorize(**request)
    except MandateError as error:
        if spec.fail_open and _unavailable(error):
            logger.warning("mandate: %s; fail_open is set, running `%s` unguarded", error, request["action"])
            return None
        raise AuthorizationUnavailable(_describe(error, client.config.url), error) from error
    if decision.denied:
        raise Denied(decision)
    if not decision.pending:
        return decision
    if spec.on_pending == "raise" or decision.approval_id is None:
        raise ApprovalRequired(decision)
    try:
        approval = await client.wait_for_approval(decision.approval_id, timeout_s=spec.approval_timeout_s)
    except MandateError as error:
        await _bookkeep_async(_void_async(client, decision), "void", decision)
        raise AuthorizationUnavailable(_describe(error, client.config.url), error) from error
    if approval.get("status") == "pending":
        await _bookkeep_async(_void_async(client, decision), "void", decision)
    return _approved(decision, approval)


async def finish_async(
    client: AsyncClient, spec: GuardSpec, decision: Decision, args: Args, result: Any, duration_ms: int
) -> None:
    """:func:`finish` with an :class:`AsyncClient`."""
    outcome = _outcome(spec, result)
    if outcome == "error":
        await after_error_async(client, decision, duration_ms, None)
        return
    amounts = _settle_amounts(spec, decision, result, args)
    if decision.reservation is not None:
        await _bookkeep_async(client.settle(decision.reservation.id, amounts), "settle", decision)
    digest = _digest(spec, result)
    await _bookkeep_async(
        client.record_event(decision.decision_id, outcome, duration_ms=duration_ms, output_digest=digest),
        "record the event of",
        decision,
    )


async def after_error_async(
    client: AsyncClient, decision: Decision, duration_ms: int, error: BaseException | None
) -> None:
    """:func:`after_error` with an :class:`AsyncClient`."""
    await _bookkeep_async(_void_async(client, decision), "void", decision)
    await _bookkeep_async(
        client.record_event(
            decision.decision_id, "error", duration_ms=duration_ms, attributes=_error_attributes(error)
        ),
        "record the event of",
        decision,
    )


async def _void_async(client: AsyncClient, decision: Decision) -> None:
    if decision.reservation is not None:
        await client.void(decision.reservation.id)


async def _bookkeep_async(step: Awaitable[Any], what: str, decision: Decision) -> None:
    try:
        await step
    except Exception:
        logger.warning("mandate: could not %s decision `%s`", what, decision.decision_id, exc_info=True)


# ----------------------------------------------------------------- decorator


def guard(
    action: StrOrFn,
    *,
    resource: StrOrFn,
    amounts: AmountsOrFn = None,
    context: ContextOrFn = None,
    identity: str | None = None,
    client: Client | AsyncClient | None = None,
    settle: Callable[[Any, Args], Amounts] | None = None,
    outcome: Callable[[Any], Outcome] | None = None,
    on_pending: Literal["wait", "raise"] = "wait",
    approval_timeout_s: float = APPROVAL_TIMEOUT_S_DEFAULT,
    fail_open: bool = False,
    send_input: bool = True,
    reservation_ttl_s: int | None = None,
) -> Callable[[F], F]:
    """Guards a sync or async function with a Mandate decision.

    Args:
        action: The action, e.g. ``"payments.charge"`` (or a function of ``args``).
        resource: The resource, e.g. ``"merchant://books"``, or a function of
            ``args`` (the call's arguments by name, defaults applied).
        amounts: Amounts to reserve, e.g. ``{"usd_cents": 300}``, or a function of ``args``.
        context: Cedar ``context``, or a function of ``args``.
        identity: The acting identity; by default the client's, or the agent
            token's own.
        client: A :class:`Client` or :class:`AsyncClient`; by default
            :func:`default_client` (``MANDATE_URL``, ``MANDATE_TOKEN``).
        settle: ``(result, args) -> amounts`` actually spent; by default
            everything reserved is settled.
        outcome: ``result -> "success" | "failure" | "error"``, for tools
            that report failure in their return value (``error`` voids the
            reservation instead of settling it).
        on_pending: ``"wait"`` for the approval (up to ``approval_timeout_s``)
            or ``"raise"`` :class:`ApprovalRequired` at once.
        approval_timeout_s: How long to wait for a human.
        fail_open: Run the function unguarded when no decision can be had
            (server down or failing). Off by default: fail closed.
        send_input: Send the arguments as the decision's ``input`` (the
            server keeps only their SHA-256 unless the tenant records inputs).
        reservation_ttl_s: How long the server holds the reservation.

    Raises (instead of running the function):
        Denied, ApprovalRequired, ApprovalTimeout, ApprovalDenied,
        AuthorizationUnavailable.
    """
    spec = GuardSpec(
        action=action,
        resource=resource,
        amounts=amounts,
        context=context,
        identity=identity,
        settle=settle,
        outcome=outcome,
        on_pending=on_pending,
        approval_timeout_s=approval_timeout_s,
        fail_open=fail_open,
        send_input=send_input,
        reservation_ttl_s=reservation_ttl_s,
    )

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        def bind(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*call_args, **call_kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(function):
            async_client = client.to_async() if isinstance(client, Client) else client

            @functools.wraps(function)
            async def async_wrapper(*call_args: Any, **call_kwargs: Any) -> Any:
                chosen = async_client if async_client is not None else _default_async()
                return await run_guarded_async(
                    chosen, spec, bind(call_args, call_kwargs), lambda: function(*call_args, **call_kwargs)
                )

            return cast(F, async_wrapper)

        if isinstance(client, AsyncClient):
            raise TypeError("a sync function needs a mandate.Client, not an AsyncClient")

        @functools.wraps(function)
        def wrapper(*call_args: Any, **call_kwargs: Any) -> Any:
            chosen = client if client is not None else default_client()
            return run_guarded(chosen, spec, bind(call_args, call_kwargs), lambda: function(*call_args, **call_kwargs))

        return cast(F, wrapper)

    return decorate
