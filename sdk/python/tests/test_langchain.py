"""A real LangChain agent loop (``langchain.agents.create_agent`` on LangGraph)
with a fake chat model that emits tool calls, guarded by
``MandateMiddleware``: the allowed call runs and is settled, the denied one
never runs and the model reads why."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

import mandate
from conftest import AGENT, Shop
from mandate.langchain import MandateMiddleware, rule


class ToolCallingFakeModel(GenericFakeChatModel):
    """``GenericFakeChatModel`` that accepts tools (it answers from its script)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingFakeModel:
        return self


def script() -> Iterator[AIMessage]:
    """Turn 1: two tool calls (one within the budget, one over it and on a
    resource the agent was never granted); turn 2: a final answer."""
    return iter(
        [
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "charge", "args": {"merchant": "books", "cents": 300}, "id": "call-allowed"},
                    {"name": "charge", "args": {"merchant": "books", "cents": 5000}, "id": "call-over-budget"},
                    {"name": "wipe_disk", "args": {"path": "/"}, "id": "call-never-granted"},
                ],
            ),
            AIMessage(content="Charged the books; the rest was refused."),
        ]
    )


def build(shop: Shop, side_effects: list[str], client: mandate.Client | mandate.AsyncClient) -> Any:
    @tool
    def charge(merchant: str, cents: int) -> str:
        """Charge a merchant, in US cents."""
        side_effects.append(f"charge {merchant} {cents}")
        return f"charged {cents - 55} cents at {merchant} (after a discount)"

    @tool
    def wipe_disk(path: str) -> str:
        """Delete everything under a path."""
        side_effects.append(f"wipe {path}")
        return "wiped"

    middleware = MandateMiddleware(
        client,
        rules={
            "charge": rule(
                "payments.charge",
                resource=lambda args: f"merchant://{args['merchant']}",
                amounts=lambda args: {"usd_cents": args["cents"]},
                # The tool's message says what was actually charged.
                settle=lambda message, args: {"usd_cents": int(message.content.split()[1])},
            )
        },
    )
    return create_agent(ToolCallingFakeModel(messages=script()), [charge, wipe_disk], middleware=[middleware])


def check(shop: Shop, side_effects: list[str], result: dict[str, Any]) -> None:
    assert side_effects == ["charge books 300"], "only the allowed call ran"
    tool_messages = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert tool_messages["call-allowed"].status == "success"
    assert tool_messages["call-allowed"].content.startswith("charged 245 cents")
    for refused in ("call-over-budget", "call-never-granted"):
        assert tool_messages[refused].status == "error"
        assert "denied" in tool_messages[refused].content and "did not run" in tool_messages[refused].content
    assert "no_grant" in tool_messages["call-never-granted"].content
    assert result["messages"][-1].content == "Charged the books; the rest was refused."
    assert shop.spent() == (245, 0), "the budget shows the settled spend"
    decisions = shop.admin.search(identity=AGENT, type="decision")["entries"]
    assert sorted(entry["body"]["decision"] for entry in decisions) == ["allow", "deny", "deny"]
    (event,) = shop.events()
    assert event["outcome"] == "success" and event["output_digest"] == mandate.output_digest(
        tool_messages["call-allowed"].content
    )


def test_agent_loop_sync(shop: Shop) -> None:
    side_effects: list[str] = []
    agent = build(shop, side_effects, shop.agent)
    check(shop, side_effects, agent.invoke({"messages": [{"role": "user", "content": "buy the books"}]}))


def test_agent_loop_async(shop: Shop) -> None:
    side_effects: list[str] = []
    agent = build(shop, side_effects, shop.agent.to_async())
    result = asyncio.run(agent.ainvoke({"messages": [{"role": "user", "content": "buy the books"}]}))
    check(shop, side_effects, result)
