"""The sync and async clients for Mandate's HTTP API (SPEC §4).

>>> import mandate
>>> client = mandate.Client()                     # MANDATE_URL, MANDATE_TOKEN
>>> decision = client.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 300})
>>> decision.allowed

Every method sends one request and returns its JSON answer (a ``dict``, a
``list`` for list endpoints, ``str`` for the log's text formats, a
:class:`~mandate.types.Decision` for ``authorize``). A refusal raises the
:class:`~mandate.errors.ProblemError` subclass named by its stable code; no
answer raises a :class:`~mandate.errors.TransportError`. Requests are retried
only where that cannot act twice (see :mod:`mandate._http`).
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import _api
from ._http import AsyncTransport, Config, SyncTransport
from .types import Amounts, Decision, Outcome

__all__ = ["AsyncClient", "Client", "Config"]

#: The longest single long poll the server accepts (``APPROVAL_WAIT_MAX_S``).
APPROVAL_WAIT_MAX_S = 60


def _batch_item(request: Mapping[str, Any]) -> dict[str, Any]:
    item = {
        "action": None,
        "resource": None,
        "identity": None,
        "amounts": None,
        "context": None,
        "input": None,
        "request_id": None,
        "reservation_ttl_s": None,
        "session_id": None,
        "trace_id": None,
    }
    unknown = set(request) - set(item)
    if unknown:
        raise TypeError(f"unknown authorize fields: {sorted(unknown)}")
    item.update(request)
    return item


class _Base:
    config: Config

    def _authorize_body(
        self,
        action: str,
        resource: str,
        identity: str | None,
        amounts: Amounts | None,
        context: Mapping[str, Any] | None,
        input: Mapping[str, Any] | None,
        request_id: str | None,
        reservation_ttl_s: int | None,
        session_id: str | None,
        trace_id: str | None,
    ) -> dict[str, Any]:
        return _api.authorize_body(
            action,
            resource,
            identity or self.config.identity,
            amounts,
            context,
            input,
            request_id,
            reservation_ttl_s,
            session_id,
            trace_id,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.config.url!r}, token={'set' if self.config.token else None})"


def _config(config: Config | None, url: str | None, token: str | None, options: dict[str, Any]) -> Config:
    if config is not None:
        if url or token or options:
            raise TypeError("give either `config` or `url`/`token`/options, not both")
        return config
    return Config.from_env(url, token, **options)


class Client(_Base):
    """A blocking client.

    ``url`` and ``token`` default to ``MANDATE_URL`` and ``MANDATE_TOKEN``;
    ``timeout_s``, ``retries``, ``backoff_s`` and ``identity`` are the
    :class:`~mandate.Config` fields.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: Config | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        #: The configuration in use.
        self.config = _config(config, url, token, options)
        self._ssl_context = ssl_context
        self._transport = SyncTransport(self.config, ssl_context)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (each request has its own connection); here so
        the client can be used as a context manager."""

    def to_async(self) -> AsyncClient:
        """An :class:`AsyncClient` with the same configuration."""
        return AsyncClient(config=self.config, ssl_context=self._ssl_context)

    def wait_for_approval(self, id: str, *, timeout_s: float) -> dict[str, Any]:
        """Long-polls the approval until it is no longer ``pending`` or
        ``timeout_s`` has passed (rounded up to whole seconds); returns it as
        last read (check ``status``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            # The server waits whole seconds: round up, so the wait is never cut short.
            wait_s = min(APPROVAL_WAIT_MAX_S, math.ceil(max(0.0, deadline - time.monotonic())))
            approval = self.get_approval(id, wait_s=wait_s)
            if approval.get("status") != "pending" or time.monotonic() >= deadline or wait_s == 0:
                return approval

    def ready(self) -> dict[str, Any]:
        """`GET /readyz`: whether the server can answer (``{"status": "ready", ...}``)."""
        return self._transport.call(_api.ready())

    def create_identity(
        self,
        id: str,
        kind: str,
        *,
        parent: str | None = None,
        public_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/identities`: a ``human`` (no parent), ``agent`` or ``service`` identity."""
        return self._transport.call(_api.create_identity(id, kind, parent, public_key, attributes))

    def get_identity(self, id: str) -> dict[str, Any]:
        """`GET /v1/identities/{id}`."""
        return self._transport.call(_api.get_identity(id))

    def list_identities(
        self, *, parent: str | None = None, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """`GET /v1/identities`: one page, ``{"identities": [...], "next": <id or None>}``."""
        return self._transport.call(_api.list_identities(parent, after, limit))

    def revoke_identity(self, id: str) -> dict[str, Any]:
        """`POST /v1/identities/{id}/revoke`: the identity and its descendants stop being effective."""
        return self._transport.call(_api.revoke_identity(id))

    def create_grant(
        self,
        grantee: str,
        grantor: str,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        limits: Amounts | None = None,
        not_before: str | None = None,
        expires_at: str | None = None,
        signature: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/grants`: delegate ``actions`` on ``resources`` from a parent to its child."""
        return self._transport.call(
            _api.create_grant(grantee, grantor, actions, resources, limits, not_before, expires_at, signature)
        )

    def get_grant(self, id: str) -> dict[str, Any]:
        """`GET /v1/grants/{id}`."""
        return self._transport.call(_api.get_grant(id))

    def list_grants(self, *, grantee: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/grants?grantee=`."""
        return self._transport.call(_api.list_grants(grantee))

    def revoke_grant(self, id: str) -> dict[str, Any]:
        """`POST /v1/grants/{id}/revoke`."""
        return self._transport.call(_api.revoke_grant(id))

    def put_policies(self, policies: str, *, schema: str | None = None) -> dict[str, Any]:
        """`PUT /v1/policies`: replace the Cedar policy set (each policy with ``@id("...")``)."""
        return self._transport.call(_api.put_policies(policies, schema))

    def get_policies(self) -> dict[str, Any]:
        """`GET /v1/policies`: the current set, its hash and version."""
        return self._transport.call(_api.get_policies())

    def policy_versions(self) -> list[dict[str, Any]]:
        """`GET /v1/policies/versions`."""
        return self._transport.call(_api.policy_versions())

    def create_budget(
        self, identity: str, dimension: str, period: str, limit: int, *, id: str | None = None
    ) -> dict[str, Any]:
        """`POST /v1/budgets`: ``period`` is ``hour``, ``day``, ``week``, ``month``, ``year`` or ``total``."""
        return self._transport.call(_api.create_budget(identity, dimension, period, limit, id))

    def get_budget(self, id: str) -> dict[str, Any]:
        """`GET /v1/budgets/{id}`: with ``spent``, ``reserved``, ``remaining`` and the current ``window``."""
        return self._transport.call(_api.get_budget(id))

    def list_budgets(self, *, identity: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/budgets?identity=`."""
        return self._transport.call(_api.list_budgets(identity))

    def update_budget(self, id: str, *, limit: int) -> dict[str, Any]:
        """`PATCH /v1/budgets/{id}`: a new limit."""
        return self._transport.call(_api.update_budget(id, limit))

    def authorize(
        self,
        action: str,
        resource: str,
        *,
        identity: str | None = None,
        amounts: Amounts | None = None,
        context: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        reservation_ttl_s: int | None = None,
        session_id: str | None = None,
        trace_id: str | None = None,
    ) -> Decision:
        """`POST /v1/authorize`: may ``identity`` do ``action`` on ``resource`` with ``amounts``?

        A deny is an answer (check :attr:`Decision.allowed`), not an exception.
        A ``request_id`` is generated when none is given, which makes the call
        safe to retry: the server answers a repeat with the first answer."""
        return self._transport.call(
            _api.authorize(
                self._authorize_body(
                    action,
                    resource,
                    identity,
                    amounts,
                    context,
                    input,
                    request_id,
                    reservation_ttl_s,
                    session_id,
                    trace_id,
                )
            )
        )

    def authorize_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """`POST /v1/authorize/batch`: up to 30 requests (each the keyword arguments of :meth:`authorize`), decided in order."""
        return self._transport.call(_api.authorize_batch([self._authorize_body(**_batch_item(r)) for r in requests]))

    def get_reservation(self, id: str) -> dict[str, Any]:
        """`GET /v1/reservations/{id}` (admin keys only)."""
        return self._transport.call(_api.get_reservation(id))

    def settle(self, reservation_id: str, amounts: Amounts) -> dict[str, Any]:
        """`POST /v1/reservations/{id}/settle`: what was actually spent (each at most what was reserved); the rest is released."""
        return self._transport.call(_api.settle(reservation_id, amounts))

    def void(self, reservation_id: str) -> dict[str, Any]:
        """`POST /v1/reservations/{id}/void`: release everything the reservation holds."""
        return self._transport.call(_api.void(reservation_id))

    def record_event(
        self,
        decision_id: str,
        outcome: Outcome,
        *,
        duration_ms: int | None = None,
        output_digest: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/events`: how the tool run after a decision ended (``success``, ``failure`` or ``error``)."""
        return self._transport.call(_api.record_event(decision_id, outcome, duration_ms, output_digest, attributes))

    def list_approvals(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/approvals?status=`."""
        return self._transport.call(_api.list_approvals(status))

    def get_approval(self, id: str, *, wait_s: int | None = None) -> dict[str, Any]:
        """`GET /v1/approvals/{id}`; with ``wait_s`` (at most 60), a long poll that answers as soon as the approval is no longer pending."""
        return self._transport.call(_api.get_approval(id, wait_s))

    def approve(self, id: str, *, approver: str | None = None) -> dict[str, Any]:
        """`POST /v1/approvals/{id}/approve`."""
        return self._transport.call(_api.approve(id, approver))

    def deny(self, id: str, *, approver: str | None = None) -> dict[str, Any]:
        """`POST /v1/approvals/{id}/deny`."""
        return self._transport.call(_api.deny(id, approver))

    def create_token(self, identity: str, ttl_s: int, *, scopes: Sequence[str] | None = None) -> dict[str, Any]:
        """`POST /v1/tokens`: an agent token (``mt_...``) acting as ``identity`` only; the answer's ``token`` is shown once."""
        return self._transport.call(_api.create_token(identity, ttl_s, scopes))

    def introspect_token(self, token: str) -> dict[str, Any]:
        """`POST /v1/tokens/introspect` (RFC 7662 shape: ``{"active": ...}``)."""
        return self._transport.call(_api.introspect_token(token))

    def revoke_token(self, *, id: str | None = None, token: str | None = None) -> dict[str, Any]:
        """`POST /v1/tokens/revoke`: by the token's id or the token itself."""
        return self._transport.call(_api.revoke_token(id, token))

    def create_admin_key(self, role: str) -> dict[str, Any]:
        """`POST /v1/admin-keys`: ``role`` is ``admin`` or ``auditor``."""
        return self._transport.call(_api.create_admin_key(role))

    def revoke_admin_key(self, id: str) -> dict[str, Any]:
        """`POST /v1/admin-keys/{id}/revoke`."""
        return self._transport.call(_api.revoke_admin_key(id))

    def get_settings(self) -> dict[str, Any]:
        """`GET /v1/settings`."""
        return self._transport.call(_api.get_settings())

    def update_settings(self, **fields: Any) -> dict[str, Any]:
        """`PATCH /v1/settings`, e.g. ``record_inputs="full"``."""
        return self._transport.call(_api.update_settings(fields))

    def checkpoint(self) -> str:
        """`GET /v1/log/checkpoint`: the latest signed checkpoint (a C2SP signed note)."""
        return self._transport.call(_api.checkpoint())

    def log_entries(self, start: int, end: int) -> list[bytes]:
        """`GET /v1/log/entries`: entries ``start`` (inclusive) to ``end`` (exclusive), each its exact canonical bytes."""
        return self._transport.call(_api.log_entries(start, end))

    def inclusion_proof(self, index: int, size: int) -> dict[str, Any]:
        """`GET /v1/log/proof/inclusion`: ``{"index", "size", "hashes": [base64...]}``."""
        return self._transport.call(_api.inclusion_proof(index, size))

    def consistency_proof(self, from_size: int, to_size: int) -> dict[str, Any]:
        """`GET /v1/log/proof/consistency`."""
        return self._transport.call(_api.consistency_proof(from_size, to_size))

    def receipt(self, index: int) -> str:
        """`GET /v1/log/receipt`: a ``c2sp.org/tlog-proof@v1`` receipt for entry ``index`` (check it with :func:`mandate.verify_receipt`)."""
        return self._transport.call(_api.receipt(index))

    def public_key(self) -> str:
        """`GET /v1/log/public-key`: the log's verifier key (``<name>+<id>+<key>``)."""
        return self._transport.call(_api.public_key())

    def search(
        self,
        *,
        identity: str | None = None,
        type: str | None = None,
        decision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """`GET /v1/log/search`: ``{"entries": [...], "next_cursor": ...}``."""
        return self._transport.call(_api.search(identity, type, decision, since, until, limit, cursor))


class AsyncClient(_Base):
    """A non-blocking client for ``asyncio``; the same methods as
    :class:`Client`, as coroutines."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: Config | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        #: The configuration in use.
        self.config = _config(config, url, token, options)
        self._ssl_context = ssl_context
        self._transport = AsyncTransport(self.config, ssl_context)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release (each request has its own connection)."""

    def to_sync(self) -> Client:
        """A :class:`Client` with the same configuration."""
        return Client(config=self.config, ssl_context=self._ssl_context)

    async def wait_for_approval(self, id: str, *, timeout_s: float) -> dict[str, Any]:
        """Long-polls the approval until it is no longer ``pending`` or
        ``timeout_s`` has passed (rounded up to whole seconds); returns it as
        last read (check ``status``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            # The server waits whole seconds: round up, so the wait is never cut short.
            wait_s = min(APPROVAL_WAIT_MAX_S, math.ceil(max(0.0, deadline - time.monotonic())))
            approval = await self.get_approval(id, wait_s=wait_s)
            if approval.get("status") != "pending" or time.monotonic() >= deadline or wait_s == 0:
                return approval

    async def ready(self) -> dict[str, Any]:
        """`GET /readyz`: whether the server can answer (``{"status": "ready", ...}``)."""
        return await self._transport.call(_api.ready())

    async def create_identity(
        self,
        id: str,
        kind: str,
        *,
        parent: str | None = None,
        public_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/identities`: a ``human`` (no parent), ``agent`` or ``service`` identity."""
        return await self._transport.call(_api.create_identity(id, kind, parent, public_key, attributes))

    async def get_identity(self, id: str) -> dict[str, Any]:
        """`GET /v1/identities/{id}`."""
        return await self._transport.call(_api.get_identity(id))

    async def list_identities(
        self, *, parent: str | None = None, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """`GET /v1/identities`: one page, ``{"identities": [...], "next": <id or None>}``."""
        return await self._transport.call(_api.list_identities(parent, after, limit))

    async def revoke_identity(self, id: str) -> dict[str, Any]:
        """`POST /v1/identities/{id}/revoke`: the identity and its descendants stop being effective."""
        return await self._transport.call(_api.revoke_identity(id))

    async def create_grant(
        self,
        grantee: str,
        grantor: str,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        limits: Amounts | None = None,
        not_before: str | None = None,
        expires_at: str | None = None,
        signature: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/grants`: delegate ``actions`` on ``resources`` from a parent to its child."""
        return await self._transport.call(
            _api.create_grant(grantee, grantor, actions, resources, limits, not_before, expires_at, signature)
        )

    async def get_grant(self, id: str) -> dict[str, Any]:
        """`GET /v1/grants/{id}`."""
        return await self._transport.call(_api.get_grant(id))

    async def list_grants(self, *, grantee: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/grants?grantee=`."""
        return await self._transport.call(_api.list_grants(grantee))

    async def revoke_grant(self, id: str) -> dict[str, Any]:
        """`POST /v1/grants/{id}/revoke`."""
        return await self._transport.call(_api.revoke_grant(id))

    async def put_policies(self, policies: str, *, schema: str | None = None) -> dict[str, Any]:
        """`PUT /v1/policies`: replace the Cedar policy set (each policy with ``@id("...")``)."""
        return await self._transport.call(_api.put_policies(policies, schema))

    async def get_policies(self) -> dict[str, Any]:
        """`GET /v1/policies`: the current set, its hash and version."""
        return await self._transport.call(_api.get_policies())

    async def policy_versions(self) -> list[dict[str, Any]]:
        """`GET /v1/policies/versions`."""
        return await self._transport.call(_api.policy_versions())

    async def create_budget(
        self, identity: str, dimension: str, period: str, limit: int, *, id: str | None = None
    ) -> dict[str, Any]:
        """`POST /v1/budgets`: ``period`` is ``hour``, ``day``, ``week``, ``month``, ``year`` or ``total``."""
        return await self._transport.call(_api.create_budget(identity, dimension, period, limit, id))

    async def get_budget(self, id: str) -> dict[str, Any]:
        """`GET /v1/budgets/{id}`: with ``spent``, ``reserved``, ``remaining`` and the current ``window``."""
        return await self._transport.call(_api.get_budget(id))

    async def list_budgets(self, *, identity: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/budgets?identity=`."""
        return await self._transport.call(_api.list_budgets(identity))

    async def update_budget(self, id: str, *, limit: int) -> dict[str, Any]:
        """`PATCH /v1/budgets/{id}`: a new limit."""
        return await self._transport.call(_api.update_budget(id, limit))

    async def authorize(
        self,
        action: str,
        resource: str,
        *,
        identity: str | None = None,
        amounts: Amounts | None = None,
        context: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        reservation_ttl_s: int | None = None,
        session_id: str | None = None,
        trace_id: str | None = None,
    ) -> Decision:
        """`POST /v1/authorize`: may ``identity`` do ``action`` on ``resource`` with ``amounts``?

        A deny is an answer (check :attr:`Decision.allowed`), not an exception.
        A ``request_id`` is generated when none is given, which makes the call
        safe to retry: the server answers a repeat with the first answer."""
        return await self._transport.call(
            _api.authorize(
                self._authorize_body(
                    action,
                    resource,
                    identity,
                    amounts,
                    context,
                    input,
                    request_id,
                    reservation_ttl_s,
                    session_id,
                    trace_id,
                )
            )
        )

    async def authorize_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """`POST /v1/authorize/batch`: up to 30 requests (each the keyword arguments of :meth:`authorize`), decided in order."""
        return await self._transport.call(
            _api.authorize_batch([self._authorize_body(**_batch_item(r)) for r in requests])
        )

    async def get_reservation(self, id: str) -> dict[str, Any]:
        """`GET /v1/reservations/{id}` (admin keys only)."""
        return await self._transport.call(_api.get_reservation(id))

    async def settle(self, reservation_id: str, amounts: Amounts) -> dict[str, Any]:
        """`POST /v1/reservations/{id}/settle`: what was actually spent (each at most what was reserved); the rest is released."""
        return await self._transport.call(_api.settle(reservation_id, amounts))

    async def void(self, reservation_id: str) -> dict[str, Any]:
        """`POST /v1/reservations/{id}/void`: release everything the reservation holds."""
        return await self._transport.call(_api.void(reservation_id))

    async def record_event(
        self,
        decision_id: str,
        outcome: Outcome,
        *,
        duration_ms: int | None = None,
        output_digest: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/events`: how the tool run after a decision ended (``success``, ``failure`` or ``error``)."""
        return await self._transport.call(
            _api.record_event(decision_id, outcome, duration_ms, output_digest, attributes)
        )

    async def list_approvals(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/approvals?status=`."""
        return await self._transport.call(_api.list_approvals(status))

    async def get_approval(self, id: str, *, wait_s: int | None = None) -> dict[str, Any]:
        """`GET /v1/approvals/{id}`; with ``wait_s`` (at most 60), a long poll that answers as soon as the approval is no longer pending."""
        return await self._transport.call(_api.get_approval(id, wait_s))

    async def approve(self, id: str, *, approver: str | None = None) -> dict[str, Any]:
        """`POST /v1/approvals/{id}/approve`."""
        return await self._transport.call(_api.approve(id, approver))

    async def deny(self, id: str, *, approver: str | None = None) -> dict[str, Any]:
        """`POST /v1/approvals/{id}/deny`."""
        return await self._transport.call(_api.deny(id, approver))

    async def create_token(self, identity: str, ttl_s: int, *, scopes: Sequence[str] | None = None) -> dict[str, Any]:
        """`POST /v1/tokens`: an agent token (``mt_...``) acting as ``identity`` only; the answer's ``token`` is shown once."""
        return await self._transport.call(_api.create_token(identity, ttl_s, scopes))

    async def introspect_token(self, token: str) -> dict[str, Any]:
        """`POST /v1/tokens/introspect` (RFC 7662 shape: ``{"active": ...}``)."""
        return await self._transport.call(_api.introspect_token(token))

    async def revoke_token(self, *, id: str | None = None, token: str | None = None) -> dict[str, Any]:
        """`POST /v1/tokens/revoke`: by the token's id or the token itself."""
        return await self._transport.call(_api.revoke_token(id, token))

    async def create_admin_key(self, role: str) -> dict[str, Any]:
        """`POST /v1/admin-keys`: ``role`` is ``admin`` or ``auditor``."""
        return await self._transport.call(_api.create_admin_key(role))

    async def revoke_admin_key(self, id: str) -> dict[str, Any]:
        """`POST /v1/admin-keys/{id}/revoke`."""
        return await self._transport.call(_api.revoke_admin_key(id))

    async def get_settings(self) -> dict[str, Any]:
        """`GET /v1/settings`."""
        return await self._transport.call(_api.get_settings())

    async def update_settings(self, **fields: Any) -> dict[str, Any]:
        """`PATCH /v1/settings`, e.g. ``record_inputs="full"``."""
        return await self._transport.call(_api.update_settings(fields))

    async def checkpoint(self) -> str:
        """`GET /v1/log/checkpoint`: the latest signed checkpoint (a C2SP signed note)."""
        return await self._transport.call(_api.checkpoint())

    async def log_entries(self, start: int, end: int) -> list[bytes]:
        """`GET /v1/log/entries`: entries ``start`` (inclusive) to ``end`` (exclusive), each its exact canonical bytes."""
        return await self._transport.call(_api.log_entries(start, end))

    async def inclusion_proof(self, index: int, size: int) -> dict[str, Any]:
        """`GET /v1/log/proof/inclusion`: ``{"index", "size", "hashes": [base64...]}``."""
        return await self._transport.call(_api.inclusion_proof(index, size))

    async def consistency_proof(self, from_size: int, to_size: int) -> dict[str, Any]:
        """`GET /v1/log/proof/consistency`."""
        return await self._transport.call(_api.consistency_proof(from_size, to_size))

    async def receipt(self, index: int) -> str:
        """`GET /v1/log/receipt`: a ``c2sp.org/tlog-proof@v1`` receipt for entry ``index`` (check it with :func:`mandate.verify_receipt`)."""
        return await self._transport.call(_api.receipt(index))

    async def public_key(self) -> str:
        """`GET /v1/log/public-key`: the log's verifier key (``<name>+<id>+<key>``)."""
        return await self._transport.call(_api.public_key())

    async def search(
        self,
        *,
        identity: str | None = None,
        type: str | None = None,
        decision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """`GET /v1/log/search`: ``{"entries": [...], "next_cursor": ...}``."""
        return await self._transport.call(_api.search(identity, type, decision, since, until, limit, cursor))
