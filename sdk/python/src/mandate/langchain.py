"""LangChain / LangGraph: a middleware that guards every tool call of an agent.

>>> from langchain.agents import create_agent
>>> from mandate.langchain import MandateMiddleware, rule
>>> agent = create_agent(model, tools, middleware=[MandateMiddleware(rules={
...     "charge": rule("payments.charge", resource=lambda a: f"merchant://{a['merchant']}",
...                    amounts=lambda a: {"usd_cents": a["cents"]}),
... })])

Each tool call is authorized before the tool runs
(``AgentMiddleware.wrap_tool_call`` / ``awrap_tool_call``). A deny, a
refused or timed-out approval, or no answer from Mandate (fail closed)
becomes a ``ToolMessage`` with ``status="error"`` that the model sees; the
tool never runs. An allowed call runs, then its reservation is settled (or
voided when the tool's message has ``status="error"``) and the outcome is
recorded with the duration and a digest of the message's content.

A tool without a rule is asked about as action ``<tool name>`` on resource
``tool://<tool name>`` (see ``default``), so no tool escapes the guard.

Requires ``langchain`` >= 1.0 (tested with langchain 1.4.7, langchain-core
1.7.2, langgraph 1.2.22).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage

from ._guard import (
    GuardSpec,
    _default_async,
    default_client,
    refusal_text,
    run_guarded,
    run_guarded_async,
)
from .client import AsyncClient, Client
from .errors import ApprovalRequired, AuthorizationUnavailable, Denied, MandateError
from .types import Outcome

__all__ = ["MandateMiddleware", "rule"]


def rule(action: str | Callable[[Mapping[str, Any]], str], **options: Any) -> GuardSpec:
    """A tool's rule: :class:`~mandate.GuardSpec` with ``action`` first.

    ``resource`` defaults to ``tool://<action>``; the callbacks receive the
    tool call's arguments (``args``) and, for ``settle``, the tool's
    ``ToolMessage`` first.
    """
    options.setdefault("resource", f"tool://{action}" if isinstance(action, str) else "tool://*")
    return GuardSpec(action=action, **options)


def _message_outcome(result: Any) -> Outcome:
    return "error" if isinstance(result, ToolMessage) and result.status == "error" else "success"


def _message_content(result: Any) -> Any:
    return result.content if isinstance(result, ToolMessage) else repr(result)


class MandateMiddleware(AgentMiddleware):
    """Guards every tool call of a LangChain agent with a Mandate decision.

    Args:
        client: A :class:`~mandate.Client` (or :class:`~mandate.AsyncClient`;
            each is converted for the other mode); by default
            :func:`mandate.default_client`.
        rules: By tool name, what to ask (:func:`rule`).
        default: The rule for tools not in ``rules``; by default action
            ``<tool name>`` on ``tool://<tool name>``. ``None`` here is the
            default, not "unguarded": every tool is guarded.
        on_unavailable: ``"message"`` (the model is told the tool did not
            run) or ``"raise"`` (:class:`~mandate.AuthorizationUnavailable`
            stops the agent). Either way the tool does not run.
    """

    def __init__(
        self,
        client: Client | AsyncClient | None = None,
        *,
        rules: Mapping[str, GuardSpec] | None = None,
        default: Callable[[str], GuardSpec] | None = None,
        on_unavailable: Literal["message", "raise"] = "message",
    ) -> None:
        super().__init__()
        self._client = client.to_sync() if isinstance(client, AsyncClient) else client
        self._async_client = client.to_async() if isinstance(client, Client) else client
        self._rules = dict(rules or {})
        self._default = default or (lambda name: GuardSpec(action=name, resource=f"tool://{name}"))
        self._on_unavailable = on_unavailable

    @property
    def name(self) -> str:
        """The middleware's name in the agent graph."""
        return "MandateMiddleware"

    def spec_for(self, tool_name: str) -> GuardSpec:
        """The rule for one tool, with the tool-message outcome and digest."""
        spec = self._rules.get(tool_name) or self._default(tool_name)
        return dataclasses.replace(
            spec,
            outcome=spec.outcome or _message_outcome,
            digest_of=spec.digest_of or _message_content,
        )

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Authorizes the call, runs it only when allowed, accounts for it."""
        call = request.tool_call
        client = self._client or default_client()
        try:
            return run_guarded(
                client, self.spec_for(call["name"]), dict(call.get("args") or {}), lambda: handler(request)
            )
        except (Denied, ApprovalRequired, AuthorizationUnavailable) as error:
            return self._refusal(call, error)

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """:meth:`wrap_tool_call` for async agents."""
        call = request.tool_call
        client = self._async_client or _default_async()
        try:
            return await run_guarded_async(
                client, self.spec_for(call["name"]), dict(call.get("args") or {}), lambda: handler(request)
            )
        except (Denied, ApprovalRequired, AuthorizationUnavailable) as error:
            return self._refusal(call, error)

    def _refusal(self, call: Mapping[str, Any], error: MandateError) -> ToolMessage:
        if isinstance(error, AuthorizationUnavailable) and self._on_unavailable == "raise":
            raise error
        return ToolMessage(
            content=refusal_text(error),
            tool_call_id=str(call.get("id") or ""),
            name=str(call.get("name") or ""),
            status="error",
        )
