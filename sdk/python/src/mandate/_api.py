"""The API of SPEC §4 as :class:`~mandate._http.Call` values: one function per
endpoint, shared by the sync and the async client, so that both send exactly
the same requests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ._http import Call, Response, quote
from .types import Amounts, Decision

JsonObject = dict[str, Any]


def _json(response: Response) -> JsonObject:
    value = response.json()
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def _list(key: str) -> Any:
    def parse(response: Response) -> list[JsonObject]:
        value = _json(response)[key]
        if not isinstance(value, list):
            raise TypeError(f"expected `{key}` to be a list")
        return value

    return parse


def _text(response: Response) -> str:
    return response.text()


def _lines(response: Response) -> list[bytes]:
    return [line for line in response.body.split(b"\n") if line]


def _drop_none(fields: Mapping[str, Any]) -> JsonObject:
    return {key: value for key, value in fields.items() if value is not None}


# ------------------------------------------------------------- operations


def ready() -> Call[JsonObject]:
    return Call("GET", "/readyz", _json, idempotent=True)


# ------------------------------------------------------------- identities


def create_identity(
    id: str, kind: str, parent: str | None, public_key: str | None, attributes: Mapping[str, Any] | None
) -> Call[JsonObject]:
    body = _drop_none({"id": id, "kind": kind, "parent": parent, "public_key": public_key})
    body["attributes"] = dict(attributes or {})
    return Call("POST", "/v1/identities", _json, body=body)


def get_identity(id: str) -> Call[JsonObject]:
    return Call("GET", f"/v1/identities/{quote(id)}", _json, idempotent=True)


def list_identities(parent: str | None, after: str | None, limit: int | None) -> Call[JsonObject]:
    return Call(
        "GET", "/v1/identities", _json, query={"parent": parent, "after": after, "limit": limit}, idempotent=True
    )


def revoke_identity(id: str) -> Call[JsonObject]:
    return Call("POST", f"/v1/identities/{quote(id)}/revoke", _json)


# ----------------------------------------------------------------- grants


def create_grant(
    grantee: str,
    grantor: str,
    actions: Sequence[str],
    resources: Sequence[str],
    limits: Amounts | None,
    not_before: str | None,
    expires_at: str | None,
    signature: str | None,
) -> Call[JsonObject]:
    body = {
        "grantee": grantee,
        "grantor": grantor,
        "actions": list(actions),
        "resources": list(resources),
        "limits": dict(limits or {}),
    }
    body.update(_drop_none({"not_before": not_before, "expires_at": expires_at, "signature": signature}))
    return Call("POST", "/v1/grants", _json, body=body)


def get_grant(id: str) -> Call[JsonObject]:
    return Call("GET", f"/v1/grants/{quote(id)}", _json, idempotent=True)


def list_grants(grantee: str | None) -> Call[list[JsonObject]]:
    return Call("GET", "/v1/grants", _list("grants"), query={"grantee": grantee}, idempotent=True)


def revoke_grant(id: str) -> Call[JsonObject]:
    return Call("POST", f"/v1/grants/{quote(id)}/revoke", _json)


# --------------------------------------------------------------- policies


def put_policies(policies: str, schema: str | None) -> Call[JsonObject]:
    # Replacing the whole set with the same text twice leaves one state.
    return Call(
        "PUT", "/v1/policies", _json, body=_drop_none({"policies": policies, "schema": schema}), idempotent=True
    )


def get_policies() -> Call[JsonObject]:
    return Call("GET", "/v1/policies", _json, idempotent=True)


def policy_versions() -> Call[list[JsonObject]]:
    return Call("GET", "/v1/policies/versions", _list("versions"), idempotent=True)


# ---------------------------------------------------------------- budgets


def create_budget(identity: str, dimension: str, period: str, limit: int, id: str | None) -> Call[JsonObject]:
    body = _drop_none({"id": id, "identity": identity, "dimension": dimension, "period": period, "limit": limit})
    return Call("POST", "/v1/budgets", _json, body=body)


def get_budget(id: str) -> Call[JsonObject]:
    return Call("GET", f"/v1/budgets/{quote(id)}", _json, idempotent=True)


def list_budgets(identity: str | None) -> Call[list[JsonObject]]:
    return Call("GET", "/v1/budgets", _list("budgets"), query={"identity": identity}, idempotent=True)


def update_budget(id: str, limit: int) -> Call[JsonObject]:
    return Call("PATCH", f"/v1/budgets/{quote(id)}", _json, body={"limit": limit}, idempotent=True)


# -------------------------------------------------------------- decisions


def authorize_body(
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
) -> JsonObject:
    """The body of one authorize request; a ``request_id`` is generated when
    none is given, so that a retry is answered with the first answer."""
    body: JsonObject = {
        "action": action,
        "resource": resource,
        "amounts": dict(amounts or {}),
        "context": dict(context or {}),
        "input": dict(input or {}),
        "request_id": request_id or f"sdk-{uuid.uuid4()}",
    }
    body.update(
        _drop_none(
            {
                "identity": identity,
                "reservation_ttl_s": reservation_ttl_s,
                "session_id": session_id,
                "trace_id": trace_id,
            }
        )
    )
    return body


def authorize(body: JsonObject) -> Call[Decision]:
    def parse(response: Response) -> Decision:
        return Decision.from_json(_json(response), action=body["action"], amounts=body["amounts"])

    # Idempotent because of the request_id the body always carries.
    return Call("POST", "/v1/authorize", parse, body=body, idempotent=True)


def authorize_batch(bodies: Sequence[JsonObject]) -> Call[list[Decision]]:
    def parse(response: Response) -> list[Decision]:
        value = response.json()
        answers = value.get("decisions", value.get("results")) if isinstance(value, dict) else value
        if not isinstance(answers, list) or len(answers) != len(bodies):
            raise ValueError("expected one decision per request")
        return [
            Decision.from_json(answer, action=body["action"], amounts=body["amounts"])
            for answer, body in zip(answers, bodies, strict=True)
        ]

    return Call("POST", "/v1/authorize/batch", parse, body={"requests": list(bodies)}, idempotent=True)


def get_reservation(id: str) -> Call[JsonObject]:
    return Call("GET", f"/v1/reservations/{quote(id)}", _json, idempotent=True)


def settle(reservation_id: str, amounts: Amounts) -> Call[JsonObject]:
    return Call("POST", f"/v1/reservations/{quote(reservation_id)}/settle", _json, body={"amounts": dict(amounts)})


def void(reservation_id: str) -> Call[JsonObject]:
    return Call("POST", f"/v1/reservations/{quote(reservation_id)}/void", _json, body={})


def record_event(
    decision_id: str,
    outcome: str,
    duration_ms: int | None,
    output_digest: str | None,
    attributes: Mapping[str, Any] | None,
) -> Call[JsonObject]:
    body = _drop_none(
        {
            "decision_id": decision_id,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "output_digest": output_digest,
            "attributes": dict(attributes) if attributes is not None else None,
        }
    )
    return Call("POST", "/v1/events", _json, body=body)


# -------------------------------------------------------------- approvals


def list_approvals(status: str | None) -> Call[list[JsonObject]]:
    return Call("GET", "/v1/approvals", _list("approvals"), query={"status": status}, idempotent=True)


def get_approval(id: str, wait_s: int | None) -> Call[JsonObject]:
    return Call(
        "GET",
        f"/v1/approvals/{quote(id)}",
        _json,
        query={"wait_s": wait_s},
        idempotent=True,
        extra_timeout_s=float(wait_s or 0),
    )


def approve(id: str, approver: str | None) -> Call[JsonObject]:
    return Call("POST", f"/v1/approvals/{quote(id)}/approve", _json, body=_drop_none({"approver": approver}))


def deny(id: str, approver: str | None) -> Call[JsonObject]:
    return Call("POST", f"/v1/approvals/{quote(id)}/deny", _json, body=_drop_none({"approver": approver}))


# ----------------------------------------------------------------- tokens


def create_token(identity: str, ttl_s: int, scopes: Sequence[str] | None) -> Call[JsonObject]:
    body: JsonObject = {"identity": identity, "ttl_s": ttl_s}
    if scopes is not None:
        body["scopes"] = list(scopes)
    return Call("POST", "/v1/tokens", _json, body=body)


def introspect_token(token: str) -> Call[JsonObject]:
    return Call("POST", "/v1/tokens/introspect", _json, body={"token": token}, idempotent=True)


def revoke_token(id: str | None, token: str | None) -> Call[JsonObject]:
    if (id is None) == (token is None):
        raise ValueError("give exactly one of `id` and `token`")
    return Call("POST", "/v1/tokens/revoke", _json, body=_drop_none({"id": id, "token": token}))


# ------------------------------------------------------ admin keys, settings


def create_admin_key(role: str) -> Call[JsonObject]:
    return Call("POST", "/v1/admin-keys", _json, body={"role": role})


def revoke_admin_key(id: str) -> Call[JsonObject]:
    return Call("POST", f"/v1/admin-keys/{quote(id)}/revoke", _json)


def get_settings() -> Call[JsonObject]:
    return Call("GET", "/v1/settings", _json, idempotent=True)


def update_settings(fields: Mapping[str, Any]) -> Call[JsonObject]:
    return Call("PATCH", "/v1/settings", _json, body=dict(fields), idempotent=True)


# -------------------------------------------------------------------- log


def checkpoint() -> Call[str]:
    return Call("GET", "/v1/log/checkpoint", _text, idempotent=True)


def log_entries(start: int, end: int) -> Call[list[bytes]]:
    return Call("GET", "/v1/log/entries", _lines, query={"start": start, "end": end}, idempotent=True)


def inclusion_proof(index: int, size: int) -> Call[JsonObject]:
    return Call("GET", "/v1/log/proof/inclusion", _json, query={"index": index, "size": size}, idempotent=True)


def consistency_proof(from_size: int, to_size: int) -> Call[JsonObject]:
    return Call("GET", "/v1/log/proof/consistency", _json, query={"from": from_size, "to": to_size}, idempotent=True)


def receipt(index: int) -> Call[str]:
    return Call("GET", "/v1/log/receipt", _text, query={"index": index}, idempotent=True)


def public_key() -> Call[str]:
    return Call("GET", "/v1/log/public-key", lambda r: r.text().strip(), idempotent=True)


def search(
    identity: str | None,
    type: str | None,
    decision: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[JsonObject]:
    query = {
        "identity": identity,
        "type": type,
        "decision": decision,
        "since": since,
        "until": until,
        "limit": limit,
        "cursor": cursor,
    }
    return Call("GET", "/v1/log/search", _json, query=query, idempotent=True)
