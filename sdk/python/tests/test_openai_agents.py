"""A real OpenAI Agents SDK run (``Runner.run`` with ``agents.testing.ScriptedModel``)
whose function tools carry Mandate's tool guardrails: the allowed call runs
and is settled, the denied one never runs and the model reads why."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import mandate
from conftest import AGENT, Shop
from mandate.openai_agents import MandateGuardrails

set_tracing_disabled(True)


def run_agent(shop: Shop, client: mandate.AsyncClient | mandate.Client) -> tuple[list[str], Any, ScriptedModel]:
    side_effects: list[str] = []
    charge_guard = MandateGuardrails(
        client,
        "payments.charge",
        resource=lambda args: f"merchant://{args['merchant']}",
        amounts=lambda args: {"usd_cents": args["cents"]},
        settle=lambda output, args: {"usd_cents": json.loads(output)["charged"]},
    )
    wipe_guard = MandateGuardrails(client, "files.delete", resource=lambda args: f"disk://{args['path']}")

    @function_tool(tool_input_guardrails=[charge_guard.input], tool_output_guardrails=[charge_guard.output])
    def charge(merchant: str, cents: int) -> str:
        """Charge a merchant, in US cents."""
        side_effects.append(f"charge {merchant} {cents}")
        return json.dumps({"charged": cents - 30, "merchant": merchant})

    @function_tool(tool_input_guardrails=[wipe_guard.input], tool_output_guardrails=[wipe_guard.output])
    def wipe_disk(path: str) -> str:
        """Delete everything under a path."""
        side_effects.append(f"wipe {path}")
        return "wiped"

    model = ScriptedModel(
        [
            ModelStep(
                output=[
                    function_call("charge", {"merchant": "books", "cents": 300}, call_id="call-allowed"),
                    function_call("wipe_disk", {"path": "home"}, call_id="call-denied"),
                ]
            ),
            ModelStep(output=[assistant_message("Charged the books; the disk was left alone.")]),
        ]
    )
    agent = Agent(name="shopper", instructions="Buy what you are asked to.", model=model, tools=[charge, wipe_disk])
    result = asyncio.run(Runner.run(agent, "buy the books, then wipe my disk"))
    return side_effects, result, model


def _tool_outputs(model: ScriptedModel) -> dict[str, str]:
    """What the model was given back for each call, from its second turn's input."""
    second = model.calls[1].input
    return {item["call_id"]: str(item["output"]) for item in second if item.get("type") == "function_call_output"}


def test_agent_run_allows_one_call_and_denies_the_other(shop: Shop) -> None:
    side_effects, result, model = run_agent(shop, shop.agent.to_async())
    assert side_effects == ["charge books 300"], "the denied tool never ran"
    assert result.final_output == "Charged the books; the disk was left alone."
    model.assert_complete()
    outputs = _tool_outputs(model)
    assert json.loads(outputs["call-allowed"]) == {"charged": 270, "merchant": "books"}
    assert "denied" in outputs["call-denied"] and "no_grant" in outputs["call-denied"]
    assert "did not run" in outputs["call-denied"]
    assert shop.spent() == (270, 0), "the budget shows the settled spend"
    decisions = shop.admin.search(identity=AGENT, type="decision")["entries"]
    assert sorted(entry["body"]["decision"] for entry in decisions) == ["allow", "deny"]
    (event,) = shop.events()
    assert event["outcome"] == "success"
    assert event["output_digest"] == mandate.output_digest(outputs["call-allowed"])


def test_with_a_sync_client_and_the_server_refusing_the_token(shop: Shop) -> None:
    shop.admin.revoke_token(id=shop.token_id)
    side_effects, _, model = run_agent(shop, shop.agent)
    assert side_effects == [], "fail closed: nothing runs without a decision"
    outputs = _tool_outputs(model)
    assert set(outputs) == {"call-allowed", "call-denied"}
    assert all("could not authorize" in text for text in outputs.values()), outputs
    assert shop.spent() == (0, 0)
