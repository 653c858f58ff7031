//! Several `mandate serve` processes on one PostgreSQL database, as behind a
//! load balancer: every guarantee holds across them. A budget is never
//! overspent by spends split across servers; a revocation through one server
//! denies the next decision on the other; the log stays one gapless,
//! verifiable chain; `kill -9` of one server loses nothing it answered; and a
//! restart of PostgreSQL itself fails requests cleanly (503) while it is down
//! and leaves the servers working, without a restart, when it is back.
//!
//! The database is the local test one (see `pg_support`), a fresh schema per
//! test; the restart test runs its own PostgreSQL cluster in a temporary
//! directory, so that restarting it disturbs no other test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

#[path = "../../mandate-store/tests/pg_support/mod.rs"]
mod pg_support;

const ALICE: &str = "user:alice";
const AGENT_A: &str = "agent:a";
const AGENT_B: &str = "agent:b";

/// Two servers on one fresh schema; the second uses the first one's key.
fn two_servers(url: &str) -> (Server, Server) {
    let first = Server::start_on_database(url, None, &[]);
    assert!(first.printed_key.is_some(), "the first server creates the default tenant");
    let second = Server::start_on_database(url, Some(&first.key), &[]);
    assert!(second.printed_key.is_none(), "the second server finds the tenant made");
    (first, second)
}

/// `user:alice` → `agent:a`, `agent:b`, each granted payments; budgets of
/// 10,000 cents for alice and 6,000 a day for each agent.
fn family(server: &Server) {
    server.identity(ALICE, "human", None);
    for agent in [AGENT_A, AGENT_B] {
        server.identity(agent, "agent", Some(ALICE));
        server.grant(json!({
            "grantee": agent, "grantor": ALICE, "actions": ["payments.*"], "resources": ["merchant://*"],
        }));
    }
    for (id, identity, period, limit) in
        [("alice-usd", ALICE, "total", 10_000), ("a-usd", AGENT_A, "day", 6_000), ("b-usd", AGENT_B, "day", 6_000)]
    {
        let body = json!({"id": id, "identity": identity, "dimension": "usd_cents", "period": period, "limit": limit});
        server.post("/v1/budgets", body).expect(201);
    }
}

fn pay(identity: &str, cents: u64) -> Value {
    charge(identity, "merchant://shop", cents)
}

/// `spent + reserved` of each budget, as one server reports them.
fn used(server: &Server) -> BTreeMap<String, u64> {
    let list = server.get("/v1/budgets").expect(200);
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_owned(), b["spent"].as_u64().unwrap() + b["reserved"].as_u64().unwrap()))
        .collect()
}

/// Exports the whole log through `server`, checks it is gapless, and runs
/// `mandate verify` on it against the signed checkpoint and public key.
fn export_and_verify(server: &Server, dir: &Path) -> Vec<Value> {
    let note = server.checkpoint();
    let size = checkpoint_size(&note);
    let mut lines = Vec::new();
    let mut start = 0;
    while start < size {
        let end = size.min(start + 1_000);
        lines.extend(server.entries(start, end));
        start = end;
    }
    assert_eq!(lines.len() as u64, size);
    let entries: Vec<Value> = lines.iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry["index"], index as u64, "the log has a gap or a duplicate at {index}");
    }
    let public_key = server.get("/v1/log/public-key").expect_text(200);
    let file = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let log = file("log.jsonl", &(lines.join("\n") + "\n"));
    let checkpoint = file("checkpoint", &note);
    let key = file("log.pub", &public_key);
    let verified = mandate(&["verify", "--log", &log, "--checkpoint", &checkpoint, "--key", &key]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    entries
}

/// Checks that every decision a server answered is in the log at the index
/// it gave, with the id it gave.
fn assert_answers_logged(entries: &[Value], answers: &[Value]) {
    for answer in answers {
        let index = answer["log_index"].as_u64().unwrap_or_else(|| panic!("no log_index: {answer}"));
        let entry = entries.get(index as usize).unwrap_or_else(|| panic!("answered entry {index} is not in the log"));
        assert_eq!(entry["type"], "decision", "{entry}");
        assert_eq!(entry["body"]["decision_id"], answer["decision_id"], "entry {index} is another decision");
        assert_eq!(entry["body"]["decision"], answer["decision"], "{entry}");
    }
}

/// 400 spends of 100 cents race through two servers for alice's 10,000
/// (each agent limited to 6,000): exactly 100 win, and both servers then
/// report the same, full budgets.
#[test]
fn spends_split_across_two_servers_never_overspend() {
    let schema = pg_support::TestSchema::new();
    let (a, b) = two_servers(&schema.url());
    family(&a);
    const THREADS: usize = 40;
    const PER_THREAD: usize = 10;
    let start = Barrier::new(THREADS);
    let answers: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (start, answers) = (&start, &answers);
            // Half the threads on each server; both agents on both servers.
            let server = if thread % 2 == 0 { &a } else { &b };
            let agent = if thread % 4 < 2 { AGENT_A } else { AGENT_B };
            scope.spawn(move || {
                start.wait();
                for _ in 0..PER_THREAD {
                    let answer = server.authorize(pay(agent, 100));
                    answers.lock().unwrap().push(answer);
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    let allowed: Vec<&Value> = answers.iter().filter(|answer| answer["decision"] == "allow").collect();
    assert_eq!(allowed.len(), 100, "exactly the budget's worth of spends is allowed");
    for answer in &answers {
        if answer["decision"] == "deny" {
            assert_eq!(answer["reasons"][0]["code"], "budget_exceeded", "{answer}");
        }
    }
    let ids: BTreeSet<&str> = answers.iter().map(|answer| answer["decision_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), answers.len(), "every decision is its own");
    let expected_used = used(&a);
    assert_eq!(expected_used["alice-usd"], 10_000);
    assert_eq!(expected_used["a-usd"] + expected_used["b-usd"], 10_000);
    assert!(expected_used["a-usd"] <= 6_000 && expected_used["b-usd"] <= 6_000, "{expected_used:?}");
    assert_eq!(used(&b), expected_used, "both servers see the same budgets");
    let dir = tempfile::tempdir().unwrap();
    let entries = export_and_verify(&b, dir.path());
    assert_answers_logged(&entries, &answers);
}

/// A revocation (of an identity, of a token) made through one server counts
/// in the very next decision or request on the other, and what one server
/// created is there on the other at once.
#[test]
fn a_revocation_through_one_server_counts_at_once_on_the_other() {
    let schema = pg_support::TestSchema::new();
    let (a, b) = two_servers(&schema.url());
    family(&a);
    // Made through `a`, used through `b` right away.
    assert_allowed(&b.authorize(pay(AGENT_A, 100)));
    let token = a.post("/v1/tokens", json!({"identity": AGENT_B, "ttl_s": 600})).expect(201);
    let token_text = token["token"].as_str().unwrap().to_owned();
    let by_token = b.post_as(&token_text, "/v1/authorize", pay(AGENT_B, 100)).expect(200);
    assert_allowed(&by_token);

    for round in 0..5 {
        // Revoke through one, decide through the other, alternating.
        let (revoker, decider) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let agent = format!("agent:temp-{round}");
        revoker.identity(&agent, "agent", Some(ALICE));
        revoker.grant(json!({
            "grantee": agent, "grantor": ALICE, "actions": ["payments.*"], "resources": ["merchant://*"],
        }));
        assert_allowed(&decider.authorize(pay(&agent, 1)));
        revoker.post(&format!("/v1/identities/{agent}/revoke"), json!({})).expect(200);
        let denied = decider.authorize(pay(&agent, 1));
        assert_eq!(denied["decision"], "deny", "round {round}: {denied}");
    }

    // A token revoked through `a` stops working on `b` at once.
    let token_id = token["id"].as_str().unwrap();
    a.post("/v1/tokens/revoke", json!({"id": token_id})).expect(200);
    b.post_as(&token_text, "/v1/authorize", pay(AGENT_B, 100)).problem(401, "unauthorized");
    // So does an admin key revoked through `b`, on `a`.
    let second_key = b.post("/v1/admin-keys", json!({"role": "admin"})).expect(201);
    let (second_id, second_text) = (second_key["id"].as_str().unwrap(), second_key["key"].as_str().unwrap());
    a.get_as(second_text, "/v1/budgets").expect(200);
    b.post(&format!("/v1/admin-keys/{second_id}/revoke"), json!({})).expect(200);
    a.get_as(second_text, "/v1/budgets").problem(401, "unauthorized");
    // Also on the hot path, where the sequencer checks the key after catching up.
    a.post_as(second_text, "/v1/authorize", pay(AGENT_A, 1)).problem(401, "unauthorized");
    let third_key = a.post("/v1/admin-keys", json!({"role": "admin"})).expect(201);
    let (third_id, third_text) = (third_key["id"].as_str().unwrap(), third_key["key"].as_str().unwrap());
    assert_allowed(&b.post_as(third_text, "/v1/authorize", pay(AGENT_A, 1)).expect(200));
    a.post(&format!("/v1/admin-keys/{third_id}/revoke"), json!({})).expect(200);
    b.post_as(third_text, "/v1/authorize", pay(AGENT_A, 1)).problem(401, "unauthorized");
    // And a tenant created beside them is served by both.
    let key = a.create_tenant("second");
    assert!(b.get_as(&key, "/v1/log/checkpoint").expect_text(200).starts_with("localhost/second\n"));
}

/// A request retried on the other server gets the first answer; a
/// reservation made through one server is settled through the other; an
/// approval waited for on one server is answered through the other.
#[test]
fn idempotency_settlement_and_approvals_work_across_servers() {
    let schema = pg_support::TestSchema::new();
    let (a, b) = two_servers(&schema.url());
    family(&a);
    let mut order = pay(AGENT_A, 700);
    order["request_id"] = json!("order-1");
    let first = a.authorize(order.clone());
    let reservation = first["reservation"]["id"].as_str().unwrap().to_owned();
    let again = b.authorize(order.clone());
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(again["decision_id"], first["decision_id"], "{again}");
    assert_eq!(used(&a)["alice-usd"], 700, "the retry reserved nothing");

    let settled = b.post(&format!("/v1/reservations/{reservation}/settle"), json!({"amounts": {"usd_cents": 650}}));
    assert_eq!(settled.expect(200)["status"], "settled");
    let budget = a.get("/v1/budgets/alice-usd").expect(200);
    assert_eq!((budget["spent"].as_u64(), budget["reserved"].as_u64()), (Some(650), Some(0)), "{budget}");
    // Settled once: the other server answers a repeat the same, and refuses
    // other amounts.
    let repeat = a.post(&format!("/v1/reservations/{reservation}/settle"), json!({"amounts": {"usd_cents": 650}}));
    assert_eq!(repeat.expect(200)["settled"], json!({"usd_cents": 650}));
    a.post(&format!("/v1/reservations/{reservation}/settle"), json!({"amounts": {"usd_cents": 1}}))
        .problem(409, "conflict");

    b.put_policies(
        r#"
@id("big-needs-a-human")
@approval("required")
permit(principal, action, resource) when { context.amounts.usd_cents >= 1000 };
@id("small-goes")
permit(principal, action, resource) when { context.amounts.usd_cents < 1000 };
"#,
    );
    let big = a.authorize(pay(AGENT_B, 2_000));
    assert_eq!(big["decision"], "pending", "{big}");
    let approval = big["approval"]["id"].as_str().unwrap().to_owned();
    std::thread::scope(|scope| {
        let poll = scope.spawn(|| a.get(&format!("/v1/approvals/{approval}?wait_s=30")).expect(200));
        std::thread::sleep(Duration::from_millis(300));
        let approved = b.post(&format!("/v1/approvals/{approval}/approve"), json!({"approver": ALICE})).expect(200);
        assert_eq!(approved["status"], "approved", "{approved}");
        let started = Instant::now();
        let polled = poll.join().unwrap();
        assert_eq!(polled["status"], "approved", "the long poll on the other server sees it: {polled}");
        assert!(started.elapsed() < Duration::from_secs(10), "and does not wait for its timeout");
    });
}

/// Load on two servers; one is killed with SIGKILL midway. Every decision it
/// answered is in the log, the other server goes on, and the log verifies.
#[test]
fn kill_9_of_one_server_loses_nothing_it_answered() {
    let schema = pg_support::TestSchema::new();
    let (mut a, b) = two_servers(&schema.url());
    family(&a);
    b.patch("/v1/budgets/alice-usd", json!({"limit": 100_000_000})).expect(200);
    for id in ["a-usd", "b-usd"] {
        b.patch(&format!("/v1/budgets/{id}"), json!({"limit": 100_000_000})).expect(200);
    }
    let stop = AtomicBool::new(false);
    let answered: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    let (a_addr, b_addr, key) = (a.addr.clone(), b.addr.clone(), a.key.clone());
    let body = serde_json::to_vec(&pay(AGENT_A, 1)).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let addr = if thread % 2 == 0 { &a_addr } else { &b_addr };
            let (stop, answered, key, body, b_addr) = (&stop, &answered, &key, &body, &b_addr);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // A refused or cut connection is no answer; a 200 is.
                    let Ok(response) = try_http(addr, "POST", "/v1/authorize", Some(key), Some(body)) else {
                        if addr == b_addr {
                            panic!("the surviving server stopped answering");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if response.status == 200 {
                        answered.lock().unwrap().push(response.json());
                    } else {
                        assert_eq!(response.status, 503, "{}", response.text());
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1_500));
        a.kill();
        std::thread::sleep(Duration::from_millis(1_000));
        stop.store(true, Ordering::SeqCst);
    });
    let answered = answered.into_inner().unwrap();
    assert!(answered.len() > 50, "the load ran: {} answers", answered.len());
    // The survivor still decides, on the state with every answer in it.
    assert_allowed(&b.authorize(pay(AGENT_B, 1)));
    let dir = tempfile::tempdir().unwrap();
    let entries = export_and_verify(&b, dir.path());
    assert_answers_logged(&entries, &answered);
    let decided = entries.iter().filter(|entry| entry["type"] == "decision").count();
    assert!(decided > answered.len(), "{decided} decisions logged, {} answered", answered.len());
}

// ------------------------------------------------------- a private cluster

/// A PostgreSQL cluster of its own in a temporary directory, so that a test
/// can stop and start it. PostgreSQL refuses to run as root: as root, its
/// commands run as the `postgres` user.
struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|error| panic!("PostgreSQL is not installed ({error})"))
        .map(|entry| entry.unwrap().path())
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(name)
}

fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut command = if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.args(args).output().unwrap()
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (data, socket) = (dir.path().join("pg"), dir.path().to_owned());
        let chown = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status();
        assert!(chown.is_ok());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let init = as_postgres(&pg_bin("initdb"), &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres"]);
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let cluster = Cluster { _dir: dir, data, socket, port };
        cluster.pg_ctl("start");
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.socket.display());
        let log = self.socket.join("postgres.log");
        let data = self.data.to_str().unwrap();
        let output = match action {
            "start" => as_postgres(
                &pg_bin("pg_ctl"),
                &["-D", data, "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"],
            ),
            other => as_postgres(&pg_bin("pg_ctl"), &["-D", data, "-m", "fast", "-w", other]),
        };
        assert!(output.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"), &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

/// PostgreSQL stops for two seconds while two servers are under load:
/// meanwhile every request fails cleanly (a 503 problem, no hang, no cut
/// connection), afterwards requests succeed again without restarting the
/// servers, nothing answered is lost, and the log verifies.
#[test]
fn a_postgres_restart_mid_load_fails_requests_cleanly_and_recovers() {
    let cluster = Cluster::start();
    let (a, b) = two_servers(&cluster.url());
    family(&a);
    for id in ["alice-usd", "a-usd", "b-usd"] {
        a.patch(&format!("/v1/budgets/{id}"), json!({"limit": 100_000_000})).expect(200);
    }
    let stop = AtomicBool::new(false);
    let down = AtomicBool::new(false);
    let answered: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    let failed_while_down: Mutex<usize> = Mutex::new(0);
    let body = serde_json::to_vec(&pay(AGENT_A, 1)).unwrap();
    let (a_addr, b_addr, key) = (a.addr.clone(), b.addr.clone(), a.key.clone());
    let restarted_at = std::thread::scope(|scope| {
        for thread in 0..6 {
            let addr = if thread % 2 == 0 { &a_addr } else { &b_addr };
            let (stop, down, answered, failed_while_down, key, body) =
                (&stop, &down, &answered, &failed_while_down, &key, &body);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let response = try_http(addr, "POST", "/v1/authorize", Some(key), Some(body))
                        .unwrap_or_else(|error| panic!("a server stopped answering: {error}"));
                    match response.status {
                        200 => answered.lock().unwrap().push(response.json()),
                        503 => {
                            let problem = response.problem(503, "unavailable");
                            assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{problem}");
                            if down.load(Ordering::SeqCst) {
                                *failed_while_down.lock().unwrap() += 1;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => panic!("unexpected status {other}: {}", response.text()),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1_000));
        down.store(true, Ordering::SeqCst);
        cluster.pg_ctl("stop");
        // A load balancer's readiness check says so at once.
        let ready = try_http(&a_addr, "GET", "/readyz", None, None).unwrap();
        ready.problem(503, "unavailable");
        std::thread::sleep(Duration::from_millis(2_000));
        cluster.pg_ctl("start");
        down.store(false, Ordering::SeqCst);
        let restarted_at = answered.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(2_000));
        stop.store(true, Ordering::SeqCst);
        restarted_at
    });
    let answered = answered.into_inner().unwrap();
    assert!(*failed_while_down.lock().unwrap() > 0, "requests failed while PostgreSQL was down");
    assert!(answered.len() > restarted_at, "requests succeed again after the restart, with no server restart");
    // Both servers answer, and agree, after the outage.
    let deadline = Instant::now() + Duration::from_secs(30);
    for server in [&a, &b] {
        loop {
            let response = server.post("/v1/authorize", pay(AGENT_B, 1));
            if response.status == 200 {
                assert_allowed(&response.json());
                break;
            }
            response.problem(503, "unavailable");
            assert!(Instant::now() < deadline, "a server did not recover");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(used(&a), used(&b));
    for server in [&a, &b] {
        server.get("/readyz").expect(200);
    }
    let dir = tempfile::tempdir().unwrap();
    let entries = export_and_verify(&a, dir.path());
    assert_answers_logged(&entries, &answered);
}
