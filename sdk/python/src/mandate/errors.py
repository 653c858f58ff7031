"""The exceptions the SDK raises.

Every exception derives from :class:`MandateError`. They fall in four groups:

* :class:`ProblemError` and its subclasses: the server answered with an RFC 9457
  ``application/problem+json`` body. The subclass is chosen by the problem's
  stable ``code`` (``not_found`` -> :class:`NotFound`, ...), so callers can
  catch exactly the failures they handle.
* :class:`TransportError` (:class:`ConnectionFailed`, :class:`RequestTimeout`):
  no answer at all.
* The guard's outcomes: :class:`Denied`, :class:`ApprovalRequired`,
  :class:`ApprovalDenied`, :class:`ApprovalTimeout` and
  :class:`AuthorizationUnavailable` (fail closed: the tool did not run).
* :class:`VerificationError`: a receipt, checkpoint or key did not verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Decision

__all__ = [
    "ApprovalDenied",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AuthorizationUnavailable",
    "Conflict",
    "ConnectionFailed",
    "Denied",
    "Forbidden",
    "GrantExceedsGrantor",
    "GrantSignatureInvalid",
    "GrantorNotParent",
    "Internal",
    "InvalidField",
    "InvalidIdentity",
    "InvalidJson",
    "InvalidPolicy",
    "MandateError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "RequestTimeout",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "VerificationError",
    "problem_error",
]


class MandateError(Exception):
    """The base of every exception the SDK raises."""


# --------------------------------------------------------------- transport


class TransportError(MandateError):
    """No answer from the server: it could not be reached, or it took too long."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        #: The URL that was requested.
        self.url = url


class ConnectionFailed(TransportError):
    """The connection could not be made or broke before the answer was read."""

    def __init__(self, message: str, *, url: str, nothing_sent: bool = False) -> None:
        super().__init__(message, url=url)
        #: Whether the request surely never reached the server (connection
        #: refused, name not resolved): then any request may be sent again.
        self.nothing_sent = nothing_sent


class RequestTimeout(TransportError):
    """The server did not answer within the timeout."""


# ----------------------------------------------------------------- problems


class ProblemError(MandateError):
    """The server refused the request with an RFC 9457 problem.

    ``code`` is Mandate's stable problem code (``not_found``, ``conflict``,
    ...): match on it, or catch the subclass named after it.
    """

    #: The stable code this class stands for (``None`` on the base class).
    CODE: str | None = None

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        #: The HTTP status.
        self.status = status
        #: The whole problem body.
        self.problem: dict[str, Any] = dict(problem)
        #: The stable problem code.
        self.code: str = str(problem.get("code") or self.CODE or "unknown")
        #: The problem's short title.
        self.title: str | None = _text(problem.get("title"))
        #: The problem's explanation.
        self.detail: str | None = _text(problem.get("detail"))
        #: The request field the problem is about, when the server names one.
        self.field: str | None = _text(problem.get("field"))
        #: ``Retry-After`` in seconds, on 429 and some 503 answers.
        self.retry_after_s: float | None = None
        message = f"{status} {self.code}"
        if self.detail:
            message += f": {self.detail}"
        if self.field:
            message += f" (field `{self.field}`)"
        super().__init__(message)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class InvalidJson(ProblemError):
    """400: the body is not JSON, not I-JSON, or not an object."""

    CODE = "invalid_json"


class InvalidField(ProblemError):
    """400: a field is missing, of the wrong type or out of range (see ``field``)."""

    CODE = "invalid_field"


class PayloadTooLarge(ProblemError):
    """413: the body, or the log entry it would make, is too large."""

    CODE = "payload_too_large"


class TooManyRequests(ProblemError):
    """429: the credential has too many requests in flight; see ``retry_after_s``."""

    CODE = "too_many_requests"


class Unauthorized(ProblemError):
    """401: no token, or one the server does not know (expired, revoked)."""

    CODE = "unauthorized"


class Forbidden(ProblemError):
    """403: this key's role, or this agent token, may not do this."""

    CODE = "forbidden"


class NotFound(ProblemError):
    """404: no such object in this tenant."""

    CODE = "not_found"


class MethodNotAllowed(ProblemError):
    """405: the path does not take this method."""

    CODE = "method_not_allowed"


class Conflict(ProblemError):
    """409: the object exists already, or the change conflicts with the state."""

    CODE = "conflict"


class GrantExceedsGrantor(ProblemError):
    """A grant wider than its grantor's own authority."""

    CODE = "grant_exceeds_grantor"


class GrantorNotParent(ProblemError):
    """A grant from someone other than the grantee's parent."""

    CODE = "grantor_not_parent"


class InvalidIdentity(ProblemError):
    """An identity that cannot be placed in the tree (parent unknown or revoked, too deep)."""

    CODE = "invalid_identity"


class InvalidPolicy(ProblemError):
    """A Cedar policy set that does not parse or validate."""

    CODE = "invalid_policy"


class GrantSignatureInvalid(ProblemError):
    """A grant whose signature does not verify under its grantor's key."""

    CODE = "grant_signature_invalid"


class Unavailable(ProblemError):
    """503: the server cannot answer now (shutting down, storage failed, too slow)."""

    CODE = "unavailable"


class Internal(ProblemError):
    """500: a defect in the server."""

    CODE = "internal"


class UnexpectedResponse(ProblemError):
    """An answer that is not what the API documents (e.g. an HTML error page of a proxy)."""

    CODE = "unexpected_response"


_BY_CODE: dict[str, type[ProblemError]] = {
    cls.CODE: cls
    for cls in (
        InvalidJson,
        InvalidField,
        PayloadTooLarge,
        TooManyRequests,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        GrantExceedsGrantor,
        GrantorNotParent,
        InvalidIdentity,
        InvalidPolicy,
        GrantSignatureInvalid,
        Unavailable,
        Internal,
        UnexpectedResponse,
    )
    if cls.CODE is not None
}


def problem_error(status: int, problem: Mapping[str, Any]) -> ProblemError:
    """The exception for a problem body: the subclass named by its ``code``,
    or :class:`ProblemError` itself for a code this SDK does not know yet."""
    cls = _BY_CODE.get(str(problem.get("code")), ProblemError)
    return cls(status, problem)


# -------------------------------------------------------------------- guard


class Denied(MandateError):
    """Mandate denied the action: the guarded function did not run.

    ``decision`` holds the whole answer, ``reasons`` its reason codes.
    """

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        #: The decision.
        self.decision = decision
        #: The reasons, as the server gave them (``[{code, message, ...}]``).
        self.reasons = decision.reasons
        super().__init__(message or f"denied `{decision.action}`: {decision.reason_text()}")


class ApprovalRequired(MandateError):
    """The decision is pending a human's approval and the guard was told not
    to wait (``on_pending="raise"``): the function did not run."""

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        #: The pending decision.
        self.decision = decision
        #: The approval's id (``GET /v1/approvals/{id}``).
        self.approval_id: str | None = decision.approval_id
        super().__init__(message or f"`{decision.action}` needs approval `{self.approval_id}`")


class ApprovalTimeout(ApprovalRequired):
    """No human answered the approval in time: the function did not run and
    its reservation was voided."""


class ApprovalDenied(Denied):
    """The approval was denied (or expired): the function did not run."""

    def __init__(self, decision: Decision, approval: Mapping[str, Any]) -> None:
        #: The approval as last read.
        self.approval: dict[str, Any] = dict(approval)
        status = self.approval.get("status")
        super().__init__(decision, f"approval `{decision.approval_id}` for `{decision.action}` is {status}")


class AuthorizationUnavailable(MandateError):
    """No decision could be obtained (server unreachable, timing out or
    failing), so the guard failed closed: the function did not run.

    The underlying error is chained as ``__cause__`` and kept in ``cause``.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        #: What went wrong underneath.
        self.cause = cause
        super().__init__(message)


# ------------------------------------------------------------- verification


class VerificationError(MandateError, ValueError):
    """A receipt, signed note, checkpoint, entry or verifier key failed to verify."""
