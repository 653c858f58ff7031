//! C2SP signed notes with Ed25519 signatures (c2sp.org/signed-note).
//!
//! ```text
//! <text, ending in a newline>
//!
//! — <key name> <base64(key id || signature)>
//! ```
//!
//! A verifier is configured with keys; a signature from a key it does not know
//! (name and id) is ignored, a signature from a known key must verify or the
//! whole note is refused, and at least one known key must have signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::hash::{Hash, clip};

/// The signature type byte of Ed25519 in signed notes.
pub const ED25519_TYPE: u8 = 0x01;

/// The most signatures one note may carry (the spec asks for at least 16).
pub const NOTE_SIGNATURES_MAX: usize = 64;

/// The largest note accepted, in bytes.
pub const NOTE_BYTES_MAX: usize = 64 * 1024;

/// The longest key name, in bytes.
pub const KEY_NAME_BYTES_MAX: usize = 256;

const SIGNATURE_PREFIX: &str = "\u{2014} ";
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key, a note or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key name that is empty, too long, or holds a space or `+`.
    #[error("invalid key name `{name}`: it must be 1-{KEY_NAME_BYTES_MAX} bytes with no spaces or `+`")]
    InvalidKeyName {
        /// The name, clipped.
        name: String,
    },
    /// A verifier or signer key text that does not parse.
    #[error("malformed {kind} key: {reason}")]
    MalformedKey {
        /// `verifier` or `signer`.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Note text that cannot be signed or verified: not ending in a newline,
    /// holding control characters, too large.
    #[error("malformed note: {reason}")]
    MalformedNote {
        /// What is wrong.
        reason: String,
    },
    /// A signature from a known key did not verify.
    #[error("the signature by `{name}` does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
    },
    /// No known key signed the note.
    #[error("no signature from a known key (known: {known})")]
    NoKnownSignature {
        /// The names of the keys given, comma-separated.
        known: String,
    },
}

/// The C2SP key id: the first four bytes, big-endian, of
/// `SHA-256(name || 0x0A || 0x01 || public key)`.
pub fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut material = Vec::with_capacity(name.len() + 34);
    material.extend_from_slice(name.as_bytes());
    material.push(b'\n');
    material.push(ED25519_TYPE);
    material.extend_from_slice(public_key.as_bytes());
    let [a, b, c, d, ..] = Hash::digest(&material).0;
    u32::from_be_bytes([a, b, c, d])
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.len() > KEY_NAME_BYTES_MAX || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::InvalidKeyName { name: clip(name) });
    }
    Ok(())
}

/// A named Ed25519 public key that checks note signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// A verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<VerifierKey, NoteError> {
        check_key_name(name)?;
        Ok(VerifierKey { name: name.to_owned(), id: key_id(name, &key), key })
    }

    /// Parses `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let malformed = |reason| NoteError::MalformedKey { kind: "verifier", reason };
        let text = text.trim_end_matches(['\n', '\r']);
        // The name has no `+`; base64 may, so split at most twice.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected <name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        let id = parse_key_id(id_hex).ok_or(malformed("the key id is not 8 hex digits"))?;
        let bytes = BASE64.decode(key_b64).map_err(|_| malformed("the key is not base64"))?;
        let Some((&ED25519_TYPE, public)) = bytes.split_first() else {
            return Err(malformed("the key is not an Ed25519 key (type 0x01)"));
        };
        let public: [u8; 32] = public.try_into().map_err(|_| malformed("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| malformed("not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(malformed("a weak (small-order) Ed25519 key"));
        }
        if key_id(name, &key) != id {
            return Err(malformed("the key id does not match the name and key"));
        }
        Ok(VerifierKey { name: name.to_owned(), id, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    fn verifies(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else { return false };
        self.key.verify_strict(text, &Signature::from_bytes(&bytes)).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = vec![ED25519_TYPE];
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(bytes))
    }
}

fn parse_key_id(hex: &str) -> Option<u32> {
    (hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(hex, 16).ok())?
}

/// A named Ed25519 private key that signs notes.
pub struct SignerKey {
    verifier: VerifierKey,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerKey").field("verifier", &self.verifier.to_string()).finish_non_exhaustive()
    }
}

impl SignerKey {
    /// A signer from a 32-byte Ed25519 seed. Randomness is the caller's: this
    /// crate does no I/O.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SignerKey, NoteError> {
        let key = SigningKey::from_bytes(&seed);
        Ok(SignerKey { verifier: VerifierKey::new(name, key.verifying_key())?, key })
    }

    /// Parses the signer key text `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`
    /// (the form Go's `note.GenerateKey` writes).
    pub fn parse(text: &str) -> Result<SignerKey, NoteError> {
        let malformed = |reason| NoteError::MalformedKey { kind: "signer", reason };
        let text = text.trim_end_matches(['\n', '\r']);
        let rest = text.strip_prefix(PRIVATE_KEY_PREFIX).ok_or(malformed("expected PRIVATE+KEY+<name>+<id>+<key>"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected PRIVATE+KEY+<name>+<id>+<key>"));
        };
        let id = parse_key_id(id_hex).ok_or(malformed("the key id is not 8 hex digits"))?;
        let bytes = BASE64.decode(key_b64).map_err(|_| malformed("the key is not base64"))?;
        let Some((&ED25519_TYPE, seed)) = bytes.split_first() else {
            return Err(malformed("the key is not an Ed25519 key (type 0x01)"));
        };
        let seed: [u8; 32] = seed.try_into().map_err(|_| malformed("an Ed25519 seed is 32 bytes"))?;
        let signer = SignerKey::from_seed(name, seed)?;
        if signer.verifier.id != id {
            return Err(malformed("the key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The signer key text. It is a secret: store it owner-readable only.
    pub fn to_private_text(&self) -> String {
        let mut bytes = vec![ED25519_TYPE];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{PRIVATE_KEY_PREFIX}{}+{:08x}+{}", self.verifier.name, self.verifier.id, BASE64.encode(bytes))
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.verifier.name
    }

    /// The signature line for `text`, with its newline.
    fn signature_line(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut bytes = self.verifier.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{SIGNATURE_PREFIX}{} {}\n", self.verifier.name, BASE64.encode(bytes))
    }
}

/// One signature line of a note, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id.
    pub id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

/// A signed note, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    let malformed = |reason: &str| NoteError::MalformedNote { reason: reason.to_owned() };
    if text.len() > NOTE_BYTES_MAX {
        return Err(malformed("larger than 64 KiB"));
    }
    if !text.ends_with('\n') {
        return Err(malformed("the text does not end with a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(malformed("control characters other than newline"));
    }
    Ok(())
}

/// Signs `text` with each signer and returns the signed note.
pub fn sign(text: &str, signers: &[&SignerKey]) -> Result<String, NoteError> {
    check_text(text)?;
    if text.ends_with("\n\n") || text == "\n" {
        return Err(NoteError::MalformedNote { reason: "the text ends with an empty line".into() });
    }
    if signers.len() > NOTE_SIGNATURES_MAX {
        return Err(NoteError::MalformedNote { reason: format!("more than {NOTE_SIGNATURES_MAX} signatures") });
    }
    let mut note = format!("{text}\n");
    for signer in signers {
        note.push_str(&signer.signature_line(text));
    }
    // What is signed here must open again: hold the whole note to the limit.
    if note.len() > NOTE_BYTES_MAX {
        return Err(NoteError::MalformedNote { reason: "the signed note would be larger than 64 KiB".into() });
    }
    Ok(note)
}

impl Note {
    /// Parses a signed note's syntax (signatures are checked by [`Note::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        let malformed = |reason: &str| NoteError::MalformedNote { reason: reason.to_owned() };
        let all = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        check_text(all)?;
        // The text ends at the last blank line; signatures follow.
        let split = all.get(..all.len() - 1).and_then(|head| head.rfind("\n\n")).ok_or(malformed("no signatures"))?;
        let (text, signatures_text) = (all.get(..=split).unwrap_or_default(), all.get(split + 2..).unwrap_or_default());
        let mut signatures = Vec::new();
        for line in signatures_text.split_terminator('\n') {
            if signatures.len() == NOTE_SIGNATURES_MAX {
                return Err(malformed("more than 64 signatures"));
            }
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(malformed("a signature line does not start with an em dash"))?;
            let (name, b64) = rest.split_once(' ').ok_or(malformed("a signature line has no signature"))?;
            check_key_name(name)?;
            let bytes = BASE64.decode(b64).map_err(|_| malformed("a signature is not base64"))?;
            let (id, signature) =
                bytes.split_first_chunk::<4>().ok_or(malformed("a signature is shorter than its key id"))?;
            signatures.push(NoteSignature {
                name: name.to_owned(),
                id: u32::from_be_bytes(*id),
                signature: signature.to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(malformed("no signatures"));
        }
        Ok(Note { text: text.to_owned(), signatures })
    }

    /// Verifies the note against `keys` and returns the keys that signed it.
    /// Signatures by unknown keys are ignored; a failing known key rejects the
    /// note; at least one known key must have signed.
    pub fn verify<'k>(&self, keys: &'k [VerifierKey]) -> Result<Vec<&'k VerifierKey>, NoteError> {
        let mut verified: Vec<&VerifierKey> = Vec::new();
        for signature in &self.signatures {
            let Some(key) = keys.iter().find(|key| key.name == signature.name && key.id == signature.id) else {
                continue;
            };
            if !key.verifies(self.text.as_bytes(), &signature.signature) {
                return Err(NoteError::BadSignature { name: key.name.clone() });
            }
            if !verified.contains(&key) {
                verified.push(key);
            }
        }
        if verified.is_empty() {
            let known = keys.iter().map(|key| key.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(NoteError::NoKnownSignature { known });
        }
        Ok(verified)
    }
}

/// Parses and verifies a signed note in one step.
pub fn open(bytes: &[u8], keys: &[VerifierKey]) -> Result<Note, NoteError> {
    let note = Note::parse(bytes)?;
    note.verify(keys)?;
    Ok(note)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // The test vector of Go's golang.org/x/mod/sumdb/note.
    const GO_SIGNER: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_note_vector_verifies_and_signs_identically() {
        let verifier = VerifierKey::parse(GO_VERIFIER).unwrap();
        assert_eq!(verifier.to_string(), GO_VERIFIER);
        let note = open(GO_NOTE.as_bytes(), std::slice::from_ref(&verifier)).unwrap();
        assert_eq!(note.text, GO_TEXT);
        let signer = SignerKey::parse(GO_SIGNER).unwrap();
        assert_eq!(signer.verifier(), &verifier);
        assert_eq!(signer.to_private_text(), GO_SIGNER);
        // Ed25519 is deterministic: Mandate's signature equals Go's.
        assert_eq!(sign(GO_TEXT, &[&signer]).unwrap(), GO_NOTE);
    }

    fn signer(name: &str, seed: u8) -> SignerKey {
        SignerKey::from_seed(name, [seed; 32]).unwrap()
    }

    #[test]
    fn unknown_keys_are_ignored_and_a_failing_known_key_rejects() {
        let (log, witness, stranger) = (signer("example.com/log", 1), signer("witness", 2), signer("stranger", 3));
        let text = "example.com/log\n7\nAAAA\n";
        let note = sign(text, &[&stranger, &log, &witness]).unwrap();
        let verified = Note::parse(note.as_bytes()).unwrap();
        let keys = [log.verifier().clone(), witness.verifier().clone()];
        assert_eq!(verified.verify(&keys).unwrap().len(), 2);
        // A key sharing the name but not the id is unknown: ignored.
        let impostor = signer("example.com/log", 9);
        assert_eq!(
            verified.verify(std::slice::from_ref(impostor.verifier())),
            Err(NoteError::NoKnownSignature { known: "example.com/log".into() })
        );
        // A known key whose signature fails rejects the whole note.
        let tampered = note.replace("\n7\n", "\n8\n");
        assert_eq!(
            open(tampered.as_bytes(), &keys),
            Err(NoteError::BadSignature { name: "stranger".into() })
                .or(Err(NoteError::BadSignature { name: "example.com/log".into() }))
        );
    }

    #[test]
    fn what_is_signed_opens_again_even_near_the_size_limit() {
        let signer = signer("k", 1);
        let keys = [signer.verifier().clone()];
        for length in [NOTE_BYTES_MAX - 200, NOTE_BYTES_MAX - 100, NOTE_BYTES_MAX - 1] {
            let text = "a".repeat(length) + "\n";
            if let Ok(note) = sign(&text, &[&signer]) {
                assert_eq!(open(note.as_bytes(), &keys).unwrap().text, text);
            }
        }
        assert!(sign(&("a".repeat(NOTE_BYTES_MAX - 10) + "\n"), &[&signer]).is_err());
    }

    #[test]
    fn at_least_sixteen_signatures_are_accepted() {
        let signers: Vec<SignerKey> = (0..20).map(|i| signer(&format!("w{i}"), i)).collect();
        let refs: Vec<&SignerKey> = signers.iter().collect();
        let note = sign("text\n", &refs).unwrap();
        let keys: Vec<VerifierKey> = signers.iter().map(|s| s.verifier().clone()).collect();
        assert_eq!(open(note.as_bytes(), &keys).unwrap().signatures.len(), 20);
    }

    #[test]
    fn malformed_notes_and_keys_are_refused() {
        let key = VerifierKey::parse(GO_VERIFIER).unwrap();
        let keys = [key];
        for bad in [
            "",
            "\n",
            "text\n",
            "text\n\n",
            "text\n\n\u{2014} PeterNeumann\n",
            "text\n\n- PeterNeumann AAAA\n",
            "te\x01xt\n\n\u{2014} a AAAAAA==\n",
            "text\n\n\u{2014} a AA==\n",
        ] {
            assert!(open(bad.as_bytes(), &keys).is_err(), "{bad:?}");
        }
        assert!(open(&GO_NOTE.as_bytes()[..GO_NOTE.len() - 10], &keys).is_err());
        for bad in [
            "",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhpcQ==",
            "PeterNeumann+zzzzzzzz+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(VerifierKey::parse(bad).is_err(), "{bad}");
        }
        assert!(SignerKey::parse("PRIVATE+KEY+x+00000000+AA==").is_err());
    }
}
