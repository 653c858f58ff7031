//! Budgets, two-phase reservations, approvals and `request_id` idempotency,
//! driven through the real `mandate serve` (see `common/mod.rs`): what a
//! client sees, under concurrency, around expiry, across a restart and
//! across a `kill -9`.
//!
//! Nothing here asserts how fast anything is. Where time matters (a
//! reservation's TTL), the tests wait for an outcome with a generous
//! deadline, and where a race has several legitimate winners, they check
//! that exactly one won and everything agrees with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use jiff::{Timestamp, ToSpan as _, tz::TimeZone};
use serde_json::{Value, json};

mod common;
use common::*;

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "user:alice";
const BOB: &str = "user:bob";
const AGENT_A: &str = "agent:a";
const AGENT_B: &str = "agent:b";
const SUB: &str = "agent:a-sub";

/// `user:alice` → `agent:a` → `agent:a-sub`, and `user:alice` → `agent:b`,
/// each agent granted payments on any merchant; `user:bob` is a human of
/// another family.
fn family(server: &Server) {
    server.identity(ALICE, "human", None);
    server.identity(BOB, "human", None);
    server.identity(AGENT_A, "agent", Some(ALICE));
    server.identity(AGENT_B, "agent", Some(ALICE));
    server.identity(SUB, "agent", Some(AGENT_A));
    for (grantee, grantor) in [(AGENT_A, ALICE), (AGENT_B, ALICE), (SUB, AGENT_A)] {
        server.grant(json!({
            "grantee": grantee, "grantor": grantor, "actions": ["payments.*"], "resources": ["merchant://*"],
        }));
    }
}

/// Sets a budget; asserts 201 and the view of a fresh budget.
fn budget(server: &Server, id: &str, identity: &str, dimension: &str, period: &str, limit: u64) -> Value {
    let body = json!({"id": id, "identity": identity, "dimension": dimension, "period": period, "limit": limit});
    let created = server.post("/v1/budgets", body).expect(201);
    assert_eq!(created["id"], id, "{created}");
    assert_eq!(created["identity"], identity, "{created}");
    assert_eq!(created["dimension"], dimension, "{created}");
    assert_eq!(created["period"], period, "{created}");
    assert_eq!(created["limit"], limit, "{created}");
    assert_eq!(created["spent"], 0, "{created}");
    assert_eq!(created["reserved"], 0, "{created}");
    assert_eq!(created["remaining"], limit, "{created}");
    assert!(created["log_index"].is_u64(), "{created}");
    created
}

/// `GET /v1/budgets/{id}`.
fn budget_now(server: &Server, id: &str) -> Value {
    server.get(&format!("/v1/budgets/{id}")).expect(200)
}

/// A budget's `(spent, reserved)`, checking `remaining` against them.
fn counters(view: &Value) -> (u64, u64) {
    let (limit, spent, reserved) =
        (view["limit"].as_u64().unwrap(), view["spent"].as_u64().unwrap(), view["reserved"].as_u64().unwrap());
    assert_eq!(view["remaining"].as_u64().unwrap(), limit.saturating_sub(spent + reserved), "{view}");
    (spent, reserved)
}

/// Asserts a budget's `spent` and `reserved`.
fn assert_counters(server: &Server, id: &str, spent: u64, reserved: u64) {
    let view = budget_now(server, id);
    assert_eq!(counters(&view), (spent, reserved), "budget `{id}` (spent, reserved): {view}");
}

fn pay(identity: &str, cents: u64) -> Value {
    charge(identity, "merchant://shop", cents)
}

/// `pay` with extra fields.
fn pay_with(identity: &str, cents: u64, extra: Value) -> Value {
    let mut request = pay(identity, cents);
    for (key, value) in extra.as_object().unwrap() {
        request[key] = value.clone();
    }
    request
}

/// Asserts an allow that holds a reservation, and returns its id.
fn reserved(answer: &Value) -> String {
    assert_allowed(answer);
    let reservation = &answer["reservation"];
    assert!(reservation["expires_at"].as_str().is_some_and(|at| at.parse::<Timestamp>().is_ok()), "{answer}");
    reservation["id"].as_str().unwrap_or_else(|| panic!("no reservation: {answer}")).to_owned()
}

fn reservation(server: &Server, id: &str) -> Value {
    server.get(&format!("/v1/reservations/{id}")).expect(200)
}

fn settle(server: &Server, id: &str, amounts: Value) -> Response {
    server.post(&format!("/v1/reservations/{id}/settle"), json!({ "amounts": amounts }))
}

fn void(server: &Server, id: &str) -> Response {
    server.post(&format!("/v1/reservations/{id}/void"), json!({}))
}

/// The ids in the bodies of the log's entries of this type.
fn logged_ids(server: &Server, entry_type: &str) -> Vec<String> {
    server
        .search_all(&format!("type={entry_type}"))
        .iter()
        .map(|entry| {
            assert_eq!(entry["type"], entry_type, "{entry}");
            entry["body"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Polls `probe` until it gives a value, for at most `seconds`.
fn wait_for<T>(seconds: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {seconds} s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn without(value: &Value, key: &str) -> Value {
    let mut value = value.clone();
    value.as_object_mut().unwrap().remove(key);
    value
}

fn timestamp(value: &Value) -> Timestamp {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

// ---------------------------------------------------------------- 1. concurrency

/// 1,000 spends of 100 cents race for a human's 10,000 through two agents
/// limited to 6,000 each: exactly 100 win, every loser is `budget_exceeded`,
/// and no observer ever sees a budget over its limit.
#[test]
fn concurrent_spends_never_overspend_any_budget_on_the_chain() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    budget(&server, "a-usd", AGENT_A, "usd_cents", "day", 6_000);
    budget(&server, "b-usd", AGENT_B, "usd_cents", "day", 6_000);
    let agent_budget = |agent: &str| if agent == AGENT_A { "a-usd" } else { "b-usd" };

    const THREADS: usize = 100;
    const PER_THREAD: usize = 10;
    const MONITORS: usize = 4;
    // The workers, the monitors and this thread start together.
    let start = Barrier::new(THREADS + MONITORS + 1);
    let done = AtomicBool::new(false);
    let answers: Mutex<Vec<(String, Value)>> = Mutex::new(Vec::new());
    let (observations, during_load, midway) = std::thread::scope(|scope| {
        let monitor = || {
            let (mut observations, mut during_load, mut midway) = (0_usize, 0_usize, 0_usize);
            start.wait();
            loop {
                let finished = done.load(Ordering::SeqCst);
                // One read of all budgets: one consistent state.
                let list = server.get("/v1/budgets").expect(200);
                let by_id: BTreeMap<&str, &Value> =
                    list["budgets"].as_array().unwrap().iter().map(|b| (b["id"].as_str().unwrap(), b)).collect();
                let mut used = BTreeMap::new();
                for id in ["alice-usd", "a-usd", "b-usd"] {
                    let view = by_id[id];
                    let (spent, reserved) = counters(view);
                    assert!(spent + reserved <= view["limit"].as_u64().unwrap(), "over the limit: {view}");
                    used.insert(id, spent + reserved);
                }
                // Only the agents spend, so the human's budget holds exactly theirs.
                assert_eq!(used["alice-usd"], used["a-usd"] + used["b-usd"], "{list}");
                observations += 1;
                if used["alice-usd"] > 0 && used["alice-usd"] < 10_000 {
                    midway += 1;
                }
                if finished {
                    return (observations, during_load, midway);
                }
                if !done.load(Ordering::SeqCst) {
                    during_load += 1;
                }
            }
        };
        let monitors: Vec<_> = (0..MONITORS).map(|_| scope.spawn(monitor)).collect();
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (start, answers, server) = (&start, &answers, &server);
                scope.spawn(move || {
                    let agent = if thread % 2 == 0 { AGENT_A } else { AGENT_B };
                    start.wait();
                    for _ in 0..PER_THREAD {
                        let answer = server.authorize(pay(agent, 100));
                        answers.lock().unwrap().push((agent.to_owned(), answer));
                    }
                })
            })
            .collect();
        start.wait();
        // Every worker is joined before the monitor is told to stop, even if
        // one failed, so that a failure is reported rather than a hang.
        let finished: Vec<_> = workers.into_iter().map(|worker| worker.join()).collect();
        done.store(true, Ordering::SeqCst);
        let observed = monitors
            .into_iter()
            .map(|monitor| monitor.join().unwrap())
            .fold((0, 0, 0), |sum, one| (sum.0 + one.0, sum.1 + one.1, sum.2 + one.2));
        for worker in finished {
            worker.unwrap();
        }
        observed
    });

    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), THREADS * PER_THREAD);
    let mut allowed_by_agent: BTreeMap<&str, u64> = BTreeMap::new();
    let mut reservations = BTreeSet::new();
    for (agent, answer) in &answers {
        if answer["decision"] == "allow" {
            assert!(reservations.insert(reserved(answer)), "a reservation id given twice: {answer}");
            let touched: BTreeSet<&str> =
                answer["budgets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
            assert_eq!(touched, BTreeSet::from([agent_budget(agent), "alice-usd"]), "{answer}");
            for touch in answer["budgets"].as_array().unwrap() {
                let (before, after) = (touch["before"].as_u64().unwrap(), touch["after"].as_u64().unwrap());
                assert_eq!(after, before + 100, "{answer}");
                assert!(after <= touch["limit"].as_u64().unwrap(), "{answer}");
            }
            *allowed_by_agent.entry(agent_budget(agent)).or_default() += 1;
        } else {
            // The agent's own budget is checked first; then the human's.
            let blocked = answer["reasons"][0]["identity"].as_str().unwrap_or_default();
            assert!(blocked == agent || blocked == ALICE, "{answer}");
            let reason = assert_denied(answer, "budget_exceeded", Some(blocked));
            let expected_budget = if blocked == ALICE { "alice-usd" } else { agent_budget(agent) };
            assert_eq!(reason["budget"]["id"], expected_budget, "{answer}");
            assert_eq!(reason["budget"]["dimension"], "usd_cents", "{answer}");
            assert!(reason["budget"]["remaining"].as_u64().unwrap() < 100, "{answer}");
            assert_eq!(answer["reservation"], Value::Null, "{answer}");
        }
    }
    let allowed: u64 = allowed_by_agent.values().sum();
    assert_eq!(allowed, 100, "{allowed_by_agent:?}");
    assert!(
        observations > during_load && during_load >= 5,
        "the monitors saw the load only {during_load} times ({observations} in all)"
    );
    eprintln!(
        "monitors: {observations} consistent observations, {during_load} of them during the load, \
         {midway} with the human's budget partly used"
    );

    assert_counters(&server, "alice-usd", 0, 10_000);
    let (a, b) = (counters(&budget_now(&server, "a-usd")), counters(&budget_now(&server, "b-usd")));
    assert_eq!((a.0, b.0), (0, 0));
    assert_eq!(a.1 + b.1, 10_000);
    assert!(a.1 <= 6_000 && b.1 <= 6_000, "{a:?} {b:?}");
    assert_eq!(a.1, 100 * allowed_by_agent.get("a-usd").copied().unwrap_or(0));
    assert_eq!(b.1, 100 * allowed_by_agent.get("b-usd").copied().unwrap_or(0));

    // The log tells the same story.
    assert_eq!(server.search_all("type=decision").len(), THREADS * PER_THREAD);
    assert_eq!(server.search_all("type=decision&decision=allow").len(), 100);
}

// ---------------------------------------------------------------- 2. races at expiry

/// Settle and void fired together right around a reservation's expiry:
/// exactly one of settle, void or expiry wins, the log records exactly that
/// one, the loser is told 409, and the budget ends with nothing reserved.
#[test]
fn settle_void_and_expiry_race_and_exactly_one_wins() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000_000);

    const N: usize = 30;
    let held: Vec<(String, Instant)> = (0..N)
        .map(|_| {
            let answer = server.authorize(pay_with(AGENT_A, 100, json!({"reservation_ttl_s": 1})));
            (reserved(&answer), Instant::now())
        })
        .collect();
    assert_counters(&server, "alice-usd", 0, 100 * N as u64);

    // (settle, void) answers per reservation, both fired at once, from
    // 850 ms to 1,150 ms after the decision was answered.
    let outcomes: Vec<(Response, Response)> = std::thread::scope(|scope| {
        let racers: Vec<_> = held
            .iter()
            .enumerate()
            .map(|(i, (id, answered))| {
                let server = &server;
                scope.spawn(move || {
                    let at = *answered + Duration::from_millis(850 + 50 * (i as u64 % 7));
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let together = Barrier::new(2);
                    std::thread::scope(|pair| {
                        let settled = pair.spawn(|| {
                            together.wait();
                            settle(server, id, json!({"usd_cents": 70}))
                        });
                        let voided = pair.spawn(|| {
                            together.wait();
                            void(server, id)
                        });
                        (settled.join().unwrap(), voided.join().unwrap())
                    })
                })
            })
            .collect();
        racers.into_iter().map(|racer| racer.join().unwrap()).collect()
    });

    let logged: Vec<(&str, Vec<String>)> = ["settled", "voided", "expired"]
        .into_iter()
        .map(|status| (status, logged_ids(&server, &format!("reservation.{status}"))))
        .collect();
    let mut winners: BTreeMap<&str, usize> = BTreeMap::new();
    for ((id, _), (settled, voided)) in held.iter().zip(&outcomes) {
        let status = reservation(&server, id)["status"].as_str().unwrap().to_owned();
        let winner = match (settled.status, voided.status) {
            (200, 409) => {
                let body = settled.json();
                assert_eq!(body["status"], "settled", "{body}");
                assert_eq!(body["settled"], json!({"usd_cents": 70}), "{body}");
                voided.problem(409, "conflict");
                "settled"
            }
            (409, 200) => {
                assert_eq!(voided.json()["status"], "voided", "{}", voided.text());
                settled.problem(409, "conflict");
                "voided"
            }
            (409, 409) => {
                settled.problem(409, "conflict");
                voided.problem(409, "conflict");
                "expired"
            }
            other => {
                panic!("reservation {id}: settle and void answered {other:?}: {} / {}", settled.text(), voided.text())
            }
        };
        assert_eq!(status, winner, "reservation {id}");
        let entries: Vec<&str> = logged
            .iter()
            .flat_map(|(status, ids)| ids.iter().filter(|logged| *logged == id).map(|_| *status))
            .collect();
        assert_eq!(entries, [winner], "reservation {id}: resolution entries in the log");
        *winners.entry(winner).or_default() += 1;
    }
    eprintln!("winners: {winners:?}");
    let settled = winners.get("settled").copied().unwrap_or(0) as u64;
    assert_counters(&server, "alice-usd", 70 * settled, 0);
}

// ---------------------------------------------------------------- 3. expiry

/// A reservation nobody settles expires by itself: the server writes
/// `reservation.expired` and releases what it held, with no request to
/// prompt it.
#[test]
fn a_reservation_nobody_resolves_expires_by_itself() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    let answer = server.authorize(pay_with(AGENT_A, 2_500, json!({"reservation_ttl_s": 1})));
    let id = reserved(&answer);
    let expires_at = timestamp(&answer["reservation"]["expires_at"]);
    let decided = timestamp(&server.entry(answer["log_index"].as_u64().unwrap())["time"]);
    assert_eq!(expires_at.duration_since(decided), jiff::SignedDuration::from_secs(1), "{answer}");
    assert_counters(&server, "alice-usd", 0, 2_500);

    // Only reads from here on: nothing but the server's own timer writes.
    let expired = wait_for(10, "the reservation to expire", || {
        let view = reservation(&server, &id);
        (view["status"] != "held").then_some(view)
    });
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(expired["settled"], Value::Null, "{expired}");
    assert!(timestamp(&expired["resolved_at"]) >= expires_at, "{expired}");
    assert_counters(&server, "alice-usd", 0, 0);

    let entries = server.search_all("type=reservation.expired");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["body"], json!({"id": id}));
    let decision_index = answer["log_index"].as_u64().unwrap();
    assert_eq!(entries[0]["index"], decision_index + 1, "nothing else wrote: the expiry is the next entry");
    assert!(timestamp(&entries[0]["time"]) >= expires_at, "{}", entries[0]);

    for ttl in [0, 86_401] {
        let refused = server.post("/v1/authorize", pay_with(AGENT_A, 1, json!({"reservation_ttl_s": ttl})));
        assert_eq!(refused.problem(400, "invalid_field")["field"], "reservation_ttl_s");
    }

    // Expired is a resolution like any other: the others are refused.
    settle(&server, &id, json!({"usd_cents": 1})).problem(409, "conflict");
    void(&server, &id).problem(409, "conflict");
    assert_eq!(server.search_all("type=reservation.expired").len(), 1);
}

/// Stops `server`, waits until `instant` has passed, and starts a server on
/// the same data.
fn restart_after(mut server: Server, instant: Timestamp) -> Server {
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let data = server.data.clone();
    drop(server);
    while Timestamp::now() <= instant {
        std::thread::sleep(Duration::from_millis(100));
    }
    Server::start(&data)
}

/// A reservation whose time ran out while the server was down expires as
/// soon as it is back, with nobody calling.
#[test]
fn a_reservation_that_ran_out_while_the_server_was_down_expires_after_the_restart() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    let answer = server.authorize(pay_with(AGENT_A, 2_500, json!({"reservation_ttl_s": 1})));
    let id = reserved(&answer);
    let expires_at = timestamp(&answer["reservation"]["expires_at"]);
    let server = restart_after(server, expires_at);
    let expired = wait_for(10, "the reservation to expire", || {
        let view = reservation(&server, &id);
        (view["status"] != "held").then_some(view)
    });
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(logged_ids(&server, "reservation.expired"), [id]);
    assert_counters(&server, "alice-usd", 0, 0);
}

/// More reservations run out together than one append may carry (a server
/// that was down longer than their lives, or a burst of decisions): they
/// expire over several batches, every one of them, and the server goes on
/// deciding. (A batch used to write every expiry due at once: past 1,000
/// entries its commit failed, and so did every later one, on the same
/// expiries, so nothing expired and the tenant decided nothing again.)
#[test]
fn a_burst_of_reservations_running_out_together_all_expire() {
    const RESERVATIONS: usize = 1_500;
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000_000);
    let mut ids = BTreeSet::new();
    while ids.len() < RESERVATIONS {
        let requests: Vec<Value> = (0..30).map(|_| pay_with(AGENT_A, 1, json!({"reservation_ttl_s": 1}))).collect();
        let answer = server.post("/v1/authorize/batch", json!({"requests": requests})).expect(200);
        ids.extend(answer["results"].as_array().unwrap().iter().map(reserved));
    }
    assert_counters(&server, "alice-usd", 0, RESERVATIONS as u64);
    let last_expiry = Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let server = restart_after(server, last_expiry);
    wait_for(30, "every reservation to expire", || {
        (counters(&budget_now(&server, "alice-usd")) == (0, 0)).then_some(())
    });
    let logged = logged_ids(&server, "reservation.expired");
    assert_eq!(logged.len(), RESERVATIONS, "one expiry entry per reservation");
    assert_eq!(logged.into_iter().collect::<BTreeSet<_>>(), ids, "each reservation expired once, on the log");
    reserved(&server.authorize(pay(AGENT_A, 1)));
}

// ---------------------------------------------------------------- 4. settle and void

#[test]
fn settling_spends_what_was_used_and_releases_the_rest() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    budget(&server, "a-usd", AGENT_A, "usd_cents", "day", 5_000);
    let id = reserved(&server.authorize(pay(AGENT_A, 1_000)));
    assert_counters(&server, "alice-usd", 0, 1_000);
    assert_counters(&server, "a-usd", 0, 1_000);
    let held = reservation(&server, &id);
    assert_eq!(held["status"], "held", "{held}");
    assert_eq!(held["amounts"], json!({"usd_cents": 1_000}), "{held}");
    assert_eq!(held["identity"], AGENT_A, "{held}");
    let size = server.log_size();

    // Refused settlements change nothing and name the field.
    let over = settle(&server, &id, json!({"usd_cents": 1_001})).problem(400, "invalid_field");
    assert_eq!(over["field"], "amounts.usd_cents", "{over}");
    let unknown = settle(&server, &id, json!({"tokens": 5})).problem(400, "invalid_field");
    assert_eq!(unknown["field"], "amounts.tokens", "{unknown}");
    let missing = server.post(&format!("/v1/reservations/{id}/settle"), json!({})).problem(400, "invalid_field");
    assert_eq!(missing["field"], "amounts", "{missing}");
    let negative = settle(&server, &id, json!({"usd_cents": -1})).problem(400, "invalid_field");
    assert_eq!(negative["field"], "amounts.usd_cents", "{negative}");
    assert_eq!(server.log_size(), size, "a refused settlement writes nothing");
    assert_eq!(reservation(&server, &id), held);
    assert_counters(&server, "alice-usd", 0, 1_000);

    // Settling below what was reserved spends that and releases the rest.
    let settled = settle(&server, &id, json!({"usd_cents": 600})).expect(200);
    assert_eq!(settled["status"], "settled", "{settled}");
    assert_eq!(settled["settled"], json!({"usd_cents": 600}), "{settled}");
    assert_eq!(settled["log_index"], size, "{settled}");
    assert!(settled["resolved_at"].is_string(), "{settled}");
    assert_counters(&server, "alice-usd", 600, 0);
    assert_counters(&server, "a-usd", 600, 0);
    assert_eq!(without(&reservation(&server, &id), "log_index"), without(&settled, "log_index"));

    // The same settlement again: the same answer, nothing written.
    let again = settle(&server, &id, json!({"usd_cents": 600})).expect(200);
    assert_eq!(without(&again, "log_index"), without(&settled, "log_index"));
    // Another resolution: a conflict.
    settle(&server, &id, json!({"usd_cents": 500})).problem(409, "conflict");
    void(&server, &id).problem(409, "conflict");
    assert_eq!(server.log_size(), size + 1, "only the first settlement is an entry");
    let entries = server.search_all("type=reservation.settled");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["body"], json!({"id": id, "amounts": {"usd_cents": 600}}));
    assert_counters(&server, "alice-usd", 600, 0);

    // Void releases everything; again is the same; settling after is a conflict.
    let second = reserved(&server.authorize(pay(AGENT_A, 800)));
    assert_counters(&server, "a-usd", 600, 800);
    let voided = void(&server, &second).expect(200);
    assert_eq!(voided["status"], "voided", "{voided}");
    assert_eq!(voided["settled"], Value::Null, "{voided}");
    assert_counters(&server, "alice-usd", 600, 0);
    assert_counters(&server, "a-usd", 600, 0);
    assert_eq!(without(&void(&server, &second).expect(200), "log_index"), without(&voided, "log_index"));
    settle(&server, &second, json!({"usd_cents": 1})).problem(409, "conflict");
    assert_eq!(logged_ids(&server, "reservation.voided"), [second.as_str()]);

    // Settling with no amounts spends nothing.
    let third = reserved(&server.authorize(pay(AGENT_A, 300)));
    let nothing = settle(&server, &third, json!({})).expect(200);
    assert_eq!(nothing["status"], "settled", "{nothing}");
    assert_counters(&server, "a-usd", 600, 0);

    // Unknown reservations.
    settle(&server, "no-such-reservation", json!({"usd_cents": 1})).problem(404, "not_found");
    void(&server, "no-such-reservation").problem(404, "not_found");
    server.get("/v1/reservations/no-such-reservation").problem(404, "not_found");
}

/// SPEC §2: "repeating the same resolution returns the same result". The
/// first settlement's answer carries the `log_index` of its entry; a
/// repeated one should answer the very same body.
#[test]
fn a_repeated_resolution_answers_the_identical_body() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    let id = reserved(&server.authorize(pay(AGENT_A, 1_000)));
    let first = settle(&server, &id, json!({"usd_cents": 600})).expect(200);
    let again = settle(&server, &id, json!({"usd_cents": 600})).expect(200);
    assert_eq!(again, first);
    let other = reserved(&server.authorize(pay(AGENT_A, 1_000)));
    let first = void(&server, &other).expect(200);
    let again = void(&server, &other).expect(200);
    assert_eq!(again, first);
    server.put_policies(APPROVAL_POLICIES);
    let (approval, _) = pending(&server.authorize(pay(AGENT_A, 2_000)));
    let path = format!("/v1/approvals/{approval}/approve");
    let first = server.post(&path, json!({"approver": ALICE})).expect(200);
    let again = server.post(&path, json!({"approver": ALICE})).expect(200);
    assert_eq!(again, first);
}

// ---------------------------------------------------------------- 5. idempotency

/// A retried `request_id` gets the first answer, across a restart, never
/// reserves again and never flips; reusing the id for another request is
/// a conflict.
#[test]
fn a_request_id_answers_the_same_across_a_restart_and_never_flips() {
    let (_dir, mut server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000);
    let order = |cents: u64, request_id: &str| pay_with(AGENT_A, cents, json!({"request_id": request_id}));

    let first = server.authorize(order(500, "order-1"));
    reserved(&first);
    assert_eq!(first.get("replayed"), None, "{first}");
    let retry = server.authorize(order(500, "order-1"));
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(without(&retry, "replayed"), first);
    let denied = server.authorize(order(800, "order-2"));
    assert_denied(&denied, "budget_exceeded", Some(ALICE));
    assert_counters(&server, "alice-usd", 0, 500);

    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let data = server.data.clone();
    drop(server);
    let mut server = Server::start(&data);

    // The allowed request, retried after the restart: the same answer,
    // nothing reserved again.
    let size = server.log_size();
    let retry = server.authorize(order(500, "order-1"));
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(retry["decision_id"], first["decision_id"]);
    assert_eq!(retry["log_index"], first["log_index"]);
    assert_eq!(retry["reservation"], first["reservation"]);
    assert_eq!(without(&retry, "replayed"), first);
    // Only the labels differ: still the same request.
    let labelled = server.authorize(pay_with(
        AGENT_A,
        500,
        json!({"request_id": "order-1", "session_id": "run-7", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}),
    ));
    assert_eq!(labelled["replayed"], true, "{labelled}");
    assert_eq!(labelled["decision_id"], first["decision_id"]);
    assert_eq!(server.log_size(), size, "a retry writes nothing");
    assert_counters(&server, "alice-usd", 0, 500);

    // The denied request stays denied, even once there is room.
    let raised = server.patch("/v1/budgets/alice-usd", json!({"limit": 10_000})).expect(200);
    assert_eq!(raised["limit"], 10_000, "{raised}");
    let retry = server.authorize(order(800, "order-2"));
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(retry["decision"], "deny", "a retry never flips an outcome: {retry}");
    assert_eq!(without(&retry, "replayed"), denied);
    let fresh = server.authorize(order(800, "order-3"));
    reserved(&fresh);
    assert_counters(&server, "alice-usd", 0, 1_300);

    // The same id for another request is refused, and changes nothing.
    let size = server.log_size();
    let conflict = server.post("/v1/authorize", order(600, "order-1")).problem(409, "conflict");
    assert_eq!(conflict["field"], "request_id", "{conflict}");
    let elsewhere = pay_with(AGENT_A, 500, json!({"request_id": "order-1", "resource": "merchant://other"}));
    server.post("/v1/authorize", elsewhere).problem(409, "conflict");
    assert_eq!(server.log_size(), size);
    // Request ids belong to the identity asking: another agent's is its own.
    let other = server.authorize(pay_with(AGENT_B, 500, json!({"request_id": "order-1"})));
    reserved(&other);
    assert_eq!(other.get("replayed"), None, "{other}");
    assert_ne!(other["decision_id"], first["decision_id"]);
    assert_counters(&server, "alice-usd", 0, 1_800);

    // One decision entry per request id and identity.
    let decisions = server.search_all("type=decision");
    let with_id = |request_id: &str| {
        decisions.iter().filter(|entry| entry["body"]["request"]["request_id"] == request_id).count()
    };
    assert_eq!((with_id("order-1"), with_id("order-2"), with_id("order-3")), (2, 1, 1));
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// A resolved reservation leaves the server's memory (and its state row);
/// its entries answer for it: the view, a repeated settlement, a conflicting
/// void, across a restart, and never to another identity's token.
#[test]
fn a_resolved_reservation_is_answered_from_its_entries() {
    let (_dir, mut server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    let id = reserved(&server.authorize(pay(AGENT_A, 1_000)));
    let path = format!("/v1/reservations/{id}/settle");
    let settled = server.post(&path, json!({"amounts": {"usd_cents": 400}})).expect(200);
    assert_eq!(settled["status"], "settled", "{settled}");
    let rows: i64 = rusqlite::Connection::open(server.data.join("mandate.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM state WHERE kind = 'reservation'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0, "a resolved reservation keeps no state row");
    let check = |server: &Server| {
        assert_eq!(reservation(server, &id), without(&settled, "log_index"), "told again by its entries");
        let size = server.log_size();
        let again = server.post(&path, json!({"amounts": {"usd_cents": 400}})).expect(200);
        assert_eq!(again, settled, "a repeat answers as the first did, naming its entry");
        let other = server.post(&path, json!({"amounts": {"usd_cents": 300}})).problem(409, "conflict");
        assert!(other["detail"].as_str().unwrap().contains("settled"), "{other}");
        server.post(&format!("/v1/reservations/{id}/void"), json!({})).problem(409, "conflict");
        assert_eq!(server.log_size(), size, "nothing written");
        assert_counters(server, "alice-usd", 400, 0);
    };
    check(&server);
    // Another identity's token gets what it gets for an unknown reservation.
    let token = server.post("/v1/tokens", json!({"identity": AGENT_B, "ttl_s": 600})).expect(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.post_as(&token, &path, json!({"amounts": {"usd_cents": 400}})).problem(404, "not_found");
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let data = server.data.clone();
    drop(server);
    let server = Server::start(&data);
    check(&server);
}

/// A data directory written before decisions were stored with keys (schema
/// version 3): on the first start the server keys the last 24 h of
/// decisions, so their request ids and events still answer.
#[test]
fn request_ids_and_events_of_a_database_from_before_keys_still_answer() {
    let (_dir, mut server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000);
    let first = server.authorize(pay_with(AGENT_A, 500, json!({"request_id": "old-1"})));
    reserved(&first);
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let data = server.data.clone();
    drop(server);
    rusqlite::Connection::open(data.join("mandate.db"))
        .unwrap()
        .execute_batch("DROP TABLE entry_keys; ALTER TABLE logs DROP COLUMN keyed_from; PRAGMA user_version = 3;")
        .unwrap();

    let mut server = Server::start(&data);
    let retry = server.authorize(pay_with(AGENT_A, 500, json!({"request_id": "old-1"})));
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(without(&retry, "replayed"), first);
    server.post("/v1/authorize", pay_with(AGENT_A, 600, json!({"request_id": "old-1"}))).problem(409, "conflict");
    let event = json!({"decision_id": first["decision_id"], "outcome": "success"});
    server.post("/v1/events", event).expect(201);
    assert_counters(&server, "alice-usd", 0, 500);
    let database = rusqlite::Connection::open(data.join("mandate.db")).unwrap();
    let keyed_from: i64 = database.query_row("SELECT keyed_from FROM logs", [], |row| row.get(0)).unwrap();
    assert_eq!(keyed_from, 0, "keyed once");
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Many retries of one request at once: one decision, one reservation, and
/// every caller gets its answer.
#[test]
fn concurrent_retries_of_one_request_id_decide_once() {
    let (_dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 10_000);
    const CALLERS: usize = 40;
    let start = Barrier::new(CALLERS);
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    server.authorize(pay_with(AGENT_A, 700, json!({"request_id": "once"})))
                })
            })
            .collect();
        callers.into_iter().map(|caller| caller.join().unwrap()).collect()
    });
    let firsts: Vec<&Value> = answers.iter().filter(|answer| answer.get("replayed").is_none()).collect();
    assert_eq!(firsts.len(), 1, "{answers:?}");
    let first = firsts[0];
    reserved(first);
    for answer in &answers {
        assert_eq!(without(answer, "replayed"), *first);
    }
    assert_counters(&server, "alice-usd", 0, 700);
    assert_eq!(server.search_all("type=decision").len(), 1);
}

// ---------------------------------------------------------------- 6. approvals

const APPROVAL_POLICIES: &str = r#"
@id("big-needs-a-human")
@approval("required")
permit(principal, action, resource) when { context.amounts.usd_cents >= 1000 };

@id("small-goes")
permit(principal, action, resource) when { context.amounts.usd_cents < 1000 };
"#;

fn approval(server: &Server, id: &str, wait_s: u64) -> Value {
    server.get(&format!("/v1/approvals/{id}?wait_s={wait_s}")).expect(200)
}

/// Asserts a pending answer holding a reservation; returns (approval, reservation).
fn pending(answer: &Value) -> (String, String) {
    assert_eq!(answer["decision"], "pending", "{answer}");
    assert_eq!(answer["policies"]["determining"], json!(["big-needs-a-human"]), "{answer}");
    let approval = answer["approval"]["id"].as_str().unwrap_or_else(|| panic!("no approval: {answer}")).to_owned();
    assert!(answer["approval"]["expires_at"].is_string(), "{answer}");
    let reservation =
        answer["reservation"]["id"].as_str().unwrap_or_else(|| panic!("no reservation: {answer}")).to_owned();
    (approval, reservation)
}

#[test]
fn a_pending_decision_waits_for_a_human_on_its_chain() {
    let (_dir, server) = Server::fresh();
    family(&server);
    server.put_policies(APPROVAL_POLICIES);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 100_000);
    budget(&server, "alice-calls", ALICE, "calls", "total", 1_000);

    // Small amounts go through; big ones wait, holding their amounts.
    let small = server.authorize(pay(SUB, 500));
    reserved(&small);
    assert_eq!(small["policies"]["determining"], json!(["small-goes"]), "{small}");
    let big = server.authorize(pay(SUB, 5_000));
    let (approval_id, reservation_id) = pending(&big);
    assert_counters(&server, "alice-usd", 0, 5_500);
    assert_eq!(reservation(&server, &reservation_id)["status"], "held");
    let listed = server.get("/v1/approvals?status=pending").expect(200);
    let ids: Vec<&str> = listed["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [approval_id.as_str()], "{listed}");
    let waiting = &listed["approvals"][0];
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["decision_id"], big["decision_id"], "{waiting}");
    assert_eq!(waiting["reservation"], reservation_id.as_str(), "{waiting}");
    assert_eq!(waiting["chain"], strings(&[SUB, AGENT_A, ALICE]), "{waiting}");
    assert_eq!(waiting["amounts"], json!({"usd_cents": 5_000}), "{waiting}");
    // Nothing may be spent before a human says so.
    settle(&server, &reservation_id, json!({"usd_cents": 5_000})).problem(409, "conflict");
    // Only a human on the chain may answer.
    for outsider in [BOB, AGENT_A] {
        let refused = server
            .post(&format!("/v1/approvals/{approval_id}/approve"), json!({"approver": outsider}))
            .problem(403, "forbidden");
        assert_eq!(refused["field"], "approver", "{refused}");
    }
    server.post(&format!("/v1/approvals/{approval_id}/deny"), json!({"approver": BOB})).problem(403, "forbidden");
    assert_eq!(approval(&server, &approval_id, 0)["status"], "pending");

    // A long poll in one thread; the human approves in another.
    let polled = std::thread::scope(|scope| {
        let poll = scope.spawn(|| approval(&server, &approval_id, 30));
        std::thread::sleep(Duration::from_millis(300));
        let approved =
            server.post(&format!("/v1/approvals/{approval_id}/approve"), json!({"approver": ALICE})).expect(200);
        assert_eq!(approved["status"], "approved", "{approved}");
        assert_eq!(approved["resolved_by"], ALICE, "{approved}");
        poll.join().unwrap()
    });
    assert_eq!(polled["status"], "approved", "{polled}");
    assert_eq!(polled["resolved_by"], ALICE, "{polled}");
    let entries = server.search_all("type=approval.approved");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["body"], json!({"id": approval_id, "by": ALICE}));
    // Approving again is the same answer; denying now is a conflict.
    let again = server.post(&format!("/v1/approvals/{approval_id}/approve"), json!({"approver": ALICE})).expect(200);
    assert_eq!(again["status"], "approved", "{again}");
    server.post(&format!("/v1/approvals/{approval_id}/deny"), json!({"approver": ALICE})).problem(409, "conflict");
    // Approved: the agent settles.
    let settled = settle(&server, &reservation_id, json!({"usd_cents": 4_800})).expect(200);
    assert_eq!(settled["status"], "settled", "{settled}");
    assert_counters(&server, "alice-usd", 4_800, 500);

    // A second one denied: its reservation is voided, its amounts released.
    let (denied_id, denied_reservation) = pending(&server.authorize(pay(SUB, 3_000)));
    assert_counters(&server, "alice-usd", 4_800, 3_500);
    let denied = server.post(&format!("/v1/approvals/{denied_id}/deny"), json!({"approver": ALICE})).expect(200);
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["resolved_by"], ALICE, "{denied}");
    assert_eq!(reservation(&server, &denied_reservation)["status"], "voided");
    assert_counters(&server, "alice-usd", 4_800, 500);
    settle(&server, &denied_reservation, json!({"usd_cents": 1})).problem(409, "conflict");
    server.post(&format!("/v1/approvals/{denied_id}/approve"), json!({"approver": ALICE})).problem(409, "conflict");
    assert_eq!(logged_ids(&server, "approval.denied"), [denied_id.as_str()]);
    // The denial is the reservation's one resolution.
    assert!(!logged_ids(&server, "reservation.voided").contains(&denied_reservation));
    // An admin key may answer too, recorded as itself.
    let (by_admin, _) = pending(&server.authorize(pay(SUB, 1_000)));
    let answered = server.post(&format!("/v1/approvals/{by_admin}/deny"), json!({})).expect(200);
    assert!(answered["resolved_by"].as_str().is_some_and(|by| by.starts_with("admin_key:")), "{answered}");
    assert_counters(&server, "alice-usd", 4_800, 500);

    // A third one nobody answers: it expires, and its reservation with it.
    let (expiring_id, expiring_reservation) =
        pending(&server.authorize(pay_with(SUB, 2_000, json!({"reservation_ttl_s": 1}))));
    assert_counters(&server, "alice-usd", 4_800, 2_500);
    let expired = wait_for(30, "the approval to expire", || {
        let view = approval(&server, &expiring_id, 5);
        (view["status"] != "pending").then_some(view)
    });
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(logged_ids(&server, "approval.expired"), [expiring_id.as_str()]);
    assert_eq!(reservation(&server, &expiring_reservation)["status"], "expired");
    // The approval's expiry is the reservation's one resolution.
    assert!(!logged_ids(&server, "reservation.expired").contains(&expiring_reservation));
    assert_counters(&server, "alice-usd", 4_800, 500);
    server.post(&format!("/v1/approvals/{expiring_id}/approve"), json!({"approver": ALICE})).problem(409, "conflict");

    // Every allowed or pending decision was a call, whatever came of it.
    assert_counters(&server, "alice-calls", 5, 0);

    let statuses = |status: &str| {
        server.get(&format!("/v1/approvals?status={status}")).expect(200)["approvals"].as_array().unwrap().len()
    };
    assert_eq!([statuses("pending"), statuses("approved"), statuses("denied"), statuses("expired")], [0, 1, 2, 1]);
    server.get("/v1/approvals?status=maybe").problem(400, "invalid_field");
    server.get("/v1/approvals/no-such-approval").problem(404, "not_found");
    server.post("/v1/approvals/no-such-approval/approve", json!({})).problem(404, "not_found");
}

/// An approval that does not exist is a 404 whoever is named as approver,
/// as it is without one.
#[test]
fn answering_an_unknown_approval_is_not_found_with_or_without_an_approver() {
    let (_dir, server) = Server::fresh();
    family(&server);
    for verb in ["approve", "deny"] {
        let path = format!("/v1/approvals/no-such-approval/{verb}");
        server.post(&path, json!({})).problem(404, "not_found");
        server.post(&path, json!({"approver": ALICE})).problem(404, "not_found");
    }
}

/// Approve and deny fired together right around an approval's expiry:
/// exactly one of approve, deny or expiry wins and is logged, and every
/// reservation is released in the end (an approved one by its own expiry,
/// since nobody settles it).
#[test]
fn approve_deny_and_expiry_race_and_exactly_one_wins() {
    let (_dir, server) = Server::fresh();
    family(&server);
    server.put_policies(APPROVAL_POLICIES);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000_000);

    const N: usize = 20;
    let waiting: Vec<(String, String, Instant)> = (0..N)
        .map(|_| {
            let (approval, reservation) =
                pending(&server.authorize(pay_with(AGENT_A, 1_000, json!({"reservation_ttl_s": 1}))));
            (approval, reservation, Instant::now())
        })
        .collect();
    let outcomes: Vec<(Response, Response)> = std::thread::scope(|scope| {
        let racers: Vec<_> = waiting
            .iter()
            .enumerate()
            .map(|(i, (approval, _, answered))| {
                let server = &server;
                scope.spawn(move || {
                    let at = *answered + Duration::from_millis(850 + 50 * (i as u64 % 7));
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let together = Barrier::new(2);
                    let answer = |verb: &str| {
                        together.wait();
                        server.post(&format!("/v1/approvals/{approval}/{verb}"), json!({"approver": ALICE}))
                    };
                    std::thread::scope(|pair| {
                        let approved = pair.spawn(|| answer("approve"));
                        let denied = pair.spawn(|| answer("deny"));
                        (approved.join().unwrap(), denied.join().unwrap())
                    })
                })
            })
            .collect();
        racers.into_iter().map(|racer| racer.join().unwrap()).collect()
    });

    let logged: Vec<(&str, Vec<String>)> = ["approved", "denied", "expired"]
        .into_iter()
        .map(|status| (status, logged_ids(&server, &format!("approval.{status}"))))
        .collect();
    let mut winners: BTreeMap<&str, usize> = BTreeMap::new();
    for ((approval_id, reservation_id, _), (approved, denied)) in waiting.iter().zip(&outcomes) {
        let winner = match (approved.status, denied.status) {
            (200, 409) => "approved",
            (409, 200) => "denied",
            (409, 409) => "expired",
            other => panic!("approval {approval_id}: {other:?}: {} / {}", approved.text(), denied.text()),
        };
        for response in [approved, denied] {
            if response.status == 200 {
                assert_eq!(response.json()["status"], winner, "{}", response.text());
            } else {
                response.problem(409, "conflict");
            }
        }
        assert_eq!(approval(&server, approval_id, 0)["status"], winner);
        let entries: Vec<&str> = logged
            .iter()
            .flat_map(|(status, ids)| ids.iter().filter(|logged| *logged == approval_id).map(|_| *status))
            .collect();
        assert_eq!(entries, [winner], "approval {approval_id}: entries in the log");
        // Its reservation: voided by a denial, expired with the approval, or
        // (approved, never settled) expired by its own time.
        let released = wait_for(10, "the reservation to be released", || {
            let view = reservation(&server, reservation_id);
            (view["status"] != "held").then_some(view)
        });
        let expected = if winner == "denied" { "voided" } else { "expired" };
        assert_eq!(released["status"], expected, "{released}");
        let own_expiry = logged_ids(&server, "reservation.expired").iter().filter(|id| *id == reservation_id).count();
        assert_eq!(own_expiry, usize::from(winner == "approved"), "reservation {reservation_id}");
        *winners.entry(winner).or_default() += 1;
    }
    eprintln!("winners: {winners:?}");
    assert_eq!(logged_ids(&server, "reservation.voided"), Vec::<String>::new());
    assert_counters(&server, "alice-usd", 0, 0);
}

// ---------------------------------------------------------------- 7. hierarchy and periods

/// The window a period's budget is in at `at` (an oracle independent of the
/// server's: calendar arithmetic in UTC, weeks from Monday).
fn window_at(period: &str, at: Timestamp) -> (Option<Timestamp>, Option<Timestamp>) {
    let civil = at.to_zoned(TimeZone::UTC).datetime();
    let date = civil.date();
    let utc = |civil: jiff::civil::DateTime| Some(civil.to_zoned(TimeZone::UTC).unwrap().timestamp());
    let midnight = |date: jiff::civil::Date| utc(date.to_datetime(jiff::civil::Time::midnight()));
    match period {
        "hour" => {
            let start = date.at(civil.hour(), 0, 0, 0);
            (utc(start), utc(start.checked_add(1.hour()).unwrap()))
        }
        "day" => (midnight(date), midnight(date.tomorrow().unwrap())),
        "week" => {
            let monday = date.checked_sub(i64::from(date.weekday().to_monday_zero_offset()).days()).unwrap();
            (midnight(monday), midnight(monday.checked_add(7.days()).unwrap()))
        }
        "month" => (midnight(date.first_of_month()), midnight(date.first_of_month().checked_add(1.month()).unwrap())),
        "year" => (midnight(date.first_of_year()), midnight(date.first_of_year().checked_add(1.year()).unwrap())),
        "total" => (None, None),
        other => panic!("no period {other}"),
    }
}

/// Asserts a budget's window is its period's current one.
fn assert_window(server: &Server, id: &str) {
    let before = Timestamp::now();
    let view = budget_now(server, id);
    let after = Timestamp::now();
    let period = view["period"].as_str().unwrap();
    let window = |key: &str| view["window"][key].as_str().map(|text| text.parse::<Timestamp>().unwrap());
    let shown = (window("start"), window("end"));
    // A window boundary may pass during the request.
    assert!(shown == window_at(period, before) || shown == window_at(period, after), "{view}");
    if period == "day" {
        let today = before.to_zoned(TimeZone::UTC).date();
        let (start, end) = (view["window"]["start"].as_str().unwrap(), view["window"]["end"].as_str().unwrap());
        let tomorrow = today.tomorrow().unwrap();
        assert!(start.starts_with(&format!("{today}T00:00:00")) || after.to_zoned(TimeZone::UTC).date() != today);
        assert!(end.starts_with(&format!("{tomorrow}T00:00:00")) || after.to_zoned(TimeZone::UTC).date() != today);
    }
}

#[test]
fn a_spend_counts_against_every_budget_up_the_chain_in_each_period() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let budgets = [
        ("sub-hour", SUB, "usd_cents", "hour", 2_000),
        ("sub-calls", SUB, "calls", "day", 3),
        ("a-month", AGENT_A, "usd_cents", "month", 5_000),
        ("a-total", AGENT_A, "usd_cents", "total", 100_000),
        ("alice-day", ALICE, "usd_cents", "day", 10_000),
        ("alice-week", ALICE, "usd_cents", "week", 50_000),
        ("alice-year", ALICE, "usd_cents", "year", 1_000_000),
    ];
    for (id, identity, dimension, period, limit) in budgets {
        budget(&server, id, identity, dimension, period, limit);
        assert_window(&server, id);
    }
    let listed = server.get(&format!("/v1/budgets?identity={ALICE}")).expect(200);
    let ids: BTreeSet<&str> = listed["budgets"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["alice-day", "alice-week", "alice-year"]), "{listed}");
    // Budgets that cannot be.
    let nobody = json!({"identity": "user:nobody", "dimension": "usd_cents", "period": "day", "limit": 1});
    assert_eq!(server.post("/v1/budgets", nobody).problem(400, "invalid_field")["field"], "identity");
    let negative = json!({"identity": ALICE, "dimension": "usd_cents", "period": "hour", "limit": -1});
    assert_eq!(server.post("/v1/budgets", negative).problem(400, "invalid_field")["field"], "limit");
    let dimension = json!({"identity": ALICE, "dimension": "US Dollars", "period": "hour", "limit": 1});
    assert_eq!(server.post("/v1/budgets", dimension).problem(400, "invalid_field")["field"], "dimension");
    let same_id =
        json!({"id": "alice-day", "identity": AGENT_B, "dimension": "usd_cents", "period": "day", "limit": 1});
    assert_eq!(server.post("/v1/budgets", same_id).problem(409, "conflict")["field"], "id");
    // One budget per identity, dimension and period.
    let twin = json!({"identity": ALICE, "dimension": "usd_cents", "period": "day", "limit": 1});
    server.post("/v1/budgets", twin).problem(409, "conflict");
    let period = json!({"identity": ALICE, "dimension": "usd_cents", "period": "fortnight", "limit": 1});
    assert_eq!(server.post("/v1/budgets", period).problem(400, "invalid_field")["field"], "period");

    // The sub-agent's spend is held in every budget on its chain, and its
    // call is counted (spent at once).
    let first = server.authorize(pay(SUB, 700));
    let first_reservation = reserved(&first);
    let touches: BTreeMap<&str, (u64, u64)> = first["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), (t["before"].as_u64().unwrap(), t["after"].as_u64().unwrap())))
        .collect();
    let expected: BTreeMap<&str, (u64, u64)> = budgets
        .iter()
        .map(|(id, _, dimension, _, _)| (*id, if *dimension == "calls" { (0, 1) } else { (0, 700) }))
        .collect();
    assert_eq!(touches, expected, "{first}");
    for (id, _, dimension, _, _) in budgets {
        if dimension == "calls" {
            assert_counters(&server, id, 1, 0);
        } else {
            assert_counters(&server, id, 0, 700);
        }
    }

    // The parent's spend counts against its own budgets and its human's,
    // not its child's.
    let parents = reserved(&server.authorize(pay(AGENT_A, 300)));
    assert_counters(&server, "sub-hour", 0, 700);
    assert_counters(&server, "sub-calls", 1, 0);
    assert_counters(&server, "a-month", 0, 1_000);
    assert_counters(&server, "alice-day", 0, 1_000);

    // Settling moves the actual amount to spent everywhere at once.
    settle(&server, &first_reservation, json!({"usd_cents": 650})).expect(200);
    assert_counters(&server, "sub-hour", 650, 0);
    for id in ["a-month", "a-total", "alice-day", "alice-week", "alice-year"] {
        assert_counters(&server, id, 650, 300);
    }
    void(&server, &parents).expect(200);
    assert_counters(&server, "alice-day", 650, 0);

    // `calls` counts every allowed decision, with or without amounts; a
    // call without amounts holds nothing.
    let second = server.authorize(json!({"identity": SUB, "action": "payments.refund", "resource": "merchant://shop"}));
    assert_allowed(&second);
    assert_eq!(second["reservation"], Value::Null, "{second}");
    let touched: Vec<&str> = second["budgets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(touched, ["sub-calls"], "{second}");
    reserved(&server.authorize(pay(SUB, 100)));
    assert_counters(&server, "sub-calls", 3, 0);
    // The fourth call is over the limit.
    let fourth = server.authorize(pay(SUB, 100));
    let reason = assert_denied(&fourth, "budget_exceeded", Some(SUB));
    assert_eq!(
        reason["budget"],
        json!({"id": "sub-calls", "dimension": "calls", "limit": 3, "period": "day", "remaining": 0}),
        "{fourth}"
    );
    assert_eq!(fourth["budgets"], json!([]), "{fourth}");
    // A denied decision takes nothing, not even a call.
    assert_counters(&server, "sub-calls", 3, 0);
    assert_counters(&server, "sub-hour", 650, 100);
    // The parent is not limited by its child's budget.
    reserved(&server.authorize(pay(AGENT_A, 10)));

    // A sibling's spend meets the human's budget: denied, naming the human.
    let (spent, reserved_now) = counters(&budget_now(&server, "alice-day"));
    let room = 10_000 - spent - reserved_now;
    let sibling = server.authorize(pay(AGENT_B, room + 1));
    let reason = assert_denied(&sibling, "budget_exceeded", Some(ALICE));
    assert_eq!(
        reason["budget"],
        json!({"id": "alice-day", "dimension": "usd_cents", "limit": 10_000, "period": "day", "remaining": room}),
        "{sibling}"
    );
    reserved(&server.authorize(pay(AGENT_B, room)));
    assert_counters(&server, "alice-day", spent, reserved_now + room);
    assert_eq!(budget_now(&server, "alice-day")["remaining"], 0);

    // Raising the limit makes room at once.
    let raised = server.patch("/v1/budgets/sub-calls", json!({"limit": 4})).expect(200);
    assert_eq!((raised["limit"].as_u64(), raised["remaining"].as_u64()), (Some(4), Some(1)), "{raised}");
    let fifth = server.authorize(json!({"identity": SUB, "action": "payments.refund", "resource": "merchant://shop"}));
    assert_allowed(&fifth);
    // Lowering a limit below what is used leaves no room, and refuses nothing already held.
    let lowered = server.patch("/v1/budgets/a-month", json!({"limit": 100})).expect(200);
    assert_eq!((lowered["limit"].as_u64(), lowered["remaining"].as_u64()), (Some(100), Some(0)), "{lowered}");
    let reason = assert_denied(&server.authorize(pay(AGENT_A, 1)), "budget_exceeded", Some(AGENT_A)).clone();
    assert_eq!(reason["budget"]["id"], "a-month", "{reason}");
    for (id, ..) in budgets {
        assert_window(&server, id);
    }
    assert_eq!(server.search_all("type=budget.created").len(), budgets.len());
    assert_eq!(logged_ids(&server, "budget.updated"), ["sub-calls", "a-month"]);
    server.get("/v1/budgets/no-such-budget").problem(404, "not_found");
    server.patch("/v1/budgets/no-such-budget", json!({"limit": 1})).problem(404, "not_found");
}

// ---------------------------------------------------------------- 8. kill -9

/// What a client was told before the server was killed.
#[derive(Debug, Default)]
struct Told {
    /// Every decision answered: (decision_id, log_index, answer).
    decisions: Vec<Value>,
    /// Reservations whose settlement was answered 200, with the amount.
    settled: BTreeMap<String, u64>,
}

/// Runs concurrent spends (some settled) against `server`, SIGKILLs it once
/// at least 200 decisions were answered, and returns what clients were told.
fn kill_under_load(server: &mut Server) -> Told {
    const WORKERS: usize = 16;
    let told = Mutex::new(Told::default());
    let answered = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let addr = server.addr.clone();
    let key = server.key.clone();
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (told, answered, stop, addr, key) = (&told, &answered, &stop, &addr, &key);
            scope.spawn(move || {
                let agent = if worker % 2 == 0 { AGENT_A } else { AGENT_B };
                let mut n = 0_u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let cents = 10 + n % 7;
                    let request = pay_with(agent, cents, json!({"reservation_ttl_s": 3_600}));
                    let body = serde_json::to_vec(&request).unwrap();
                    let Ok(response) = try_http(addr, "POST", "/v1/authorize", Some(key), Some(&body)) else {
                        return;
                    };
                    // Whatever arrived whole was answered, and must be kept.
                    let answer = response.expect(200);
                    answered.fetch_add(1, Ordering::SeqCst);
                    let reservation = answer["reservation"]["id"].as_str().map(str::to_owned);
                    told.lock().unwrap().decisions.push(answer);
                    if let Some(id) = reservation
                        && n.is_multiple_of(3)
                    {
                        let body = serde_json::to_vec(&json!({"amounts": {"usd_cents": cents - 1}})).unwrap();
                        let path = format!("/v1/reservations/{id}/settle");
                        let Ok(response) = try_http(addr, "POST", &path, Some(key), Some(&body)) else { return };
                        assert_eq!(response.status, 200, "{}", response.text());
                        told.lock().unwrap().settled.insert(id, cents - 1);
                    }
                }
            });
        }
        // Not `wait_for`: a panic here would leave the workers running.
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.load(Ordering::SeqCst) < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);
    });
    let told = told.into_inner().unwrap();
    assert!(told.decisions.len() >= 200, "only {} decisions answered before the deadline", told.decisions.len());
    assert!(!told.settled.is_empty(), "no settlement was answered");
    eprintln!("answered before kill -9: {} decisions, {} settlements", told.decisions.len(), told.settled.len());
    told
}

/// `user:alice` with a large budget, her agents spending under it.
fn crash_fixture() -> (tempfile::TempDir, Server) {
    let (dir, server) = Server::fresh();
    family(&server);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 1_000_000_000);
    budget(&server, "a-usd", AGENT_A, "usd_cents", "total", 1_000_000_000);
    (dir, server)
}

/// Held and spent amounts by budget, folded from the exported log alone.
fn counters_from_log(server: &Server) -> BTreeMap<&'static str, (u64, u64)> {
    let size = server.log_size();
    let mut held: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut spent: BTreeMap<&'static str, u64> = BTreeMap::new();
    let budgets_of = |identity: &str| -> Vec<&'static str> {
        if identity == AGENT_A { vec!["alice-usd", "a-usd"] } else { vec!["alice-usd"] }
    };
    for line in server.entries(0, size) {
        let entry: Value = serde_json::from_str(&line).unwrap();
        let body = &entry["body"];
        match entry["type"].as_str().unwrap() {
            "decision" if body["reservation"].is_object() => {
                let id = body["reservation"]["id"].as_str().unwrap().to_owned();
                let identity = body["request"]["identity"].as_str().unwrap().to_owned();
                let amount = body["request"]["amounts"]["usd_cents"].as_u64().unwrap();
                assert!(held.insert(id, (identity, amount)).is_none(), "a reservation made twice: {entry}");
            }
            "reservation.settled" => {
                let (identity, amount) = held.remove(body["id"].as_str().unwrap()).expect("settled while held");
                let actual = body["amounts"]["usd_cents"].as_u64().unwrap_or(0);
                assert!(actual <= amount, "{entry}");
                for budget in budgets_of(&identity) {
                    *spent.entry(budget).or_default() += actual;
                }
            }
            "reservation.voided" | "reservation.expired" => {
                held.remove(body["id"].as_str().unwrap()).expect("released while held");
            }
            _ => {}
        }
    }
    let mut counters: BTreeMap<&'static str, (u64, u64)> =
        ["alice-usd", "a-usd"].into_iter().map(|id| (id, (spent.get(id).copied().unwrap_or(0), 0))).collect();
    for (identity, amount) in held.values() {
        for budget in budgets_of(identity) {
            counters.get_mut(budget).unwrap().1 += amount;
        }
    }
    counters
}

/// SPEC §6.1: an answered decision is durable, its reservation with it,
/// whatever `kill -9` interrupts; and the budgets after a restart are
/// exactly what the log says, nothing counted twice.
#[test]
fn answered_decisions_and_reservations_survive_kill_9() {
    let (_dir, mut server) = crash_fixture();
    let told = kill_under_load(&mut server);
    let data = server.data.clone();
    drop(server);
    let mut server = Server::start(&data);

    let size = server.log_size();
    let logged = server.search_all("type=decision").len();
    assert!(logged >= told.decisions.len(), "{logged} decisions in the log, {} answered", told.decisions.len());
    eprintln!("after the restart: {logged} decisions in the log (some committed but never answered)");
    let mut reservations = 0;
    for answer in &told.decisions {
        let index = answer["log_index"].as_u64().unwrap();
        assert!(index < size, "answered entry {index} is gone (log size {size})");
        let entry = server.entry(index);
        assert_eq!(entry["type"], "decision", "{entry}");
        assert_eq!(entry["body"]["decision_id"], answer["decision_id"], "{entry}");
        assert_eq!(entry["body"]["decision"], answer["decision"], "{entry}");
        if let Some(id) = answer["reservation"]["id"].as_str() {
            reservations += 1;
            let view = reservation(&server, id);
            assert_eq!(view["decision_id"], answer["decision_id"], "{view}");
            match told.settled.get(id) {
                Some(amount) => {
                    assert_eq!(view["status"], "settled", "{view}");
                    assert_eq!(view["settled"], json!({"usd_cents": amount}), "{view}");
                }
                None => assert!(view["status"] == "held" || view["status"] == "settled", "{view}"),
            }
        }
    }
    assert!(reservations > 0);
    assert!(server.search_all("type=reservation.settled").len() >= told.settled.len());

    let folded = counters_from_log(&server);
    for (id, counters_in_log) in &folded {
        assert_eq!(counters(&budget_now(&server, id)), *counters_in_log, "budget `{id}` against the log");
    }
    // And the server goes on from there.
    reserved(&server.authorize(pay(AGENT_A, 5)));
    let (spent, reserved_then) = folded["a-usd"];
    assert_counters(&server, "a-usd", spent, reserved_then + 5);
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Runs `mandate replay` on `data`; asserts exit 0 with no difference, over
/// a log that holds the fixture's two budgets and some reservations.
fn assert_replay_agrees(data: &Path, when: &str) -> String {
    let output = mandate(&["replay", "--data", path_str(data)]);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "replay {when}: {:?}\n{stdout}\n{stderr}", output.status);
    eprintln!("replay {when}: {stdout}");
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("tenant `default`: folded "))
        .unwrap_or_else(|| panic!("replay {when}: no summary for `default`: {stdout}"));
    assert!(summary.contains(": 2 budgets, ") && summary.ends_with("; no difference"), "{summary}");
    assert!(!summary.contains(" 0 reservations"), "{summary}");
    summary.to_owned()
}

/// `mandate replay` folds the log again and finds the state rows the server
/// wrote beside it identical: right after a `kill -9`, while the restarted
/// server runs, and after it stops.
#[test]
fn replay_agrees_with_the_stored_state_after_kill_9() {
    let (_dir, mut server) = crash_fixture();
    kill_under_load(&mut server);
    let data = server.data.clone();
    drop(server);
    let _ = assert_replay_agrees(&data, "after kill -9");

    let mut server = Server::start(&data);
    let id = reserved(&server.authorize(pay(AGENT_A, 5)));
    settle(&server, &id, json!({"usd_cents": 3})).expect(200);
    void(&server, &reserved(&server.authorize(pay(AGENT_B, 7)))).expect(200);
    // Approvals of every fate are state too.
    server.put_policies(APPROVAL_POLICIES);
    let (approved, approved_reservation) = pending(&server.authorize(pay(AGENT_A, 1_000)));
    server.post(&format!("/v1/approvals/{approved}/approve"), json!({"approver": ALICE})).expect(200);
    settle(&server, &approved_reservation, json!({"usd_cents": 900})).expect(200);
    let (denied, _) = pending(&server.authorize(pay(AGENT_B, 2_000)));
    server.post(&format!("/v1/approvals/{denied}/deny"), json!({})).expect(200);
    let (expiring, _) = pending(&server.authorize(pay_with(AGENT_A, 3_000, json!({"reservation_ttl_s": 1}))));
    pending(&server.authorize(pay(AGENT_B, 4_000)));
    wait_for(10, "the approval to expire", || (approval(&server, &expiring, 5)["status"] == "expired").then_some(()));
    let _ = assert_replay_agrees(&data, "beside the running server");
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let summary = assert_replay_agrees(&data, "after a restart and a stop");
    assert!(summary.contains(", 4 approvals; "), "{summary}");
}

#[test]
fn a_revoked_chain_cannot_be_approved_but_can_still_be_denied() {
    let (_dir, server) = Server::fresh();
    family(&server);
    server.put_policies(APPROVAL_POLICIES);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 100_000);
    let (first, _) = pending(&server.authorize(pay(SUB, 5_000)));
    let (second, second_reservation) = pending(&server.authorize(pay(SUB, 5_000)));

    // The sub-agent's parent is revoked while both wait.
    server.post(&format!("/v1/identities/{AGENT_A}/revoke"), json!({})).expect(200);
    let size = server.log_size();
    for body in [json!({"approver": ALICE}), json!({})] {
        let refused = server.post(&format!("/v1/approvals/{first}/approve"), body).problem(409, "conflict");
        assert!(refused["detail"].as_str().unwrap().contains(AGENT_A), "{refused}");
    }
    assert_eq!(server.log_size(), size, "a refused approval wrote nothing");
    assert_eq!(approval(&server, &first, 0)["status"], "pending");

    // Denying still works, and releases what it held.
    let denied = server.post(&format!("/v1/approvals/{second}/deny"), json!({"approver": ALICE})).expect(200);
    assert_eq!(denied["status"], "denied");
    assert_eq!(server.get(&format!("/v1/reservations/{second_reservation}")).expect(200)["status"], "voided");

    // A revoked human speaks for nobody.
    server.post(&format!("/v1/identities/{ALICE}/revoke"), json!({})).expect(200);
    let refused =
        server.post(&format!("/v1/approvals/{first}/deny"), json!({"approver": ALICE})).problem(403, "forbidden");
    assert_eq!(refused["field"], "approver", "{refused}");
}

/// A caller that gives up waiting voids its reservation: the approval can
/// then no longer be given (nothing is left to approve), and a denial still
/// closes it.
#[test]
fn an_approval_whose_reservation_was_voided_cannot_be_given() {
    let (_dir, server) = Server::fresh();
    family(&server);
    server.put_policies(APPROVAL_POLICIES);
    budget(&server, "alice-usd", ALICE, "usd_cents", "total", 100_000);
    let (approval_id, reservation_id) = pending(&server.authorize(pay(SUB, 5_000)));
    server.post(&format!("/v1/reservations/{reservation_id}/void"), json!({})).expect(200);
    let refused = server
        .post(&format!("/v1/approvals/{approval_id}/approve"), json!({"approver": ALICE}))
        .problem(409, "conflict");
    assert!(refused["detail"].as_str().unwrap().contains("voided"), "{refused}");
    assert_eq!(approval(&server, &approval_id, 0)["status"], "pending");
    let denied = server.post(&format!("/v1/approvals/{approval_id}/deny"), json!({"approver": ALICE})).expect(200);
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_counters(&server, "alice-usd", 0, 0);
    // The log still folds: a restart reads every entry back.
    let mut server = server;
    server.stop();
    let server = Server::start(&server.data.clone());
    assert_eq!(approval(&server, &approval_id, 0)["status"], "denied");
}
