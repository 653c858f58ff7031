"""Mandate's Python SDK: authority, budgets and a verifiable audit log for
AI agents.

>>> import mandate
>>> @mandate.guard(action="payments.charge", resource=lambda a: f"merchant://{a['merchant']}",
...                amounts=lambda a: {"usd_cents": a["cents"]})
... def charge(merchant: str, cents: int) -> dict: ...

* :class:`Client` / :class:`AsyncClient`: the whole HTTP API (SPEC §4),
  configured from arguments or ``MANDATE_URL`` / ``MANDATE_TOKEN``.
* :func:`guard`: authorize before a tool runs, settle and record after.
* :func:`verify_receipt`: check a ``c2sp.org/tlog-proof@v1`` receipt offline.
* :mod:`mandate.langchain` and :mod:`mandate.openai_agents`: agent integrations
  (imported on demand; they need those frameworks installed).
"""

from ._guard import GuardSpec, configure, default_client, guard, output_digest, run_guarded, run_guarded_async
from ._http import Config
from .client import AsyncClient, Client
from .errors import (
    ApprovalDenied,
    ApprovalRequired,
    ApprovalTimeout,
    AuthorizationUnavailable,
    Conflict,
    ConnectionFailed,
    Denied,
    Forbidden,
    GrantExceedsGrantor,
    GrantorNotParent,
    GrantSignatureInvalid,
    Internal,
    InvalidField,
    InvalidIdentity,
    InvalidJson,
    InvalidPolicy,
    MandateError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RequestTimeout,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    VerificationError,
)
from .types import Decision, Outcome, Reservation
from .verify import Checkpoint, VerifiedReceipt, VerifierKey, open_checkpoint, verify_receipt

__version__ = "0.1.0"

__all__ = [
    "ApprovalDenied",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AsyncClient",
    "AuthorizationUnavailable",
    "Checkpoint",
    "Client",
    "Config",
    "Conflict",
    "ConnectionFailed",
    "Decision",
    "Denied",
    "Forbidden",
    "GrantExceedsGrantor",
    "GrantSignatureInvalid",
    "GrantorNotParent",
    "GuardSpec",
    "Internal",
    "InvalidField",
    "InvalidIdentity",
    "InvalidJson",
    "InvalidPolicy",
    "MandateError",
    "MethodNotAllowed",
    "NotFound",
    "Outcome",
    "PayloadTooLarge",
    "ProblemError",
    "RequestTimeout",
    "Reservation",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "VerificationError",
    "VerifiedReceipt",
    "VerifierKey",
    "configure",
    "default_client",
    "guard",
    "open_checkpoint",
    "output_digest",
    "run_guarded",
    "run_guarded_async",
    "verify_receipt",
]
