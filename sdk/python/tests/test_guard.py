"""``@mandate.guard`` against the real server: the function runs only when
allowed, the reservation is settled or voided, the outcome is recorded; and
with the server stopped, the function does not run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from typing import Any

import pytest

import mandate
import mandate._guard as guard_module
from conftest import Server, Shop, make_shop

REFUND_POLICIES = (
    '@id("permit-most")\npermit(principal, action, resource) '
    'unless { action == Mandate::Action::"payments.refund" };\n'
    '@id("refunds-need-approval")\n@approval("required")\n'
    'permit(principal, action == Mandate::Action::"payments.refund", resource);\n'
)


def charger(client: mandate.Client, ran: list[dict[str, Any]], **options: Any) -> Any:
    """A guarded ``charge`` tool that records each run in ``ran``."""

    @mandate.guard(
        "payments.charge",
        resource=lambda args: f"merchant://{args['merchant']}",
        amounts=lambda args: {"usd_cents": args["cents"]},
        client=client,
        **options,
    )
    def charge(merchant: str, cents: int, note: str = "") -> dict[str, Any]:
        ran.append({"merchant": merchant, "cents": cents})
        return {"charged": cents - 10, "merchant": merchant}

    return charge


def test_allowed_call_runs_settles_actual_amounts_and_records_the_outcome(shop: Shop) -> None:
    ran: list[dict[str, Any]] = []
    charge = charger(shop.agent, ran, settle=lambda result, args: {"usd_cents": result["charged"]})
    result = charge("books", 300)
    assert result == {"charged": 290, "merchant": "books"}
    assert ran == [{"merchant": "books", "cents": 300}]
    assert shop.spent() == (290, 0), "settled with the amount computed from the result, the rest released"
    (event,) = shop.events()
    assert event["outcome"] == "success"
    assert isinstance(event["duration_ms"], int) and event["duration_ms"] >= 0
    expected = json.dumps(result, sort_keys=True, separators=(",", ":")).encode()
    assert event["output_digest"] == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert charge.__name__ == "charge", "functools.wraps keeps the tool's identity"


def test_without_a_settle_callback_what_was_reserved_is_settled(shop: Shop) -> None:
    charge = charger(shop.agent, [])
    charge("books", cents=250)
    assert shop.spent() == (250, 0)


def test_denied_call_never_runs(shop: Shop) -> None:
    ran: list[dict[str, Any]] = []
    charge = charger(shop.agent, ran)
    with pytest.raises(mandate.Denied) as denied:
        charge("books", 5_000)  # over the 1,000 budget
    assert ran == [], "the tool body must not run on deny"
    assert denied.value.decision.denied
    assert denied.value.reasons and "budget" in denied.value.reasons[0]["code"]
    assert shop.spent() == (0, 0)

    @mandate.guard("files.delete", resource="disk://home", client=shop.agent)
    def delete() -> None:
        ran.append({"deleted": True})

    with pytest.raises(mandate.Denied, match="no_grant"):
        delete()
    assert ran == []
    assert shop.events() == []


def test_an_exception_voids_the_reservation_and_records_an_error(shop: Shop) -> None:
    @mandate.guard("payments.charge", resource="merchant://books", amounts={"usd_cents": 400}, client=shop.agent)
    def flaky() -> None:
        raise ConnectionResetError("the payment provider hung up")

    with pytest.raises(ConnectionResetError, match="hung up"):
        flaky()
    assert shop.spent() == (0, 0), "the reservation was voided"
    (event,) = shop.events()
    assert event["outcome"] == "error"
    assert event["attributes"] == {"exception": "ConnectionResetError"}


def test_outcome_callback_records_failure_and_error(shop: Shop) -> None:
    charge = charger(shop.agent, [], outcome=lambda result: "failure")
    charge("books", 100)
    assert shop.events()[-1]["outcome"] == "failure"
    assert shop.spent() == (100, 0), "a failure still settles: the tool ran"
    charge = charger(shop.agent, [], outcome=lambda result: "error")
    charge("books", 100)
    assert shop.events()[-1]["outcome"] == "error"
    assert shop.spent() == (100, 0), "an error voids"


def test_pending_waits_for_the_approval(shop: Shop) -> None:
    shop.admin.put_policies(REFUND_POLICIES)
    ran: list[int] = []

    @mandate.guard(
        "payments.refund",
        resource="merchant://books",
        amounts={"usd_cents": 70},
        client=shop.agent,
        approval_timeout_s=30,
    )
    def refund() -> str:
        ran.append(70)
        return "refunded"

    def approve_when_asked() -> None:
        for _ in range(100):
            pending = shop.admin.list_approvals(status="pending")
            if pending:
                shop.admin.approve(pending[0]["id"])
                return
            threading.Event().wait(0.05)

    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    assert refund() == "refunded"
    approver.join()
    assert ran == [70]
    assert shop.spent() == (70, 0)


def test_pending_raises_times_out_or_is_denied_without_running(shop: Shop) -> None:
    shop.admin.put_policies(REFUND_POLICIES)
    ran: list[str] = []

    def refund_tool(**options: Any) -> Any:
        @mandate.guard(
            "payments.refund", resource="merchant://books", amounts={"usd_cents": 10}, client=shop.agent, **options
        )
        def refund() -> None:
            ran.append("refund")

        return refund

    with pytest.raises(mandate.ApprovalRequired) as required:
        refund_tool(on_pending="raise")()
    assert required.value.approval_id
    started = time.monotonic()
    with pytest.raises(mandate.ApprovalTimeout):
        refund_tool(approval_timeout_s=1)()
    assert 0.9 < time.monotonic() - started < 5, "the guard waited for the approval"
    earlier = {approval["id"] for approval in shop.admin.list_approvals()}

    def deny_the_new_one() -> None:
        for _ in range(100):
            fresh = [a for a in shop.admin.list_approvals(status="pending") if a["id"] not in earlier]
            if fresh:
                shop.admin.deny(fresh[0]["id"])
                return
            threading.Event().wait(0.05)

    threading.Thread(target=deny_the_new_one).start()
    with pytest.raises(mandate.ApprovalDenied, match="denied"):
        refund_tool(approval_timeout_s=20)()
    assert ran == []
    # Only the approval raised at once still holds its 10; the timed-out one was voided.
    assert shop.spent() == (0, 10)


def test_async_functions_are_guarded_too(shop: Shop) -> None:
    ran: list[int] = []
    client = mandate.AsyncClient(shop.url, shop.agent_token)

    @mandate.guard(
        "payments.charge",
        resource=lambda args: f"merchant://{args['merchant']}",
        amounts=lambda args: {"usd_cents": args["cents"]},
        settle=lambda result, args: {"usd_cents": result},
        client=client,
    )
    async def charge(merchant: str, cents: int) -> int:
        await asyncio.sleep(0.01)
        ran.append(cents)
        return cents // 2

    async def scenario() -> None:
        assert await charge("books", 200) == 100
        with pytest.raises(mandate.Denied):
            await charge("books", 5_000)

    asyncio.run(scenario())
    assert ran == [200]
    assert shop.spent() == (100, 0)
    (event,) = shop.events()
    assert event["outcome"] == "success" and event["duration_ms"] >= 10


def test_with_the_server_stopped_the_tool_does_not_run(own_server: Server) -> None:
    shop = make_shop(own_server.url, own_server.admin_key)
    ran: list[str] = []
    agent = mandate.Client(own_server.url, shop.agent_token, timeout_s=2, retries=1, backoff_s=0.05)

    @mandate.guard("payments.charge", resource="merchant://books", amounts={"usd_cents": 1}, client=agent)
    def charge() -> str:
        ran.append("charged")
        return "ok"

    assert charge() == "ok" and ran == ["charged"]
    assert own_server.stop() == 0
    with pytest.raises(mandate.AuthorizationUnavailable) as unavailable:
        charge()
    assert ran == ["charged"], "fail closed: the tool must not run without an answer"
    message = str(unavailable.value)
    assert own_server.url in message and "not run" in message
    assert isinstance(unavailable.value.__cause__, mandate.ConnectionFailed)

    async_ran: list[str] = []

    @mandate.guard("payments.charge", resource="merchant://books", client=agent)
    async def async_charge() -> None:
        async_ran.append("charged")

    with pytest.raises(mandate.AuthorizationUnavailable):
        asyncio.run(async_charge())
    assert async_ran == []


def test_fail_open_runs_the_tool_unguarded_and_warns(own_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    url = own_server.url
    own_server.stop()
    ran: list[str] = []

    @mandate.guard("payments.charge", resource="merchant://books", client=mandate.Client(url, "mt_x"), fail_open=True)
    def charge() -> str:
        ran.append("charged")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="mandate"):
        assert charge() == "ok"
    assert ran == ["charged"]
    assert "fail_open" in caplog.text


def test_fail_open_does_not_cover_a_refused_credential(shop: Shop) -> None:
    ran: list[str] = []

    @mandate.guard(
        "payments.charge", resource="merchant://books", client=mandate.Client(shop.url, "mt_bad"), fail_open=True
    )
    def charge() -> None:
        ran.append("charged")

    with pytest.raises(mandate.AuthorizationUnavailable) as refused:
        charge()
    assert isinstance(refused.value.cause, mandate.Unauthorized)
    assert ran == []


def test_the_default_client_comes_from_the_environment(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANDATE_URL", shop.url)
    monkeypatch.setenv("MANDATE_TOKEN", shop.agent_token)
    monkeypatch.setattr(guard_module, "_default_client", None)
    monkeypatch.setattr(guard_module, "_default_async_client", None)

    @mandate.guard("payments.charge", resource="merchant://books", amounts={"usd_cents": 5})
    def charge() -> str:
        return "ok"

    assert charge() == "ok"
    assert shop.spent() == (5, 0)
