"""OpenAI Agents SDK: tool guardrails that put each function-tool call
through Mandate.

>>> from agents import function_tool
>>> from mandate.openai_agents import MandateGuardrails
>>> guard = MandateGuardrails(client, "payments.charge",
...                           resource=lambda a: f"merchant://{a['merchant']}",
...                           amounts=lambda a: {"usd_cents": a["cents"]})
>>> @function_tool(tool_input_guardrails=[guard.input], tool_output_guardrails=[guard.output])
... def charge(merchant: str, cents: int) -> str: ...

``guard.input`` is a tool *input* guardrail: it authorizes the call from the
tool's arguments before the tool runs. A deny, a refused or timed-out
approval, or no answer from Mandate (fail closed) rejects the call with a
message the model sees (``ToolGuardrailFunctionOutput.reject_content``); the
tool never runs. ``guard.output``, a tool *output* guardrail, settles the
reservation from the tool's output and records the outcome with the
duration and a digest of the output. Without it, an allowed call's
reservation is held until it expires on the server.

The Agents SDK turns a tool's exception into an error text by default (its
``failure_error_function``); pass ``outcome=`` to recognise such outputs as
``"failure"`` or ``"error"`` (``"error"`` voids the reservation).

Requires ``openai-agents`` >= 0.24.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agents import ToolGuardrailFunctionOutput, ToolInputGuardrail, ToolOutputGuardrail
from agents.tool_guardrails import ToolInputGuardrailData, ToolOutputGuardrailData

from ._guard import GuardSpec, _default_async, decide_async, finish_async, refusal_text
from .client import AsyncClient, Client
from .errors import ApprovalRequired, AuthorizationUnavailable, Denied
from .types import Decision

__all__ = ["MandateGuardrails"]


@dataclass
class _Open:
    decision: Decision
    args: dict[str, Any]
    started: float


class MandateGuardrails:
    """A pair of tool guardrails (``.input``, ``.output``) for one rule.

    Args:
        client: A :class:`~mandate.AsyncClient` or :class:`~mandate.Client`
            (converted); by default :func:`mandate.default_client`.
        action, **options: The rule, as :func:`mandate.guard` takes it; the
            callbacks receive the tool call's arguments as a ``dict``, and
            ``settle`` the tool's output first.
    """

    def __init__(
        self,
        client: AsyncClient | Client | None,
        action: str | Callable[[Mapping[str, Any]], str],
        **options: Any,
    ) -> None:
        options.setdefault("resource", f"tool://{action}" if isinstance(action, str) else "tool://*")
        #: The rule.
        self.spec = GuardSpec(action=action, **options)
        self._client = client.to_async() if isinstance(client, Client) else client
        self._open: dict[str, _Open] = {}
        #: The input guardrail: authorize before the tool runs.
        self.input: ToolInputGuardrail[Any] = ToolInputGuardrail(
            guardrail_function=self._check_input, name="mandate_authorize"
        )
        #: The output guardrail: settle and record after the tool ran.
        self.output: ToolOutputGuardrail[Any] = ToolOutputGuardrail(
            guardrail_function=self._check_output, name="mandate_settle"
        )

    def _client_now(self) -> AsyncClient:
        return self._client or _default_async()

    async def _check_input(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        context = data.context
        try:
            args = json.loads(context.tool_arguments or "{}")
        except ValueError:
            return ToolGuardrailFunctionOutput.reject_content(
                "The tool call's arguments are not JSON. The tool did not run."
            )
        if not isinstance(args, dict):
            args = {"arguments": args}
        try:
            decision = await decide_async(self._client_now(), self.spec, args)
        except (Denied, ApprovalRequired, AuthorizationUnavailable) as error:
            return ToolGuardrailFunctionOutput.reject_content(refusal_text(error), output_info={"error": str(error)})
        if decision is None:  # failing open
            return ToolGuardrailFunctionOutput.allow(output_info={"unguarded": True})
        self._open[context.tool_call_id] = _Open(decision, args, time.monotonic())
        return ToolGuardrailFunctionOutput.allow(
            output_info={"decision_id": decision.decision_id, "log_index": decision.log_index}
        )

    async def _check_output(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        opened = self._open.pop(data.context.tool_call_id, None)
        if opened is not None:
            duration_ms = max(0, int((time.monotonic() - opened.started) * 1000))
            await finish_async(self._client_now(), self.spec, opened.decision, opened.args, data.output, duration_ms)
        return ToolGuardrailFunctionOutput.allow()
