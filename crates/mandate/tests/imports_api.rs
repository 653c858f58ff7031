//! `POST /v1/imports` (what `mandate import` sends), against the real
//! `mandate serve` over HTTP: one entry per call, a part written whole and
//! once (also after a restart), and refusals that write nothing. The
//! command itself is tested in `import.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};

mod common;
use common::*;

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";

fn call(n: u64) -> Value {
    json!({"call_id": format!("toolu_{n}"), "session_id": "s-1", "tool": "Bash", "action": "tool.Bash",
        "input_digest": format!("sha256:{n:064x}"), "outcome": "success", "output_digest": "sha256:00",
        "started_at": "2026-11-22T01:31:03.239Z"})
}

fn part(identity: Option<&str>, part: u64, calls: Vec<Value>) -> Value {
    let mut body = json!({"source": "claude-code", "transcript_sha256": "ab".repeat(32), "part": part, "calls": calls});
    if let Some(identity) = identity {
        body["identity"] = json!(identity);
    }
    body
}

#[test]
fn a_part_is_written_whole_and_once_even_after_a_restart() {
    let (dir, mut server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    let start = server.log_size();
    let answer = server.post("/v1/imports", part(Some(CODER), 0, (0..3).map(call).collect())).expect(200);
    assert_eq!(answer["calls"], 3);
    assert_eq!(answer["replayed"], false);
    assert_eq!(answer["log_indexes"], json!([start, start + 1, start + 2]));
    for (n, index) in (start..start + 3).enumerate() {
        let entry = server.entry(index);
        assert_eq!(entry["type"], "event.imported");
        let body = &entry["body"];
        assert_eq!(body["identity"], CODER);
        assert_eq!(body["call_id"], format!("toolu_{n}"));
        assert_eq!(
            (body["part"].clone(), body["position"].clone(), body["calls_in_part"].clone()),
            (json!(0), json!(n), json!(3))
        );
        assert_eq!(body["started_at"], "2026-11-22T01:31:03.239Z", "as the transcript wrote it");
        assert_eq!(body["transcript_sha256"], "ab".repeat(32));
    }

    let again = server.post("/v1/imports", part(Some(CODER), 0, (0..3).map(call).collect())).expect(200);
    assert_eq!((again["replayed"].clone(), again["log_indexes"].clone()), (json!(true), answer["log_indexes"].clone()));
    server.stop();
    let server = Server::start(&dir.path().join("data"));
    let again = server.post("/v1/imports", part(Some(CODER), 0, (0..3).map(call).collect())).expect(200);
    assert_eq!((again["replayed"].clone(), again["log_indexes"].clone()), (json!(true), answer["log_indexes"].clone()));
    // Another number of calls for the same part is not the same transcript's part.
    let other = server.post("/v1/imports", part(Some(CODER), 0, (0..2).map(call).collect()));
    assert_eq!(other.problem(409, "conflict")["field"], "calls");
    assert_eq!(server.log_size(), start + 3);
    // The next part is new.
    let next = server.post("/v1/imports", part(Some(CODER), 1, vec![call(3)])).expect(200);
    assert_eq!(next["log_indexes"], json!([start + 3]));
    // Another identity's import of the same file is its own, and shows
    // nothing of the first.
    server.identity("agent:other", "agent", Some(ALICE));
    let other = server.post("/v1/imports", part(Some("agent:other"), 0, (0..3).map(call).collect())).expect(200);
    assert_eq!(other["replayed"], false);
    assert_eq!(other["log_indexes"], json!([start + 5, start + 6, start + 7]));
}

#[test]
fn an_agent_token_imports_as_itself_and_bad_parts_write_nothing() {
    let (_dir, server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    let token = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    let token = token["token"].as_str().unwrap().to_owned();
    let size = server.log_size();
    let mut bad_outcome = call(1);
    bad_outcome["outcome"] = json!("maybe");
    let mut bad_time = call(1);
    bad_time["started_at"] = json!("yesterday");
    let mut big_input = call(1);
    big_input["input"] = json!({"content": "x".repeat(20_000)});
    let cases = [
        (None, part(None, 0, vec![call(1)]), 400, "identity"),
        (None, part(Some("agent:nobody"), 0, vec![call(1)]), 404, "identity"),
        (Some(&token), part(Some(ALICE), 0, vec![call(1)]), 403, "identity"),
        (None, part(Some(CODER), 0, vec![]), 400, "calls"),
        (None, part(Some(CODER), 0, (0..101).map(call).collect()), 400, "calls"),
        (None, part(Some(CODER), 0, vec![call(0), bad_outcome]), 400, "calls[1].outcome"),
        (None, part(Some(CODER), 0, vec![bad_time]), 400, "calls[0].started_at"),
        (None, part(Some(CODER), 0, vec![big_input]), 400, "calls[0].input"),
        (
            None,
            json!({"source": "cursor", "transcript_sha256": "ab".repeat(32), "part": 0, "identity": CODER, "calls": [call(1)]}),
            400,
            "source",
        ),
        (
            None,
            json!({"source": "codex", "transcript_sha256": "AB".repeat(32), "part": 0, "identity": CODER, "calls": [call(1)]}),
            400,
            "transcript_sha256",
        ),
    ];
    for (who, body, status, field) in cases {
        let answer = match who {
            Some(token) => server.post_as(token, "/v1/imports", body),
            None => server.post("/v1/imports", body),
        };
        assert_eq!((answer.status, answer.json()["field"].clone()), (status, json!(field)), "{}", answer.text());
    }
    assert_eq!(server.log_size(), size, "nothing written");
    let answer = server.post_as(&token, "/v1/imports", part(None, 0, vec![call(1)])).expect(200);
    let index = answer["log_indexes"][0].as_u64().unwrap();
    assert_eq!(server.entry(index)["body"]["identity"], CODER);
}
