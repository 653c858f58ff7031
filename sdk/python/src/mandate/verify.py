"""Offline verification of Mandate receipts (SPEC §5), trusting nothing but
the log's verifier key.

A ``c2sp.org/tlog-proof@v1`` receipt is::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <N>
    <base64 hash>            (the inclusion proof, the leaf's sibling first)
    ...
    <blank line>
    <signed checkpoint>      (a C2SP tlog-checkpoint in a C2SP signed note)

:func:`verify_receipt` checks that the checkpoint is signed by the key
(C2SP signed-note, Ed25519), that the key's name is the checkpoint's origin,
that the entry is a canonical Mandate entry naming the receipt's index, and
that the RFC 9162 inclusion proof leads from the entry's leaf hash to the
signed root. The Merkle and note parsing is standard library; the Ed25519
check needs the ``cryptography`` package (``pip install 'mandate-sdk[verify]'``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import VerificationError

__all__ = [
    "Checkpoint",
    "VerifiedReceipt",
    "VerifierKey",
    "canonical_json",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "verify_inclusion",
    "verify_receipt",
]

RECEIPT_HEADER = "c2sp.org/tlog-proof@v1"
#: One hash per level of a 2^64-leaf tree.
PROOF_HASHES_MAX = 64
#: The signed-note size limit (C2SP).
NOTE_BYTES_MAX = 64 * 1024
SIGNATURE_PREFIX = "\u2014 "
ED25519_TYPE = 0x01


# ------------------------------------------------------------ RFC 9162 §2.1


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: whether ``proof`` leads from leaf ``index`` of a
    tree of ``size`` leaves to ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ------------------------------------------------------------ C2SP signed note


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise VerificationError(f"{what} is not base64") from error


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP signed-note verifier key: ``<name>+<8 hex key id>+<base64(0x01 || key)>``."""

    name: str
    key_id: int
    public_key: bytes

    @staticmethod
    def compute_key_id(name: str, public_key: bytes) -> int:
        """The first four bytes, big-endian, of ``SHA-256(name || 0x0A || 0x01 || key)``."""
        digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()
        return int.from_bytes(digest[:4], "big")

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parses the key text (as ``GET /v1/log/public-key`` answers it)."""
        # The name has no `+`; base64 may, so split at most twice.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationError("a verifier key is <name>+<key id>+<key>")
        name, id_hex, key_b64 = parts
        if not name or any(c.isspace() for c in name):
            raise VerificationError(f"invalid key name `{name[:64]}`")
        if len(id_hex) != 8 or any(c not in "0123456789abcdefABCDEF" for c in id_hex):
            raise VerificationError("the key id is not 8 hex digits")
        raw = _b64decode(key_b64, "the key")
        if len(raw) != 33 or raw[0] != ED25519_TYPE:
            raise VerificationError("the key is not an Ed25519 key (type 0x01, 32 bytes)")
        key = cls(name=name, key_id=int(id_hex, 16), public_key=raw[1:])
        if cls.compute_key_id(name, key.public_key) != key.key_id:
            raise VerificationError("the key id does not match the name and key")
        return key

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise VerificationError(
                "checking Ed25519 signatures needs the `cryptography` package: pip install 'mandate-sdk[verify]'"
            ) from error
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"


def _open_note(note: str, key: VerifierKey) -> str:
    """The text of a signed note that ``key`` signed. Signatures by other
    keys are ignored; a signature by ``key`` that fails rejects the note."""
    if len(note.encode()) > NOTE_BYTES_MAX:
        raise VerificationError("the signed note is larger than 64 KiB")
    if not note.endswith("\n"):
        raise VerificationError("the signed note does not end with a newline")
    if any(c < " " and c != "\n" for c in note):
        raise VerificationError("the signed note holds control characters")
    split = note[:-1].rfind("\n\n")
    if split < 0:
        raise VerificationError("the note has no signatures")
    text, signature_lines = note[: split + 1], note[split + 2 :]
    signed = False
    for line in signature_lines.split("\n")[:-1]:
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError("a signature line does not start with an em dash")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64decode(encoded, "a signature")
        if len(raw) < 4:
            raise VerificationError("a signature is shorter than its key id")
        if name != key.name or int.from_bytes(raw[:4], "big") != key.key_id:
            continue
        if not key.verifies(text.encode(), raw[4:]):
            raise VerificationError(f"the signature by `{key.name}` does not verify")
        signed = True
    if not signed:
        raise VerificationError(f"no signature by `{key.name}` (key id {key.key_id:08x})")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog checkpoint: what the log committed to."""

    origin: str
    size: int
    root: bytes

    @property
    def root_base64(self) -> str:
        """The root as the checkpoint writes it."""
        return base64.b64encode(self.root).decode()


def _decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text.startswith("0")):
        raise VerificationError(f"{what} `{text[:32]}` is not a decimal number without leading zeros")
    value = int(text)
    if value >= 2**64:
        raise VerificationError(f"{what} is too large")
    return value


def _hash(text: str, what: str) -> bytes:
    raw = _b64decode(text, what)
    if len(raw) != 32:
        raise VerificationError(f"{what} is not a 32-byte hash")
    return raw


def open_checkpoint(note: str, key: VerifierKey | str) -> Checkpoint:
    """Verifies a signed checkpoint under ``key`` (whose name must be the
    checkpoint's origin) and returns what it commits to."""
    verifier = VerifierKey.parse(key) if isinstance(key, str) else key
    text = _open_note(note, verifier)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("a checkpoint is origin, size and root lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin:
        raise VerificationError("the checkpoint's origin is empty")
    if any(not line for line in lines[3:]):
        raise VerificationError("the checkpoint has an empty extension line")
    if origin != verifier.name:
        raise VerificationError(f"checkpoint origin `{origin}` is not the name of the key `{verifier.name}`")
    return Checkpoint(origin=origin, size=_decimal(size, "the tree size"), root=_hash(root, "the root"))


# --------------------------------------------------------------- RFC 8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value of the kind Mandate's entries
    hold: objects with keys sorted by UTF-16 code units, no whitespace,
    minimal string escapes, integers. Non-integral numbers are written as
    ECMAScript would for the common cases (shortest round-trip repr)."""
    return _jcs(value).encode("utf-8")


def _jcs(value: Any) -> str:
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + _jcs(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, str):
        return _jcs_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise VerificationError("NaN and infinities are not JSON")
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            sign = "-" if exponent.startswith("-") else "+"
            return f"{mantissa.removesuffix('.0')}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
        return text
    raise VerificationError(f"not a JSON value: {type(value).__name__}")


def _jcs_string(text: str) -> str:
    # json.dumps without ensure_ascii escapes exactly `"`, `\` and the C0
    # controls (\b \t \n \f \r short, others \u00xx lowercase), as RFC 8785 does.
    return json.dumps(text, ensure_ascii=False)


# -------------------------------------------------------------------- receipt


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a verified receipt proves: entry ``index`` is in the log of
    ``checkpoint.size`` entries whose root the log key signed."""

    index: int
    checkpoint: Checkpoint
    entry: dict[str, Any]
    leaf_hash: bytes


def verify_receipt(
    receipt_text: str | bytes, entry_bytes: bytes | str, verifier_key: str | VerifierKey
) -> VerifiedReceipt:
    """Checks a ``c2sp.org/tlog-proof@v1`` receipt for one entry, offline.

    Args:
        receipt_text: The receipt (``GET /v1/log/receipt?index=N``).
        entry_bytes: The entry's exact canonical bytes (a line of
            ``GET /v1/log/entries``, without its newline).
        verifier_key: The log's verifier key text (``GET /v1/log/public-key``,
            obtained out of band), or a parsed :class:`VerifierKey`.

    Returns:
        The verified index, checkpoint and entry.

    Raises:
        VerificationError: naming the first check that failed.
    """
    key = VerifierKey.parse(verifier_key) if isinstance(verifier_key, str) else verifier_key
    try:
        text = receipt_text.decode("utf-8") if isinstance(receipt_text, bytes) else receipt_text
    except UnicodeDecodeError as error:
        raise VerificationError("the receipt is not UTF-8") from error
    entry = entry_bytes.encode("utf-8") if isinstance(entry_bytes, str) else bytes(entry_bytes)
    head, separator, note = text.partition("\n\n")
    if not separator:
        raise VerificationError("the receipt has no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != RECEIPT_HEADER:
        raise VerificationError(f"the first line is not {RECEIPT_HEADER}")
    lines = lines[1:]
    if lines and lines[0].startswith("extra "):
        _b64decode(lines[0][len("extra ") :], "the extra data")
        lines = lines[1:]
    if not lines or not lines[0].startswith("index "):
        raise VerificationError("the receipt has no index line")
    index = _decimal(lines[0][len("index ") :], "the index")
    proof_lines = lines[1:]
    if len(proof_lines) > PROOF_HASHES_MAX:
        raise VerificationError("more than 64 proof hashes")
    proof = [_hash(line, "a proof hash") for line in proof_lines]

    checkpoint = open_checkpoint(note, key)
    parsed = _parse_entry(entry)
    if parsed.get("index") != index:
        raise VerificationError(f"the entry is index {parsed.get('index')} but the receipt proves index {index}")
    leaf = leaf_hash(entry)
    if not verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root):
        raise VerificationError(
            f"the inclusion proof for index {index} does not lead to the root of the checkpoint of size {checkpoint.size}"
        )
    return VerifiedReceipt(index=index, checkpoint=checkpoint, entry=parsed, leaf_hash=leaf)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise VerificationError(f"the entry has the key `{name}` twice")
        result[name] = value
    return result


def _parse_entry(entry: bytes) -> dict[str, Any]:
    try:
        value = json.loads(entry.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as error:
        if isinstance(error, VerificationError):
            raise
        raise VerificationError(f"the entry is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise VerificationError("the entry is not a JSON object")
    try:
        canonical = canonical_json(value)
    except UnicodeEncodeError as error:
        raise VerificationError("the entry holds a lone surrogate") from error
    if canonical != entry:
        raise VerificationError("the entry is not in RFC 8785 canonical form")
    if value.get("v") != 1 or not isinstance(value.get("index"), int) or isinstance(value.get("index"), bool):
        raise VerificationError("the entry is not a version 1 Mandate entry with an integer index")
    return value
