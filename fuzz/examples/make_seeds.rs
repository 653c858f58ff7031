//! Writes the seed corpora under `fuzz/seeds/<target>/` from the fixtures in
//! `src/lib.rs`: real canonical entries, signed notes and checkpoints made with
//! the fixture key, receipts and whole logs. Deterministic, so re-running it
//! rewrites the same files.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use mandate_fuzz::api::{AUTHORIZE_SEEDS, BODY_SEEDS, QUERY_SEEDS};
use mandate_fuzz::{LOG_SIZE, RECEIPT_INDEX, log_lines, receipt, signed_checkpoint, signer};
use mandate_log::note::{self, SignerKey};
use mandate_log::{CanonicalBody, Entry, EntryHead};
use mandate_store::packed;

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into()));
    let lines = log_lines(LOG_SIZE);
    let line = |index: usize| lines.get(index).cloned().unwrap_or_default();
    let export = |count: usize| -> Vec<u8> {
        lines.iter().take(count).flat_map(|line| line.iter().copied().chain([b'\n'])).collect()
    };
    let checkpoint = signed_checkpoint(LOG_SIZE);
    let other = SignerKey::from_seed("witness.test", [9; 32])?;
    let cosigned = note::sign(&checkpoint.checkpoint.to_text(), &[&signer(), &other])?;
    // The test vector of Go's golang.org/x/mod/sumdb/note.
    let go_note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    let text = |seeds: &[(&'static str, &str)]| -> Seeds {
        seeds.iter().map(|(name, text)| (*name, text.as_bytes().to_vec())).collect()
    };
    let targets: [(&str, Seeds); 11] = [
        ("entry_parse", vec![("identity", line(0)), ("decision", line(1)), ("deny", line(3))]),
        (
            "entry_fast_path",
            vec![("identity", line(0)), ("integers_only", line(2)), ("with_float", line(1))],
        ),
        (
            "json_strict",
            vec![
                ("entry", line(1)),
                (
                    "rfc8785",
                    br#"{"numbers": [333333333.33333329, 1E3, 4.50, 2e-3, 0.000000000000000000000000001], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#
                        .to_vec(),
                ),
                ("sorting", "{\"\u{20ac}\":1,\"\\r\":2,\"\u{1f600}\":3,\"1\":4,\"\u{80}\":5,\"\u{fb33}\":6}".into()),
                ("nested", br#"[[[{"a":[-0, 1e-7, 9007199254740991, -9007199254740991, "\ud83d\ude00"]}]]]"#.to_vec()),
            ],
        ),
        (
            "note_parse",
            vec![
                ("checkpoint", checkpoint.note.clone().into_bytes()),
                ("cosigned", cosigned.clone().into_bytes()),
                ("go_vector", go_note.into()),
                ("verifier_key", signer().verifier().to_string().into_bytes()),
                ("signer_key", signer().to_private_text().into_bytes()),
                ("go_verifier_key", b"PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".to_vec()),
            ],
        ),
        (
            "checkpoint_parse",
            vec![
                ("signed", checkpoint.note.clone().into_bytes()),
                ("signed_early", signed_checkpoint(7).note.into_bytes()),
                ("cosigned", cosigned.into_bytes()),
                ("text", checkpoint.checkpoint.to_text().into_bytes()),
                ("text_extension", format!("{}extension line\n", checkpoint.checkpoint.to_text()).into_bytes()),
            ],
        ),
        (
            "receipt_parse",
            vec![
                ("valid", receipt(RECEIPT_INDEX, None).to_text().into_bytes()),
                ("valid_extra", receipt(RECEIPT_INDEX, Some(b"ticket 4711".to_vec())).to_text().into_bytes()),
                ("other_index", receipt(12, None).to_text().into_bytes()),
                ("first", receipt(0, Some(Vec::new())).to_text().into_bytes()),
            ],
        ),
        (
            "log_verify",
            vec![
                ("full", export(lines.len())),
                ("to_previous", export(7)),
                ("one", export(1)),
                ("torn", export(3).get(..export(3).len() - 10).unwrap_or_default().to_vec()),
            ],
        ),
        ("api_authorize", text(AUTHORIZE_SEEDS)),
        ("api_bodies", text(BODY_SEEDS)),
        ("api_query", text(QUERY_SEEDS)),
        (
            "stored_entry",
            vec![
                ("plain", line(1)),
                ("packed", packed_row(&line(1))?),
                ("body", serde_json::Value::Object(Entry::parse(&line(1))?.body).to_string().into_bytes()),
            ],
        ),
    ];
    for (target, seeds) in targets {
        write_seeds(&root.join(target), &seeds)?;
    }
    Ok(())
}

/// What a store keeps of the canonical entry `line` (`mandate_store::packed`).
fn packed_row(line: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let entry = Entry::parse(line)?;
    let body = CanonicalBody::new(&entry.body)?;
    let head = EntryHead {
        tenant: &entry.tenant,
        index: entry.index,
        time: &entry.time,
        entry_type: &entry.entry_type,
        prev: entry.prev,
    };
    Ok(packed::stored_form(line.to_vec(), &head, packed::compress_body(body.as_bytes()).as_deref()))
}

fn write_seeds(dir: &Path, seeds: &Seeds) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}
