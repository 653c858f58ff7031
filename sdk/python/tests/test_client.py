"""The sync and async clients against the real server: every area of the API,
problems as typed exceptions, retries and timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import mandate
from conftest import AGENT, BUDGET, BUDGET_LIMIT, HUMAN, Server, Shop


def test_configuration_comes_from_arguments_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANDATE_URL", "http://mandate.internal:9000/")
    monkeypatch.setenv("MANDATE_TOKEN", "mt_from_env")
    from_env = mandate.Client()
    assert (from_env.config.url, from_env.config.token) == ("http://mandate.internal:9000", "mt_from_env")
    explicit = mandate.AsyncClient("http://other:1", "mk_arg", timeout_s=3)
    assert (explicit.config.url, explicit.config.token, explicit.config.timeout_s) == ("http://other:1", "mk_arg", 3)
    monkeypatch.delenv("MANDATE_URL")
    monkeypatch.delenv("MANDATE_TOKEN")
    assert mandate.Client().config.url == "http://127.0.0.1:8420"


def test_identities_grants_budgets_and_tokens(shop: Shop) -> None:
    admin = shop.admin
    agent = admin.get_identity(AGENT)
    assert agent["chain"] == [AGENT, HUMAN] and agent["effective"] is True
    page = admin.list_identities(limit=10)
    assert {identity["id"] for identity in page["identities"]} == {HUMAN, AGENT}
    grants = admin.list_grants(grantee=AGENT)
    assert [grant["actions"] for grant in grants] == [["payments.*"]]
    assert admin.get_grant(grants[0]["id"])["grantor"] == HUMAN
    budget = admin.get_budget(BUDGET)
    assert (budget["limit"], budget["spent"], budget["reserved"], budget["remaining"]) == (BUDGET_LIMIT, 0, 0, 1000)
    assert [b["id"] for b in admin.list_budgets(identity=AGENT)] == [BUDGET]
    assert admin.update_budget(BUDGET, limit=2000)["limit"] == 2000
    introspected = admin.introspect_token(shop.agent_token)
    assert introspected["active"] is True
    assert admin.introspect_token("mt_" + "0" * 80)["active"] is False


def test_allow_reserve_settle_and_record(shop: Shop) -> None:
    decision = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 300})
    assert decision.allowed and decision.decision == "allow"
    assert decision.chain == [AGENT, HUMAN]
    assert decision.reservation is not None
    assert decision.budgets[0]["after"] == 300
    assert shop.spent() == (0, 300)
    settled = shop.agent.settle(decision.reservation.id, {"usd_cents": 120})
    assert settled["status"] == "settled"
    assert shop.spent() == (120, 0)
    event = shop.agent.record_event(decision.decision_id, "success", duration_ms=7, output_digest="sha256:ab")
    assert event["outcome"] == "success"
    assert shop.events()[-1]["decision_id"] == decision.decision_id


def test_void_releases_the_reservation(shop: Shop) -> None:
    decision = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 999})
    assert decision.reservation is not None and shop.spent() == (0, 999)
    assert shop.agent.void(decision.reservation.id)["status"] == "voided"
    assert shop.spent() == (0, 0)


def test_a_deny_is_an_answer_with_reasons(shop: Shop) -> None:
    decision = shop.agent.authorize("files.delete", "disk://home")
    assert decision.denied and not decision.allowed
    assert [reason["code"] for reason in decision.reasons] == ["no_grant"]
    assert decision.reservation is None
    over = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": BUDGET_LIMIT + 1})
    assert over.denied and shop.spent() == (0, 0)


def test_problems_are_typed_exceptions_with_the_stable_code(shop: Shop) -> None:
    with pytest.raises(mandate.NotFound) as missing:
        shop.admin.get_identity("user:nobody")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(mandate.Conflict) as twice:
        shop.admin.create_identity(HUMAN, "human")
    assert twice.value.code == "conflict"
    with pytest.raises(mandate.InvalidField) as bad:
        shop.admin.create_budget(AGENT, "usd_cents", "fortnight", 10)
    assert bad.value.code == "invalid_field" and bad.value.field
    with pytest.raises(mandate.Forbidden):
        shop.agent.list_identities()
    with pytest.raises(mandate.Unauthorized):
        mandate.Client(shop.url, "mk_" + "0" * 80).get_policies()
    with pytest.raises(mandate.InvalidPolicy):
        shop.admin.put_policies("this is not cedar")
    with pytest.raises(mandate.GrantExceedsGrantor):
        shop.admin.create_identity("agent:sub", "agent", parent=AGENT)
        shop.admin.create_grant("agent:sub", AGENT, ["files.*"], ["disk://*"])
    assert all(isinstance(e.value, mandate.ProblemError) for e in (missing, twice, bad))


def test_revoked_token_is_refused_on_the_next_call(shop: Shop) -> None:
    assert shop.agent.authorize("payments.charge", "merchant://books").allowed
    shop.admin.revoke_token(id=shop.token_id)
    with pytest.raises(mandate.Unauthorized):
        shop.agent.authorize("payments.charge", "merchant://books")


def test_authorize_is_idempotent_by_request_id(shop: Shop) -> None:
    first = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 100}, request_id="r-1")
    again = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 100}, request_id="r-1")
    assert again.decision_id == first.decision_id
    assert shop.spent() == (0, 100), "a repeated request must not reserve twice"
    other = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 100})
    assert other.decision_id != first.decision_id


def test_policies_and_approvals(shop: Shop) -> None:
    policies = (
        '@id("permit-most")\npermit(principal, action, resource) '
        'unless { action == Mandate::Action::"payments.refund" };\n'
        '@id("refunds-need-approval")\n@approval("required")\n'
        'permit(principal, action == Mandate::Action::"payments.refund", resource);\n'
    )
    put = shop.admin.put_policies(policies)
    assert shop.admin.get_policies()["policy_hash"] == put["policy_hash"]
    assert [v["version"] for v in shop.admin.policy_versions()] == [1, 2]
    decision = shop.agent.authorize("payments.refund", "merchant://books", amounts={"usd_cents": 50})
    assert decision.pending and decision.approval_id
    assert decision.policies["determining"] == ["refunds-need-approval"]
    assert [a["id"] for a in shop.admin.list_approvals(status="pending")] == [decision.approval_id]
    started = time.monotonic()
    still = shop.agent.get_approval(decision.approval_id, wait_s=1)
    assert still["status"] == "pending" and time.monotonic() - started >= 0.9, "wait_s is a long poll"
    threading.Timer(0.3, lambda: shop.admin.approve(decision.approval_id or "")).start()
    answered = shop.agent.wait_for_approval(decision.approval_id, timeout_s=20)
    assert answered["status"] == "approved"
    refused = shop.agent.authorize("payments.refund", "merchant://books")
    assert shop.admin.deny(refused.approval_id or "")["status"] == "denied"


def test_batch_settings_and_admin_keys(shop: Shop) -> None:
    answers = shop.admin.authorize_batch(
        [
            {"identity": AGENT, "action": "payments.charge", "resource": "merchant://a", "amounts": {"usd_cents": 1}},
            {"identity": AGENT, "action": "files.read", "resource": "disk://a"},
        ]
    )
    assert [a.decision for a in answers] == ["allow", "deny"]
    assert shop.admin.update_settings(record_inputs="full")["record_inputs"] == "full"
    assert shop.admin.get_settings()["record_inputs"] == "full"
    auditor = shop.admin.create_admin_key("auditor")
    reader = mandate.Client(shop.url, auditor["key"])
    assert reader.checkpoint().count("\n") >= 4
    with pytest.raises(mandate.Forbidden):
        reader.create_identity("user:bob", "human")


def test_log_endpoints(shop: Shop) -> None:
    decision = shop.agent.authorize("payments.charge", "merchant://books")
    size = decision.log_index + 1
    entries = shop.admin.log_entries(0, size)
    assert len(entries) == size and b'"type":"decision"' in entries[-1]
    proof = shop.admin.inclusion_proof(decision.log_index, size)
    assert proof["index"] == decision.log_index and proof["hashes"]
    assert shop.admin.consistency_proof(1, size)["to"] == size
    assert shop.admin.public_key().count("+") >= 2
    found = shop.admin.search(identity=AGENT, type="decision")["entries"]
    assert [entry["index"] for entry in found] == [decision.log_index]


def test_async_client_covers_the_same_flow(shop: Shop) -> None:
    async def flow() -> tuple[mandate.Decision, mandate.Decision, dict[str, object]]:
        async with mandate.AsyncClient(shop.url, shop.agent_token) as agent:
            allowed = await agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 40})
            assert allowed.reservation is not None
            await agent.settle(allowed.reservation.id, {"usd_cents": 25})
            await agent.record_event(allowed.decision_id, "success", duration_ms=1)
            denied = await agent.authorize("files.delete", "disk://home")
            admin = shop.admin.to_async()
            with pytest.raises(mandate.NotFound):
                await admin.get_budget("no-such-budget")
            return allowed, denied, await admin.get_budget(BUDGET)

    allowed, denied, budget = asyncio.run(flow())
    assert allowed.allowed and denied.denied
    assert (budget["spent"], budget["reserved"]) == (25, 0)


def _silent_listener() -> tuple[socket.socket, str]:
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_timeouts_raise_request_timeout_and_reads_are_retried() -> None:
    listener, url = _silent_listener()
    with listener:
        client = mandate.Client(url, "mk_x", timeout_s=0.3, retries=1, backoff_s=0.01)
        started = time.monotonic()
        with pytest.raises(mandate.RequestTimeout):
            client.get_policies()
        assert 0.55 < time.monotonic() - started < 3, "one retry of an idempotent read"
        started = time.monotonic()
        with pytest.raises(mandate.RequestTimeout):
            client.settle("r", {"usd_cents": 1})
        assert time.monotonic() - started < 0.55, "settle is not retried after a timeout"

        async def async_timeout() -> None:
            with pytest.raises(mandate.RequestTimeout):
                await mandate.AsyncClient(url, "mk_x", timeout_s=0.3, retries=0).get_policies()

        asyncio.run(async_timeout())


def test_a_stopped_server_raises_connection_failed(own_server: Server) -> None:
    url = own_server.url
    assert own_server.admin().ready()["status"] == "ready"
    own_server.stop()
    with pytest.raises(mandate.ConnectionFailed) as failed:
        mandate.Client(url, "mk_x", retries=0).get_policies()
    assert url in str(failed.value)
