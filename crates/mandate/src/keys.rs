//! `mandate key generate` and `mandate grant sign`: grantors' Ed25519 keys,
//! offline.
//!
//! The server verifies grant signatures only against public keys registered
//! with identities, and never holds private keys (SPEC §2). These commands
//! are the other half: a grantor makes a key pair on its own machine,
//! registers the public half as its identity's `public_key`, and signs each
//! grant before sending it.
//!
//! A private key file is one line, `mandate-ed25519-private:<base64 seed>`,
//! readable only by its owner. Grants are read as the server reads them
//! (I-JSON, then `mandate_core::wire::grant_from_json`), so a grant this
//! command signs is one the server accepts in the same form.

use std::fs::File;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use serde_json::Value;

/// What a private key file starts with.
pub const PRIVATE_KEY_PREFIX: &str = "mandate-ed25519-private:";

/// The largest private key file read: the line is 68 bytes; anything much
/// longer is not a key.
const KEY_FILE_BYTES_MAX: u64 = 256;

/// The largest grant document read, matching what a request body may hold.
const GRANT_JSON_BYTES_MAX: u64 = 1 << 20;

/// `mandate key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an Ed25519 key pair for signing grants.
    ///
    /// Writes the private key to FILE, readable only by you (an existing file
    /// is never overwritten), and prints the public key as base64 on stdout:
    /// register it as the grantor identity's `public_key`.
    Generate {
        /// Where to write the private key; must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `mandate grant …`.
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Sign a grant with its grantor's private key.
    ///
    /// Reads the grant as JSON (the body of `POST /v1/grants`, with or
    /// without a `signature`), and prints it with `signature` set: Ed25519
    /// over the RFC 8785 form of the grant without its signature.
    Sign {
        /// The grantor's private key, as `mandate key generate` wrote it.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The grant as a JSON object; `-` or nothing reads stdin.
        #[arg(value_name = "GRANT_JSON_FILE", default_value = "-")]
        grant: PathBuf,
    },
}

/// Runs `mandate key …`.
pub fn run_key(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { out } => {
            let public_key = generate(&out)?;
            println!("{public_key}");
            Ok(())
        }
    }
}

/// Runs `mandate grant …`.
pub fn run_grant(command: GrantCommand) -> Result<()> {
    match command {
        GrantCommand::Sign { key, grant } => {
            let signed = sign(&key, &grant)?;
            println!("{signed}");
            Ok(())
        }
    }
}

/// Writes a fresh private key to `out` (owner-only, never over an existing
/// file) and returns the public key as base64.
fn generate(out: &Path) -> Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| anyhow!("reading the system's random source: {error}"))?;
    let key = SigningKey::from_bytes(&seed);
    let line = format!("{PRIVATE_KEY_PREFIX}{}\n", BASE64.encode(seed));
    write_private(out, line.as_bytes())?;
    Ok(BASE64.encode(key.verifying_key().as_bytes()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{shown} already exists; refusing to overwrite a file with a new key")
        }
        Err(error) => return Err(error).with_context(|| format!("creating {shown}")),
    };
    if let Err(error) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        // A half-written key is worse than none: it would fail later, far
        // from the cause.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(error).with_context(|| format!("writing {shown}"));
    }
    Ok(())
}

/// Reads a private key file, holding it to the exact format.
fn read_private(path: &Path) -> Result<SigningKey> {
    let shown = path.display();
    let bytes = read_bounded(path, KEY_FILE_BYTES_MAX).with_context(|| format!("reading {shown}"))?;
    let malformed =
        || anyhow!("{shown}: not a mandate private key: expected one line `{PRIVATE_KEY_PREFIX}<base64 of 32 bytes>`");
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let encoded = line.strip_prefix(PRIVATE_KEY_PREFIX).ok_or_else(malformed)?;
    // Standard base64 with padding, nothing else: 44 characters.
    let seed: [u8; 32] = BASE64.decode(encoded).ok().and_then(|seed| seed.try_into().ok()).ok_or_else(malformed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Signs the grant in `grant` (a file, or stdin for `-`) with the key in
/// `key`, returning the grant's JSON with `signature` set.
fn sign(key: &Path, grant: &Path) -> Result<String> {
    let key = read_private(key)?;
    let (name, bytes) = if grant == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().take(GRANT_JSON_BYTES_MAX + 1).read_to_end(&mut bytes).context("reading stdin")?;
        ("stdin".to_owned(), bytes)
    } else {
        let name = grant.display().to_string();
        let bytes = read_bounded(grant, GRANT_JSON_BYTES_MAX).with_context(|| format!("reading {name}"))?;
        (name, bytes)
    };
    if bytes.len() as u64 > GRANT_JSON_BYTES_MAX {
        bail!("{name}: larger than {GRANT_JSON_BYTES_MAX} bytes");
    }
    let value = mandate_log::json::parse_strict(&bytes).with_context(|| name.clone())?;
    let Value::Object(mut object) = value else { bail!("{name}: a grant must be a JSON object") };
    let mut parsed = mandate_core::wire::grant_from_json(&object, String::new()).with_context(|| name.clone())?;
    parsed.sign(&key).with_context(|| name.clone())?;
    let signature = parsed.signature.ok_or_else(|| anyhow!("{name}: signing produced no signature"))?;
    // The input's fields stay as written; only the signature is set.
    object.insert("signature".to_owned(), Value::String(BASE64.encode(signature)));
    Ok(serde_json::to_string_pretty(&object)?)
}

/// A file's bytes, refusing at once a file larger than `bytes_max`.
fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(bytes_max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > bytes_max {
        bail!("larger than {bytes_max} bytes");
    }
    Ok(bytes)
}
