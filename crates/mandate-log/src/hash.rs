//! SHA-256 hashes and the two hash functions of RFC 9162 §2.1.1.
//!
//! The tree never hashes raw data directly: a leaf is hashed with the prefix
//! `0x00` and an interior node with `0x01`, so that no leaf can be passed off as
//! an interior node (the second-preimage defence of RFC 9162 §2.1.1).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

/// The number of bytes in a SHA-256 hash.
pub const HASH_BYTES: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_BYTES]);

/// A hash given as text that is not 32 bytes of lowercase hex or base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {encoding} SHA-256 hash")]
pub struct HashParseError {
    /// The text, cut to 80 characters.
    pub text: String,
    /// `hex` or `base64`.
    pub encoding: &'static str,
}

impl Hash {
    /// The all-zero hash: `prev` of the first entry.
    pub const ZERO: Hash = Hash([0; HASH_BYTES]);

    /// The plain SHA-256 of `data` (no domain prefix).
    pub fn digest(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    /// Lowercase hex, as entries write `prev`.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(HASH_BYTES * 2);
        for byte in self.0 {
            for nibble in [byte >> 4, byte & 0x0f] {
                // A nibble is below 16: the fallback is never taken.
                out.push(char::from(*DIGITS.get(usize::from(nibble)).unwrap_or(&b'0')));
            }
        }
        out
    }

    /// Parses exactly 64 lowercase hex digits: the only spelling a canonical
    /// entry may use, so that one hash has one text.
    pub fn from_hex(text: &str) -> Result<Hash, HashParseError> {
        let bytes: &[u8; HASH_BYTES * 2] =
            text.as_bytes().try_into().map_err(|_| HashParseError { text: clip(text), encoding: "hex" })?;
        let mut out = [0u8; HASH_BYTES];
        let mut valid = true;
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            if let [high, low] = pair {
                let (high, low) = (hex_value(*high), hex_value(*low));
                valid &= high != INVALID_HEX && low != INVALID_HEX;
                *slot = (high << 4) | (low & 0x0f);
            }
        }
        if !valid {
            return Err(HashParseError { text: clip(text), encoding: "hex" });
        }
        Ok(Hash(out))
    }

    /// Standard base64 with padding, as checkpoints and proofs write hashes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Hash, HashParseError> {
        let error = || HashParseError { text: clip(text), encoding: "base64" };
        let bytes = BASE64.decode(text).map_err(|_| error())?;
        let array: [u8; HASH_BYTES] = bytes.try_into().map_err(|_| error())?;
        Ok(Hash(array))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `SHA-256(0x00 || entry)`: the hash of one log entry's canonical bytes
/// (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    Hash(hasher.finalize().into())
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The root of the empty tree: the SHA-256 of nothing (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Hash::digest(&[])
}

/// The marker [`hex_value`] returns for a byte that is not a lowercase hex digit.
const INVALID_HEX: u8 = 0xff;

/// The value of each byte as a lowercase hex digit, or [`INVALID_HEX`].
#[expect(clippy::indexing_slicing, reason = "evaluated at compile time: an out-of-range index fails the build")]
const HEX_VALUES: [u8; 256] = {
    let mut table = [INVALID_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// The value of a lowercase hex digit, or [`INVALID_HEX`]. A table lookup:
/// every entry's `prev` passes through here.
#[expect(clippy::indexing_slicing, reason = "a u8 always indexes a 256-entry table")]
fn hex_value(digit: u8) -> u8 {
    HEX_VALUES[usize::from(digit)]
}

/// User input quoted in an error is cut short so that an error stays one line.
pub(crate) fn clip(text: &str) -> String {
    const CLIP_CHARS_MAX: usize = 80;
    let mut out: String = text.chars().take(CLIP_CHARS_MAX).collect();
    if text.chars().nth(CLIP_CHARS_MAX).is_some() {
        out.push('…');
    }
    out.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_uppercase() {
        let hash = Hash::digest(b"mandate");
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert!(Hash::from_hex(&hash.to_hex().to_uppercase()).is_err());
        assert!(Hash::from_hex("00").is_err());
        assert!(Hash::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn base64_round_trips_and_rejects_wrong_lengths() {
        let hash = Hash::digest(b"mandate");
        assert_eq!(Hash::from_base64(&hash.to_base64()), Ok(hash));
        assert!(Hash::from_base64("AAAA").is_err());
        assert!(Hash::from_base64("not base64!").is_err());
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(empty_root().to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
