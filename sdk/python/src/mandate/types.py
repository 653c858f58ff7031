"""Typed views of the answers clients depend on (SPEC §3, §4).

Most endpoints answer JSON objects that the client returns as plain ``dict``
values; the decision is the one answer code branches on, so it gets a class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

__all__ = ["Amounts", "Budget", "BudgetWindow", "Decision", "Outcome", "Reservation"]

#: The outcome of a tool run, as ``POST /v1/events`` takes it.
Outcome = Literal["success", "failure", "error"]

#: Amounts in minor units by dimension, e.g. ``{"usd_cents": 300}``.
Amounts = Mapping[str, int]


class BudgetWindow(TypedDict):
    """The budget's current window (RFC 3339 UTC)."""

    start: str
    end: str


class Budget(TypedDict, total=False):
    """A budget as ``/v1/budgets`` answers it."""

    id: str
    identity: str
    dimension: str
    period: str
    limit: int
    spent: int
    reserved: int
    remaining: int
    window: BudgetWindow
    log_index: int


@dataclass(frozen=True)
class Reservation:
    """Amounts held by an allowed (or pending) decision until settled or voided."""

    id: str
    expires_at: str


@dataclass(frozen=True)
class Decision:
    """The answer of ``POST /v1/authorize``.

    A deny is an answer, not an error: check :attr:`allowed` (or
    :attr:`decision`) before acting.
    """

    #: ``allow``, ``deny`` or ``pending``.
    decision: Literal["allow", "deny", "pending"]
    #: The decision's id, for ``POST /v1/events``.
    decision_id: str
    #: The index of the decision's entry in the tenant's log.
    log_index: int
    #: ``[{code, message, ...}]``: why (empty for a plain allow).
    reasons: list[dict[str, Any]]
    #: The identity chain, acting identity first, up to the human.
    chain: list[str]
    #: ``{determining: [...], errors: [...]}``.
    policies: dict[str, Any]
    #: For each budget touched: ``{id, dimension, limit, before, after}``.
    budgets: list[dict[str, Any]]
    #: The held amounts, when the request had amounts and was not denied.
    reservation: Reservation | None
    #: ``{id, expires_at}`` when the decision is pending approval.
    approval: dict[str, Any] | None
    #: The action asked about (from the request; the answer does not repeat it).
    action: str = ""
    #: The amounts asked for (from the request).
    amounts: dict[str, int] = field(default_factory=dict)
    #: The whole answer as received.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def allowed(self) -> bool:
        """Whether the action may go ahead now."""
        return self.decision == "allow"

    @property
    def denied(self) -> bool:
        """Whether the action was denied."""
        return self.decision == "deny"

    @property
    def pending(self) -> bool:
        """Whether the action waits for a human's approval."""
        return self.decision == "pending"

    @property
    def approval_id(self) -> str | None:
        """The pending approval's id, if any."""
        if self.approval and isinstance(self.approval.get("id"), str):
            return str(self.approval["id"])
        return None

    def reason_text(self) -> str:
        """The reasons as one line, for messages (``code: message; ...``)."""
        if not self.reasons:
            return f"decision `{self.decision}` with no reason given"
        return "; ".join(f"{r.get('code', '?')}: {r.get('message', '')}".rstrip(": ") for r in self.reasons)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, action: str = "", amounts: Amounts | None = None) -> Decision:
        """Builds a decision from the server's JSON answer."""
        reservation = raw.get("reservation")
        decision = raw.get("decision")
        if decision not in ("allow", "deny", "pending"):
            raise ValueError(f"unknown decision `{decision}`")
        return cls(
            decision=decision,
            decision_id=str(raw.get("decision_id", "")),
            log_index=int(raw.get("log_index", -1)),
            reasons=list(raw.get("reasons") or []),
            chain=list(raw.get("chain") or []),
            policies=dict(raw.get("policies") or {}),
            budgets=list(raw.get("budgets") or []),
            reservation=(
                Reservation(id=str(reservation["id"]), expires_at=str(reservation.get("expires_at", "")))
                if isinstance(reservation, Mapping) and "id" in reservation
                else None
            ),
            approval=dict(raw["approval"]) if isinstance(raw.get("approval"), Mapping) else None,
            action=action,
            amounts=dict(amounts or {}),
            raw=dict(raw),
        )
