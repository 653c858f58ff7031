"""``mandate.verify_receipt`` on real receipts from the server, on published
test vectors, and on receipts with one byte changed."""

from __future__ import annotations

import base64
import hashlib

import pytest

import mandate
from conftest import Shop
from mandate.verify import VerifierKey, canonical_json, leaf_hash, node_hash, open_checkpoint, verify_inclusion

# RFC 6962's test leaves and the root of all eight (SPEC §5).
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
RFC6962_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"

# Go's golang.org/x/mod/sumdb/note test vector.
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return node_hash(_root(leaves[:split]), _root(leaves[split:]))


def _path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH, straight from the definition."""
    if len(leaves) <= 1:
        return []
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    if index < split:
        return [*_path(index, leaves[:split]), _root(leaves[split:])]
    return [*_path(index - split, leaves[split:]), _root(leaves[:split])]


def test_inclusion_against_the_rfc6962_vector() -> None:
    assert _root(RFC6962_LEAVES).hex() == RFC6962_ROOT_8
    root = bytes.fromhex(RFC6962_ROOT_8)
    for size in range(1, 9):
        leaves = RFC6962_LEAVES[:size]
        for index in range(size):
            proof = _path(index, leaves)
            assert verify_inclusion(index, size, leaf_hash(leaves[index]), proof, _root(leaves))
            if size == 8:
                assert verify_inclusion(index, 8, leaf_hash(leaves[index]), proof, root)
                assert not verify_inclusion(index, 8, leaf_hash(b"other"), proof, root)
                assert not verify_inclusion((index + 1) % 8, 8, leaf_hash(leaves[index]), proof, root)


def test_signed_notes_against_the_go_vector() -> None:
    key = VerifierKey.parse(GO_VERIFIER)
    assert key.name == "PeterNeumann" and key.key_id == 0xC74F20A3 and str(key) == GO_VERIFIER
    text = GO_NOTE.split("\n\n")[0] + "\n"
    signature = base64.b64decode(GO_NOTE.rsplit(" ", 1)[1])[4:]
    assert key.verifies(text.encode(), signature)
    assert not key.verifies(text.replace("problem", "problen", 1).encode(), signature)
    with pytest.raises(mandate.VerificationError, match="key id"):
        VerifierKey.parse("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_canonical_json_is_rfc8785_for_entries() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "\u00e9\n\u2028"], "\U0001f600": 0, "\ufb01": 1}) == (
        '{"a":[true,null,"\u00e9\\n\u2028"],"b":1,"\U0001f600":0,"\ufb01":1}'.encode()
    )


def _receipt_for_a_decision(shop: Shop) -> tuple[str, bytes, str, int]:
    decision = shop.agent.authorize("payments.charge", "merchant://books", amounts={"usd_cents": 42})
    receipt = shop.admin.receipt(decision.log_index)
    (entry,) = shop.admin.log_entries(decision.log_index, decision.log_index + 1)
    return receipt, entry, shop.admin.public_key(), decision.log_index


def test_a_real_receipt_verifies(shop: Shop) -> None:
    receipt, entry, key, index = _receipt_for_a_decision(shop)
    verified = mandate.verify_receipt(receipt, entry, key)
    assert verified.index == index
    assert verified.entry["type"] == "decision" and verified.entry["index"] == index
    assert verified.checkpoint.size > index
    assert verified.checkpoint.origin == key.split("+")[0]
    # The checkpoint it proves against is the one the server publishes, or a prefix of it.
    latest = open_checkpoint(shop.admin.checkpoint(), key)
    assert latest.size >= verified.checkpoint.size
    # Every earlier entry has a verifying receipt too (paths of every shape).
    for earlier in range(index):
        (line,) = shop.admin.log_entries(earlier, earlier + 1)
        assert mandate.verify_receipt(shop.admin.receipt(earlier), line, key).index == earlier


def test_one_changed_byte_fails(shop: Shop) -> None:
    receipt, entry, key, index = _receipt_for_a_decision(shop)
    mandate.verify_receipt(receipt, entry, key)

    # Any byte of the entry.
    for position in range(len(entry)):
        changed = bytearray(entry)
        changed[position] ^= 0x01
        with pytest.raises(mandate.VerificationError):
            mandate.verify_receipt(receipt, bytes(changed), key)

    # A proof hash, the root, the tree size, the index, the signature.
    lines = receipt.split("\n")
    proof_line = 2
    root_line = receipt.split("\n\n")[0].count("\n") + 4  # header, index, proof, blank, origin, size
    for line_number in (proof_line, root_line):
        hash_bytes = bytearray(base64.b64decode(lines[line_number]))
        hash_bytes[0] ^= 0x80
        tampered = lines.copy()
        tampered[line_number] = base64.b64encode(bytes(hash_bytes)).decode()
        with pytest.raises(mandate.VerificationError):
            mandate.verify_receipt("\n".join(tampered), entry, key)
    size_line = root_line - 1
    tampered = lines.copy()
    tampered[size_line] = str(int(lines[size_line]) + 1)
    with pytest.raises(mandate.VerificationError, match="signature"):
        mandate.verify_receipt("\n".join(tampered), entry, key)
    signature_line = max(i for i, line in enumerate(lines) if line.startswith("\u2014 "))
    name, signature = lines[signature_line].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 0x01
    tampered = lines.copy()
    tampered[signature_line] = f"{name} {base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(mandate.VerificationError, match="does not verify"):
        mandate.verify_receipt("\n".join(tampered), entry, key)
    with pytest.raises(mandate.VerificationError, match="index"):
        mandate.verify_receipt(receipt.replace(f"index {index}\n", f"index {index - 1}\n", 1), entry, key)


def test_another_key_or_log_is_refused(shop: Shop, server: object) -> None:
    receipt, entry, key, _ = _receipt_for_a_decision(shop)
    with pytest.raises(mandate.VerificationError, match="no signature"):
        mandate.verify_receipt(receipt, entry, GO_VERIFIER)
    other = mandate.Client(shop.url, server.new_tenant())  # type: ignore[attr-defined]
    other_key = other.public_key()
    assert other_key != key
    with pytest.raises(mandate.VerificationError):
        mandate.verify_receipt(receipt, entry, other_key)
