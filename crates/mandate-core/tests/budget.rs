//! Budgets and reservations (SPEC §2 Budget, Reservation; §3 steps 4–5), on
//! an injected clock: every timestamp is passed in.
//!
//! - every period's calendar window in UTC, and its boundaries to the
//!   nanosecond;
//! - rollover: a new window sees the full limit less what is still held;
//!   a late settlement is spent in its own (past) window; `total` never rolls;
//! - the hierarchy: every budget on the chain is touched, the first without
//!   room is named, and taking is all or nothing;
//! - `calls`, overflow, every resolution and its repetition, expiry and
//!   forgetting;
//! - a property over random budgets on a 3-level chain and random sequences
//!   of reservations, resolutions and time, checked after every step against
//!   an oracle written here (its windows are keyed by calendar fields and ISO
//!   weeks, never by `Period::window`);
//! - two agents racing for one human's budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use mandate_core::budget::{
    Budget, BudgetError, Budgets, CALLS, NewReservation, Period, RESERVATION_TTL_DEFAULT, RESOLVED_RETENTION,
    Resolution, Resolve, ResolveError, Shortfall, Status, Touch, Window, midnight,
};
use mandate_core::decision::{BudgetCheck, ReasonCode};
use mandate_core::identity::IdentityId;
use proptest::prelude::*;

fn id(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

const NS: SignedDuration = SignedDuration::from_nanos(1);
const RESERVATION_TTL: SignedDuration = RESERVATION_TTL_DEFAULT;

fn amounts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(dimension, amount)| ((*dimension).to_owned(), *amount)).collect()
}

fn budget(budget_id: &str, identity: &str, dimension: &str, period: Period, limit: u64, now: Timestamp) -> Budget {
    Budget::new(budget_id.to_owned(), id(identity), dimension.to_owned(), period, limit, now)
}

fn chain(ids: &[&str]) -> Vec<IdentityId> {
    ids.iter().map(|text| id(text)).collect()
}

/// Plan and take as the server does: a reservation `reservation` (expiring
/// after `ttl`) when the request carries amounts.
fn reserve(
    budgets: &mut Budgets,
    chain: &[IdentityId],
    asked: &BTreeMap<String, u64>,
    reservation: &str,
    ttl: SignedDuration,
    now: Timestamp,
) -> Result<Vec<Touch>, Shortfall> {
    let touches = budgets.plan(chain, asked, now)?;
    let new = (!asked.is_empty()).then(|| NewReservation {
        id: reservation.to_owned(),
        decision_id: format!("d-{reservation}"),
        identity: chain[0].clone(),
        amounts: asked.clone(),
        expires_at: now + ttl,
    });
    budgets.take(&touches, new, now)?;
    Ok(touches)
}

/// `(spent, reserved)` of a budget as it stands at `now`.
fn counters(budgets: &Budgets, budget_id: &str, now: Timestamp) -> (u64, u64) {
    let budget = budgets.get(budget_id).unwrap().at(now);
    (budget.spent, budget.reserved)
}

/// Every budget and reservation, to show that something changed nothing.
fn snapshot(budgets: &Budgets) -> (Vec<Budget>, Vec<mandate_core::budget::Reservation>) {
    (budgets.iter().cloned().collect(), budgets.reservations().collect())
}

// ---------------------------------------------------------------------------
// Periods and windows.

fn window(start: &str, end: &str) -> Window {
    Window { start: Some(at(start)), end: Some(at(end)) }
}

/// `period`'s window holding `inside` is `[start, end)`; `start` itself is in
/// it, and one nanosecond before `start` is in the window before, which ends
/// exactly at `start`.
fn assert_window(period: Period, inside: &str, start: &str, end: &str) {
    let expected = window(start, end);
    assert_eq!(period.window(at(inside)), expected, "{period} at {inside}");
    assert_eq!(period.window(at(start)), expected, "{period} at its start {start}");
    assert_eq!(period.window(at(end) - NS), expected, "{period} one ns before its end {end}");
    assert_eq!(period.window(at(end)).start, Some(at(end)), "{period}: {end} starts the next window");
    let before = period.window(at(start) - NS);
    assert_eq!(before.end, Some(at(start)), "{period}: the window before {start} ends at it");
    assert_ne!(before, expected);
    assert!(!expected.ended_by(at(end) - NS));
    assert!(expected.ended_by(at(end)));
    assert!(expected.ended_by(at(end) + NS));
}

#[test]
fn periods_parse_and_print_their_wire_names() {
    for period in Period::ALL {
        assert_eq!(Period::parse(period.as_str()), Some(period));
        assert_eq!(period.to_string(), period.as_str());
    }
    assert_eq!(Period::parse("Hour"), None);
    assert_eq!(Period::parse("weekly"), None);
    assert_eq!(Period::parse(""), None);
}

#[test]
fn an_hour_is_from_the_top_of_the_hour() {
    assert_window(Period::Hour, "2026-03-10T14:37:12.5Z", "2026-03-10T14:00:00Z", "2026-03-10T15:00:00Z");
    // The last hour of a year ends at the next year.
    assert_window(Period::Hour, "2026-12-31T23:59:59Z", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z");
    assert_eq!(Period::Hour.window(at("2026-03-10T14:59:59Z")).end, Some(at("2026-03-10T15:00:00Z")));
}

#[test]
fn a_day_is_from_midnight_utc() {
    assert_window(Period::Day, "2026-03-10T14:37:12Z", "2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z");
    // An instant written with an offset is placed by its UTC time: 01:00+02:00
    // is 23:00 UTC the day before.
    assert_eq!(
        Period::Day.window(at("2026-03-10T01:00:00+02:00")),
        window("2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z")
    );
    assert_eq!(midnight(jiff::civil::date(2026, 3, 10)), Some(at("2026-03-10T00:00:00Z")));
    // Leap day.
    assert_window(Period::Day, "2028-02-29T12:00:00Z", "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z");
}

#[test]
fn a_week_is_from_monday_midnight_utc() {
    // 2026-03-09 is a Monday, 2026-03-15 a Sunday.
    assert_eq!(at("2026-03-09T00:00:00Z").to_zoned(TimeZone::UTC).weekday(), jiff::civil::Weekday::Monday);
    assert_eq!(at("2026-03-15T00:00:00Z").to_zoned(TimeZone::UTC).weekday(), jiff::civil::Weekday::Sunday);
    let week = ("2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z");
    // Every day of the week, from Monday to Sunday 23:59, is in the week that
    // began on the Monday (for Sunday: 6 days before).
    for day in 9..=15 {
        let inside = format!("2026-03-{day:02}T12:00:00Z");
        assert_eq!(Period::Week.window(at(&inside)), window(week.0, week.1), "{inside}");
    }
    assert_window(Period::Week, "2026-03-15T23:59:00Z", week.0, week.1);
    // A week across months and years: Monday 2026-12-28 to Monday 2027-01-04.
    assert_window(Period::Week, "2027-01-01T08:00:00Z", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z");
    // Across a leap day: Monday 2028-02-28.
    assert_window(Period::Week, "2028-03-01T00:00:00Z", "2028-02-28T00:00:00Z", "2028-03-06T00:00:00Z");
}

#[test]
fn a_month_is_a_calendar_month() {
    // January 31st is in January, whose window ends at February 1st (not at
    // "January 31st + 1 month").
    assert_window(Period::Month, "2026-01-31T18:00:00Z", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    // February of a common year: 28 days.
    assert_window(Period::Month, "2027-02-14T00:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z");
    // February of the leap year 2028: the 29th is in it, and it ends at March 1st.
    assert_window(Period::Month, "2028-02-29T23:59:59Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z");
    let february = Period::Month.window(at("2028-02-01T00:00:00Z"));
    assert_eq!(february.end.unwrap().duration_since(february.start.unwrap()), SignedDuration::from_hours(29 * 24));
    // 30-day month, and December into the next year.
    assert_window(Period::Month, "2026-04-30T23:00:00Z", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    assert_window(Period::Month, "2026-12-31T23:59:59.999Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z");
}

#[test]
fn a_year_is_a_calendar_year() {
    assert_window(Period::Year, "2026-07-04T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    assert_window(Period::Year, "2028-12-31T23:59:59Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z");
    let leap = Period::Year.window(at("2028-06-01T00:00:00Z"));
    assert_eq!(leap.end.unwrap().duration_since(leap.start.unwrap()), SignedDuration::from_hours(366 * 24));
}

#[test]
fn total_is_one_window_for_all_time() {
    let all = Window { start: None, end: None };
    for instant in ["1970-01-01T00:00:00Z", "2026-03-10T14:00:00Z", "2099-12-31T23:59:59Z"] {
        assert_eq!(Period::Total.window(at(instant)), all);
        assert!(!all.ended_by(at(instant)));
    }
    assert!(!all.ended_by(Timestamp::MAX));
}

#[test]
fn windows_at_the_end_of_time_do_not_panic() {
    for period in Period::ALL {
        for instant in [Timestamp::MAX, Timestamp::MIN, at("9999-12-30T12:00:00Z")] {
            let window = period.window(instant);
            if let (Some(start), Some(end)) = (window.start, window.end) {
                assert!(start <= instant && instant < end, "{period} at {instant}: {window:?}");
            }
        }
    }
    // A window whose end is beyond the representable range never ends.
    assert_eq!(Period::Year.window(Timestamp::MAX).end, None);
}

// ---------------------------------------------------------------------------
// Creating budgets.

#[test]
fn a_budget_id_and_a_scope_are_unique() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("b1", "user:alice", "usd_cents", Period::Day, 100, now)).unwrap();
    assert_eq!(
        budgets.create(budget("b1", "user:bob", "tokens", Period::Hour, 1, now)),
        Err(BudgetError::Duplicate { id: "b1".into() })
    );
    assert_eq!(
        budgets.create(budget("b2", "user:alice", "usd_cents", Period::Day, 5, now)),
        Err(BudgetError::SameScope {
            identity: id("user:alice"),
            dimension: "usd_cents".into(),
            period: Period::Day,
            existing: "b1".into(),
        })
    );
    // Another period, another dimension, another identity: all fine.
    budgets.create(budget("b2", "user:alice", "usd_cents", Period::Month, 5, now)).unwrap();
    budgets.create(budget("b3", "user:alice", "tokens", Period::Day, 5, now)).unwrap();
    budgets.create(budget("b4", "user:bob", "usd_cents", Period::Day, 5, now)).unwrap();
    assert_eq!(budgets.iter().count(), 4);
    assert_eq!(budgets.of(&id("user:alice")).map(|b| b.id.as_str()).collect::<Vec<_>>(), ["b1", "b2", "b3"]);
    assert_eq!(budgets.set_limit("nope", 1, now), Err(BudgetError::Unknown { id: "nope".into() }));
    budgets.set_limit("b1", 7, now).unwrap();
    assert_eq!(budgets.get("b1").unwrap().limit, 7);
}

// ---------------------------------------------------------------------------
// Rollover.

#[test]
fn a_new_window_sees_the_full_limit_less_what_is_still_held() {
    let monday = at("2026-03-09T10:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("day", "user:alice", "usd_cents", Period::Day, 1_000, monday)).unwrap();
    let alice = chain(&["user:alice"]);
    let ttl = SignedDuration::from_hours(24);

    // Monday: 300 held by r1, 200 reserved and settled by r2.
    reserve(&mut budgets, &alice, &amounts(&[("usd_cents", 300)]), "r1", ttl, monday).unwrap();
    reserve(&mut budgets, &alice, &amounts(&[("usd_cents", 200)]), "r2", ttl, monday).unwrap();
    let settle_200 = Resolution::Settle(amounts(&[("usd_cents", 200)]));
    assert_eq!(budgets.resolve("r2", settle_200, monday), Ok(Resolve::Now));
    assert_eq!(counters(&budgets, "day", monday), (200, 300));
    let plan = budgets.plan(&alice, &amounts(&[("usd_cents", 500)]), monday).unwrap();
    assert_eq!((plan[0].before, plan[0].after), (500, 1_000));
    assert!(budgets.plan(&alice, &amounts(&[("usd_cents", 501)]), monday).is_err());

    // One nanosecond before midnight: still Monday's window.
    let last = at("2026-03-10T00:00:00Z") - NS;
    assert!(budgets.plan(&alice, &amounts(&[("usd_cents", 501)]), last).is_err());

    // Tuesday midnight: Monday's spend is forgotten, r1's 300 is still held.
    let tuesday = at("2026-03-10T00:00:00Z");
    assert_eq!(counters(&budgets, "day", tuesday), (0, 300));
    assert_eq!(budgets.get("day").unwrap().at(tuesday).remaining(), 700);
    let plan = budgets.plan(&alice, &amounts(&[("usd_cents", 700)]), tuesday).unwrap();
    assert_eq!((plan[0].before, plan[0].after), (300, 1_000));
    assert_eq!(budgets.plan(&alice, &amounts(&[("usd_cents", 701)]), tuesday).unwrap_err().remaining, 700);

    // r1 settled on Tuesday: spent in Monday's window, not Tuesday's.
    let settle_300 = Resolution::Settle(amounts(&[("usd_cents", 300)]));
    assert_eq!(budgets.resolve("r1", settle_300, tuesday + SignedDuration::from_secs(60)), Ok(Resolve::Now));
    assert_eq!(counters(&budgets, "day", tuesday), (0, 0));
    let plan = budgets.plan(&alice, &amounts(&[("usd_cents", 1_000)]), tuesday).unwrap();
    assert_eq!((plan[0].before, plan[0].after), (0, 1_000));
}

#[test]
fn a_reservation_carried_into_a_new_window_and_settled_there_is_not_spent_there() {
    // Reserved in hour 10, the budget rolled to hour 11 by another decision,
    // settled in hour 11: hour 11 counts only its own spend.
    let ten = at("2026-03-09T10:30:00Z");
    let eleven = at("2026-03-09T11:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("hourly", "user:alice", "tokens", Period::Hour, 100, ten)).unwrap();
    let alice = chain(&["user:alice"]);
    let ttl = SignedDuration::from_hours(2);
    reserve(&mut budgets, &alice, &amounts(&[("tokens", 60)]), "early", ttl, ten).unwrap();
    reserve(&mut budgets, &alice, &amounts(&[("tokens", 40)]), "late", ttl, eleven).unwrap();
    assert_eq!(counters(&budgets, "hourly", eleven), (0, 100));
    assert!(budgets.plan(&alice, &amounts(&[("tokens", 1)]), eleven).is_err());
    budgets.resolve("late", Resolution::Settle(amounts(&[("tokens", 30)])), eleven).unwrap();
    budgets.resolve("early", Resolution::Settle(amounts(&[("tokens", 60)])), eleven).unwrap();
    assert_eq!(counters(&budgets, "hourly", eleven), (30, 0));
    // And at noon, nothing.
    assert_eq!(counters(&budgets, "hourly", at("2026-03-09T12:00:00Z")), (0, 0));
}

#[test]
fn every_period_rolls_at_its_boundary() {
    let cases = [
        (Period::Hour, "2026-03-09T10:59:59Z", "2026-03-09T11:00:00Z"),
        (Period::Day, "2026-03-09T23:59:59Z", "2026-03-10T00:00:00Z"),
        (Period::Week, "2026-03-15T23:59:00Z", "2026-03-16T00:00:00Z"),
        (Period::Month, "2028-02-29T23:59:59Z", "2028-03-01T00:00:00Z"),
        (Period::Year, "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"),
    ];
    for (period, spend_at, boundary) in cases {
        let (spend_at, boundary) = (at(spend_at), at(boundary));
        let mut budgets = Budgets::new();
        budgets.create(budget("b", "user:alice", "usd_cents", period, 100, spend_at)).unwrap();
        let alice = chain(&["user:alice"]);
        reserve(&mut budgets, &alice, &amounts(&[("usd_cents", 100)]), "r", RESOLVED_RETENTION, spend_at).unwrap();
        budgets.resolve("r", Resolution::Settle(amounts(&[("usd_cents", 100)])), spend_at).unwrap();
        assert_eq!(budgets.plan(&alice, &amounts(&[("usd_cents", 1)]), boundary - NS).unwrap_err().remaining, 0);
        let plan = budgets.plan(&alice, &amounts(&[("usd_cents", 100)]), boundary).unwrap();
        assert_eq!(plan[0].before, 0, "{period}");
    }
}

#[test]
fn total_never_rolls() {
    let start = at("2026-03-09T10:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("all", "user:alice", "usd_cents", Period::Total, 1_000, start)).unwrap();
    let alice = chain(&["user:alice"]);
    reserve(&mut budgets, &alice, &amounts(&[("usd_cents", 600)]), "r", RESOLVED_RETENTION, start).unwrap();
    // Settled years later: still counted, since the window is the same.
    let later = at("2036-01-01T00:00:00Z");
    budgets.resolve("r", Resolution::Settle(amounts(&[("usd_cents", 600)])), later).unwrap();
    for instant in [start, later, at("2099-12-31T23:59:59Z")] {
        assert_eq!(counters(&budgets, "all", instant), (600, 0));
        assert_eq!(budgets.plan(&alice, &amounts(&[("usd_cents", 401)]), instant).unwrap_err().remaining, 400);
    }
}

// ---------------------------------------------------------------------------
// The hierarchy.

/// `agent:a` and `agent:b` under `user:h`: agent:a 500/day, agent:b 500/day,
/// the human 1,000/month and 10 tokens/day (and `agent:a` 50 tokens/day).
fn family(now: Timestamp) -> Budgets {
    let mut budgets = Budgets::new();
    budgets.create(budget("a-day", "agent:a", "usd_cents", Period::Day, 500, now)).unwrap();
    budgets.create(budget("a-tokens", "agent:a", "tokens", Period::Day, 50, now)).unwrap();
    budgets.create(budget("b-day", "agent:b", "usd_cents", Period::Day, 500, now)).unwrap();
    budgets.create(budget("h-month", "user:h", "usd_cents", Period::Month, 1_000, now)).unwrap();
    budgets.create(budget("h-tokens", "user:h", "tokens", Period::Day, 10, now)).unwrap();
    budgets
}

#[test]
fn a_plan_touches_every_budget_on_the_chain_in_play() {
    let now = at("2026-03-10T12:00:00Z");
    let budgets = family(now);
    let touches = budgets.plan(&chain(&["agent:a", "user:h"]), &amounts(&[("usd_cents", 300)]), now).unwrap();
    let expected = |budget: &str, limit| Touch {
        budget: budget.into(),
        dimension: "usd_cents".into(),
        limit,
        amount: 300,
        before: 0,
        after: 300,
    };
    // Acting identity first; b-day (a sibling's) and the token budgets (not
    // asked) are not touched.
    assert_eq!(touches, [expected("a-day", 500), expected("h-month", 1_000)]);
    assert!(touches.iter().all(Touch::is_held));
    // No amounts, no budget of these dimensions in play.
    assert_eq!(budgets.plan(&chain(&["agent:a", "user:h"]), &BTreeMap::new(), now), Ok(Vec::new()));
    // Both dimensions: four budgets.
    let both = budgets.plan(&chain(&["agent:a", "user:h"]), &amounts(&[("tokens", 5), ("usd_cents", 1)]), now).unwrap();
    let names: Vec<&str> = both.iter().map(|touch| touch.budget.as_str()).collect();
    assert_eq!(names, ["a-day", "a-tokens", "h-month", "h-tokens"]);
    // A human acting alone touches only its own.
    let alone = budgets.plan(&chain(&["user:h"]), &amounts(&[("usd_cents", 1)]), now).unwrap();
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].budget, "h-month");
}

#[test]
fn the_first_budget_without_room_is_named() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = family(now);
    let a = chain(&["agent:a", "user:h"]);
    let b = chain(&["agent:b", "user:h"]);
    // The agent's own budget first.
    assert_eq!(
        budgets.plan(&a, &amounts(&[("usd_cents", 501)]), now),
        Err(Shortfall {
            budget: "a-day".into(),
            identity: id("agent:a"),
            dimension: "usd_cents".into(),
            period: Period::Day,
            limit: 500,
            remaining: 500,
            asked: 501,
        })
    );
    // The human's month, once the siblings have used 900 of it.
    reserve(&mut budgets, &a, &amounts(&[("usd_cents", 450)]), "ra", RESOLVED_RETENTION, now).unwrap();
    reserve(&mut budgets, &b, &amounts(&[("usd_cents", 450)]), "rb", RESOLVED_RETENTION, now).unwrap();
    // The human acting alone takes 80: the month has 20 left, the agents 50.
    reserve(&mut budgets, &chain(&["user:h"]), &amounts(&[("usd_cents", 80)]), "rh", RESOLVED_RETENTION, now).unwrap();
    assert_eq!(
        budgets.plan(&a, &amounts(&[("usd_cents", 30)]), now),
        Err(Shortfall {
            budget: "h-month".into(),
            identity: id("user:h"),
            dimension: "usd_cents".into(),
            period: Period::Month,
            limit: 1_000,
            remaining: 20,
            asked: 30,
        })
    );
    // Over both: the agent's, first on the chain, is named.
    let shortfall = budgets.plan(&a, &amounts(&[("usd_cents", 60)]), now).unwrap_err();
    assert_eq!((shortfall.budget.as_str(), shortfall.remaining, shortfall.asked), ("a-day", 50, 60));
    // Other dimensions in the same request: tokens fit, usd_cents does not.
    let shortfall = budgets.plan(&a, &amounts(&[("tokens", 1), ("usd_cents", 30)]), now).unwrap_err();
    assert_eq!(shortfall.budget, "h-month");
    // The human's tokens (10) are tighter than the agent's (50).
    let shortfall = budgets.plan(&a, &amounts(&[("tokens", 11)]), now).unwrap_err();
    assert_eq!((shortfall.budget.as_str(), shortfall.identity.as_str()), ("h-tokens", "user:h"));
    // The sentence names it all.
    let sentence = shortfall.to_string();
    for part in ["h-tokens", "user:h", "tokens", "day", "10", "11"] {
        assert!(sentence.contains(part), "{sentence}");
    }
    // As step 4 of the decision sees it.
    let reason = BudgetCheck::check(&budgets, &a, &amounts(&[("tokens", 11)]), now).unwrap_err();
    assert_eq!(reason.code, ReasonCode::BudgetExceeded);
    assert_eq!(reason.identity, Some(id("user:h")));
    assert_eq!(reason.shortfall, Some(Box::new(shortfall)));
    assert_eq!(BudgetCheck::check(&budgets, &a, &amounts(&[("tokens", 10)]), now).unwrap().len(), 2);
}

#[test]
fn take_is_all_or_nothing() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = family(now);
    let a = chain(&["agent:a", "user:h"]);
    let b = chain(&["agent:b", "user:h"]);
    // Both plans are made on the same state; b takes first and leaves the
    // human's month 100.
    let plan_a = budgets.plan(&a, &amounts(&[("usd_cents", 450)]), now).unwrap();
    reserve(&mut budgets, &b, &amounts(&[("usd_cents", 400)]), "rb", RESOLVED_RETENTION, now).unwrap();
    reserve(&mut budgets, &chain(&["user:h"]), &amounts(&[("usd_cents", 500)]), "rh", RESOLVED_RETENTION, now).unwrap();
    let before = snapshot(&budgets);
    let new = NewReservation {
        id: "ra".into(),
        decision_id: "d-ra".into(),
        identity: id("agent:a"),
        amounts: amounts(&[("usd_cents", 450)]),
        expires_at: now + RESERVATION_TTL,
    };
    // a-day (first) still fits; h-month (second) no longer does.
    let shortfall = budgets.take(&plan_a, Some(new), now).unwrap_err();
    assert_eq!((shortfall.budget.as_str(), shortfall.remaining, shortfall.asked), ("h-month", 100, 450));
    assert_eq!(snapshot(&budgets), before, "a refused take changed nothing");
    assert_eq!(budgets.reservation("ra"), None);
    assert_eq!(counters(&budgets, "a-day", now), (0, 0));
}

#[test]
fn a_budget_counts_its_descendants_at_every_depth() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("top", "user:h", "usd_cents", Period::Day, 1_000, now)).unwrap();
    let deep: Vec<IdentityId> =
        (0..31).map(|level| id(&format!("agent:level-{level}"))).chain([id("user:h")]).collect();
    assert_eq!(deep.len(), 32);
    for (n, start) in [0, 10, 30, 31].into_iter().enumerate() {
        let touches = reserve(
            &mut budgets,
            &deep[start..],
            &amounts(&[("usd_cents", 200)]),
            &format!("r{n}"),
            RESERVATION_TTL,
            now,
        )
        .unwrap();
        assert_eq!(touches.len(), 1);
    }
    assert_eq!(counters(&budgets, "top", now), (0, 800));
    assert_eq!(budgets.plan(&deep, &amounts(&[("usd_cents", 201)]), now).unwrap_err().remaining, 200);
}

// ---------------------------------------------------------------------------
// `calls`.

#[test]
fn calls_count_one_per_decision_spent_at_once_and_never_given_back() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("calls", "user:h", CALLS, Period::Day, 4, now)).unwrap();
    budgets.create(budget("usd", "user:h", "usd_cents", Period::Day, 1_000, now)).unwrap();
    let a = chain(&["agent:a", "user:h"]);

    // Without amounts: one call, spent, no reservation.
    let touches = reserve(&mut budgets, &a, &BTreeMap::new(), "r0", RESERVATION_TTL, now).unwrap();
    assert_eq!(
        touches,
        [Touch { budget: "calls".into(), dimension: CALLS.into(), limit: 4, amount: 1, before: 0, after: 1 }]
    );
    assert!(!touches[0].is_held());
    assert_eq!(budgets.reservation("r0"), None);
    assert_eq!(counters(&budgets, "calls", now), (1, 0));

    // With amounts (and even a `calls` amount): still one call; the
    // reservation holds only the usd_cents.
    let asked = amounts(&[(CALLS, 3), ("usd_cents", 100)]);
    let touches = reserve(&mut budgets, &a, &asked, "r1", RESERVATION_TTL, now).unwrap();
    let calls: Vec<u64> = touches.iter().filter(|t| t.dimension == CALLS).map(|t| t.amount).collect();
    assert_eq!(calls, [1]);
    let held: Vec<String> = budgets.reservation("r1").unwrap().holds.into_iter().map(|h| h.budget).collect();
    assert_eq!(held, ["usd"]);
    assert_eq!(counters(&budgets, "calls", now), (2, 0));

    // Void and expiry give back the amounts, not the calls.
    budgets.resolve("r1", Resolution::Void, now).unwrap();
    reserve(&mut budgets, &a, &amounts(&[("usd_cents", 100)]), "r2", RESERVATION_TTL, now).unwrap();
    budgets.resolve("r2", Resolution::Expire, now + RESERVATION_TTL).unwrap();
    assert_eq!(counters(&budgets, "calls", now), (3, 0));
    assert_eq!(counters(&budgets, "usd", now), (0, 0));
    reserve(&mut budgets, &a, &BTreeMap::new(), "r3", RESERVATION_TTL, now).unwrap();

    // The fifth call is refused, whatever the amounts.
    for asked in [BTreeMap::new(), amounts(&[("usd_cents", 0)])] {
        let shortfall = budgets.plan(&a, &asked, now).unwrap_err();
        assert_eq!((shortfall.budget.as_str(), shortfall.remaining, shortfall.asked), ("calls", 0, 1));
    }
    // Tomorrow, four more.
    let tomorrow = at("2026-03-11T00:00:00Z");
    assert_eq!(counters(&budgets, "calls", tomorrow), (0, 0));
    assert!(budgets.plan(&a, &BTreeMap::new(), tomorrow).is_ok());
}

// ---------------------------------------------------------------------------
// Overflow.

#[test]
fn amounts_near_u64_max_are_refused_without_wrapping() {
    let now = at("2026-03-10T12:00:00Z");
    let max = u64::MAX;
    let mut budgets = Budgets::new();
    budgets.create(budget("huge", "user:h", "usd_cents", Period::Total, max, now)).unwrap();
    budgets.create(budget("huge-calls", "user:h", CALLS, Period::Total, max, now)).unwrap();
    let h = chain(&["user:h"]);
    reserve(&mut budgets, &h, &amounts(&[("usd_cents", max - 10)]), "spent", RESERVATION_TTL, now).unwrap();
    budgets.resolve("spent", Resolution::Settle(amounts(&[("usd_cents", max - 10)])), now).unwrap();
    assert_eq!(counters(&budgets, "huge", now), (max - 10, 0));
    // 11 more would be u64::MAX + 1.
    for asked in [11, 12, max / 2, max - 1, max] {
        let shortfall = budgets.plan(&h, &amounts(&[("usd_cents", asked)]), now).unwrap_err();
        assert_eq!((shortfall.remaining, shortfall.asked), (10, asked));
    }
    // Exactly to the limit fits; then held + spent = u64::MAX and nothing more.
    let touches = reserve(&mut budgets, &h, &amounts(&[("usd_cents", 10)]), "last", RESERVATION_TTL, now).unwrap();
    let usd: Vec<(u64, u64)> = touches.iter().filter(|t| t.budget == "huge").map(|t| (t.before, t.after)).collect();
    assert_eq!(usd, [(max - 10, max)]);
    assert_eq!(counters(&budgets, "huge", now), (max - 10, 10));
    assert_eq!(budgets.get("huge").unwrap().used(), max);
    for asked in [1, max] {
        assert_eq!(budgets.plan(&h, &amounts(&[("usd_cents", asked)]), now).unwrap_err().remaining, 0);
    }
    // A forged touch of u64::MAX is refused by take too, changing nothing.
    let before = snapshot(&budgets);
    let forged =
        Touch { budget: "huge".into(), dimension: "usd_cents".into(), limit: max, amount: max, before: 0, after: max };
    assert!(budgets.take(&[forged], None, now).is_err());
    assert_eq!(snapshot(&budgets), before);
    // Settling the held 10 brings spent to exactly u64::MAX.
    budgets.resolve("last", Resolution::Settle(amounts(&[("usd_cents", 10)])), now).unwrap();
    assert_eq!(counters(&budgets, "huge", now), (max, 0));
    assert_eq!(budgets.plan(&h, &amounts(&[("usd_cents", 0)]), now).unwrap()[0].after, max);
}

#[test]
fn a_reservation_of_u64_max_is_refused_by_a_budget_already_holding_something() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("b", "user:h", "tokens", Period::Day, u64::MAX, now)).unwrap();
    let h = chain(&["user:h"]);
    reserve(&mut budgets, &h, &amounts(&[("tokens", 5)]), "r", RESERVATION_TTL, now).unwrap();
    let shortfall = budgets.plan(&h, &amounts(&[("tokens", u64::MAX)]), now).unwrap_err();
    assert_eq!(shortfall.remaining, u64::MAX - 5);
    assert_eq!(counters(&budgets, "b", now), (0, 5));
}

// ---------------------------------------------------------------------------
// Resolutions.

/// `agent:a` under `user:h` with usd_cents and tokens on both, and reservation
/// `r` holding 500 usd_cents and 50 tokens (and a `gpu_seconds` amount no
/// budget counts).
fn held(now: Timestamp) -> Budgets {
    let mut budgets = Budgets::new();
    budgets.create(budget("a-usd", "agent:a", "usd_cents", Period::Day, 1_000, now)).unwrap();
    budgets.create(budget("a-tok", "agent:a", "tokens", Period::Day, 1_000, now)).unwrap();
    budgets.create(budget("h-usd", "user:h", "usd_cents", Period::Month, 10_000, now)).unwrap();
    let asked = amounts(&[("gpu_seconds", 7), ("tokens", 50), ("usd_cents", 500)]);
    reserve(&mut budgets, &chain(&["agent:a", "user:h"]), &asked, "r", RESERVATION_TTL, now).unwrap();
    assert_eq!(counters(&budgets, "a-usd", now), (0, 500));
    assert_eq!(counters(&budgets, "a-tok", now), (0, 50));
    assert_eq!(counters(&budgets, "h-usd", now), (0, 500));
    budgets
}

#[test]
fn settling_spends_the_actual_amounts_and_releases_the_rest() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = held(now);
    let reservation = budgets.reservation("r").unwrap().clone();
    assert_eq!(reservation.status, Status::Held);
    assert_eq!(reservation.identity, id("agent:a"));
    assert_eq!(reservation.expires_at, now + RESERVATION_TTL);
    assert_eq!(reservation.holds.len(), 3);
    // tokens not named: 0 spent.
    let settle = Resolution::Settle(amounts(&[("gpu_seconds", 7), ("usd_cents", 320)]));
    assert_eq!(budgets.check_resolution("r", &settle), Ok(Resolve::Now));
    let later = now + SignedDuration::from_secs(30);
    assert_eq!(budgets.resolve("r", settle.clone(), later), Ok(Resolve::Now));
    assert_eq!(counters(&budgets, "a-usd", now), (320, 0));
    assert_eq!(counters(&budgets, "h-usd", now), (320, 0));
    assert_eq!(counters(&budgets, "a-tok", now), (0, 0));
    let reservation = budgets.reservation("r").unwrap();
    assert_eq!(reservation.status, Status::Settled(amounts(&[("gpu_seconds", 7), ("usd_cents", 320)])));
    assert_eq!(reservation.status.as_str(), "settled");
    assert_eq!(reservation.resolved_at, Some(later));
    assert_eq!(budgets.due(later + RESERVATION_TTL).count(), 0, "a resolved reservation is never due");

    // The same settlement again: the same answer, nothing changes.
    let before = snapshot(&budgets);
    assert_eq!(budgets.resolve("r", settle, later + SignedDuration::from_secs(5)), Ok(Resolve::Repeated));
    assert_eq!(snapshot(&budgets), before);
    // Any other resolution: a conflict, nothing changes.
    for other in [
        Resolution::Void,
        Resolution::Expire,
        Resolution::Settle(amounts(&[("usd_cents", 320)])),
        Resolution::Settle(amounts(&[("gpu_seconds", 7), ("usd_cents", 319)])),
    ] {
        assert_eq!(
            budgets.resolve("r", other, later),
            Err(ResolveError::Conflict { id: "r".into(), status: "settled" })
        );
        assert_eq!(snapshot(&budgets), before);
    }
}

#[test]
fn settling_to_the_full_amount_and_to_zero() {
    let now = at("2026-03-10T12:00:00Z");
    let mut full = held(now);
    full.resolve("r", Resolution::Settle(amounts(&[("tokens", 50), ("usd_cents", 500)])), now).unwrap();
    assert_eq!(counters(&full, "a-usd", now), (500, 0));
    assert_eq!(counters(&full, "a-tok", now), (50, 0));
    let mut zero = held(now);
    zero.resolve("r", Resolution::Settle(BTreeMap::new()), now).unwrap();
    for budget in ["a-usd", "a-tok", "h-usd"] {
        assert_eq!(counters(&zero, budget, now), (0, 0));
    }
}

#[test]
fn a_settlement_over_the_reservation_or_in_another_dimension_is_refused() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = held(now);
    let before = snapshot(&budgets);
    assert_eq!(
        budgets.resolve("r", Resolution::Settle(amounts(&[("usd_cents", 501)])), now),
        Err(ResolveError::OverReserved { id: "r".into(), dimension: "usd_cents".into(), reserved: 500, asked: 501 })
    );
    assert_eq!(
        budgets.resolve("r", Resolution::Settle(amounts(&[("tokens", u64::MAX), ("usd_cents", 1)])), now),
        Err(ResolveError::OverReserved { id: "r".into(), dimension: "tokens".into(), reserved: 50, asked: u64::MAX })
    );
    assert_eq!(
        budgets.resolve("r", Resolution::Settle(amounts(&[("usd_cents", 1), ("widgets", 0)])), now),
        Err(ResolveError::UnknownDimension { id: "r".into(), dimension: "widgets".into() })
    );
    assert_eq!(snapshot(&budgets), before, "a refused settlement changed nothing");
    assert_eq!(budgets.reservation("r").unwrap().status, Status::Held);
    // Still settleable afterwards.
    assert_eq!(budgets.resolve("r", Resolution::Settle(amounts(&[("usd_cents", 500)])), now), Ok(Resolve::Now));
}

#[test]
fn void_and_expiry_release_everything() {
    let now = at("2026-03-10T12:00:00Z");
    for (resolution, status) in [(Resolution::Void, "voided"), (Resolution::Expire, "expired")] {
        let mut budgets = held(now);
        assert_eq!(budgets.resolve("r", resolution.clone(), now), Ok(Resolve::Now));
        for budget in ["a-usd", "a-tok", "h-usd"] {
            assert_eq!(counters(&budgets, budget, now), (0, 0), "{status}");
        }
        assert_eq!(budgets.reservation("r").unwrap().status.as_str(), status);
        let before = snapshot(&budgets);
        assert_eq!(budgets.resolve("r", resolution.clone(), now), Ok(Resolve::Repeated));
        assert_eq!(snapshot(&budgets), before);
        let others = [Resolution::Void, Resolution::Expire, Resolution::Settle(BTreeMap::new())];
        for other in others.into_iter().filter(|other| *other != resolution) {
            assert_eq!(budgets.resolve("r", other, now), Err(ResolveError::Conflict { id: "r".into(), status }));
            assert_eq!(snapshot(&budgets), before);
        }
    }
}

#[test]
fn an_unknown_reservation_is_named() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = held(now);
    for resolution in [Resolution::Void, Resolution::Expire, Resolution::Settle(BTreeMap::new())] {
        assert_eq!(budgets.resolve("nope", resolution, now), Err(ResolveError::Unknown { id: "nope".into() }));
    }
}

#[test]
fn due_lists_exactly_the_held_reservations_whose_time_is_up() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("usd", "user:h", "usd_cents", Period::Day, 1_000, now)).unwrap();
    let h = chain(&["user:h"]);
    let secs = SignedDuration::from_secs;
    // r30 first, so that the order is by expiry, not by id or insertion.
    for (name, ttl) in [("r30", 30), ("r10", 10), ("r20", 20), ("r20b", 20), ("r40", 40)] {
        reserve(&mut budgets, &h, &amounts(&[("usd_cents", 1)]), name, secs(ttl), now).unwrap();
    }
    let due = |budgets: &Budgets, at: Timestamp| budgets.due(at).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(due(&budgets, now), Vec::<String>::new());
    assert_eq!(due(&budgets, now + secs(10) - NS), Vec::<String>::new());
    assert_eq!(due(&budgets, now + secs(10)), ["r10"]);
    assert_eq!(due(&budgets, now + secs(20)), ["r10", "r20", "r20b"]);
    assert_eq!(budgets.next_expiry(), Some(now + secs(10)));
    budgets.resolve("r10", Resolution::Expire, now + secs(10)).unwrap();
    budgets.resolve("r20b", Resolution::Settle(BTreeMap::new()), now + secs(11)).unwrap();
    budgets.resolve("r40", Resolution::Void, now + secs(11)).unwrap();
    assert_eq!(due(&budgets, now + secs(20)), ["r20"]);
    assert_eq!(due(&budgets, now + secs(3_600)), ["r20", "r30"]);
    assert_eq!(budgets.next_expiry(), Some(now + secs(20)));
    budgets.resolve("r20", Resolution::Expire, now + secs(20)).unwrap();
    budgets.resolve("r30", Resolution::Expire, now + secs(30)).unwrap();
    assert_eq!(budgets.next_expiry(), None);
    assert_eq!(due(&budgets, Timestamp::MAX), Vec::<String>::new());
    assert_eq!(counters(&budgets, "usd", now), (0, 0));
}

#[test]
fn a_resolved_reservation_is_forgotten_when_asked_and_a_held_one_never() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = held(now);
    reserve(&mut budgets, &chain(&["user:h"]), &amounts(&[("usd_cents", 1)]), "still-held", RESERVATION_TTL, now)
        .unwrap();
    let resolved_at = now + SignedDuration::from_secs(60);
    budgets.resolve("r", Resolution::Void, resolved_at).unwrap();
    // Until it is forgotten, a repeat is a repeat.
    assert_eq!(
        budgets.resolve("r", Resolution::Void, resolved_at + SignedDuration::from_hours(48)),
        Ok(Resolve::Repeated)
    );
    assert_eq!(budgets.forget("still-held"), None, "a held reservation holds amounts");
    assert_eq!(budgets.reservation("still-held").unwrap().status, Status::Held);
    let forgotten = budgets.forget("r").unwrap();
    assert_eq!((forgotten.status, forgotten.resolved_at), (Status::Voided, Some(resolved_at)));
    assert_eq!(budgets.reservation("r"), None);
    assert_eq!(budgets.resolve("r", Resolution::Void, resolved_at), Err(ResolveError::Unknown { id: "r".into() }));
    assert_eq!(budgets.forget("r"), None, "once");
    assert_eq!(budgets.forget("nobody"), None);
    assert_eq!(budgets.reservations().count(), 1);
}

// ---------------------------------------------------------------------------
// Two agents racing for one human's budget.

#[test]
fn two_agents_under_one_human_get_exactly_the_humans_budget() {
    let now = at("2026-03-10T12:00:00Z");
    let mut budgets = Budgets::new();
    budgets.create(budget("human", "user:h", "usd_cents", Period::Day, 10_000, now)).unwrap();
    budgets.create(budget("agent-a", "agent:a", "usd_cents", Period::Day, 6_000, now)).unwrap();
    budgets.create(budget("agent-b", "agent:b", "usd_cents", Period::Day, 6_000, now)).unwrap();
    let chains = [chain(&["agent:a", "user:h"]), chain(&["agent:b", "user:h"])];
    let asked = amounts(&[("usd_cents", 100)]);
    let mut allowed = [0_u32; 2];
    // 1,000 requests of 100, alternating; each pair is planned on the same
    // state before either takes, as two requests of one batch are, so the
    // take's own check is what keeps the second one honest.
    for pair in 0..500 {
        let plans: Vec<_> = chains.iter().map(|chain| budgets.plan(chain, &asked, now)).collect();
        for (agent, plan) in plans.into_iter().enumerate() {
            let Ok(touches) = plan else { continue };
            let new = NewReservation {
                id: format!("r{:04}", pair * 2 + agent),
                decision_id: format!("d{:04}", pair * 2 + agent),
                identity: chains[agent][0].clone(),
                amounts: asked.clone(),
                expires_at: now + RESERVATION_TTL,
            };
            if budgets.take(&touches, Some(new), now).is_ok() {
                allowed[agent] += 1;
            }
        }
    }
    assert_eq!(allowed[0] + allowed[1], 100);
    assert_eq!(allowed, [50, 50]);
    assert_eq!(counters(&budgets, "human", now), (0, 10_000));
    assert_eq!(counters(&budgets, "agent-a", now), (0, 5_000));
    assert_eq!(counters(&budgets, "agent-b", now), (0, 5_000));
    assert_eq!(budgets.reservations().count(), 100);
    let shortfall = budgets.plan(&chains[0], &asked, now).unwrap_err();
    assert_eq!((shortfall.budget.as_str(), shortfall.remaining), ("human", 0));
}

// ---------------------------------------------------------------------------
// The property: random budgets on a 3-level chain, random sequences of
// decisions, resolutions and time, checked after every step.

/// Acting identities, from the bottom of the chain to its human.
const LEVELS: [&str; 3] = ["agent:sub", "agent:buyer", "user:alice"];
const DIMENSIONS: [&str; 3] = ["usd_cents", "tokens", CALLS];

/// A window as the oracle names it: by calendar fields, weeks by their ISO
/// week date (which starts on Monday).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Hour(i16, i8, i8, i8),
    Day(i16, i8, i8),
    Week(i16, i8),
    Month(i16, i8),
    Year(i16),
    Total,
}

fn key(period: Period, at: Timestamp) -> Key {
    let zoned = at.to_zoned(TimeZone::UTC);
    match period {
        Period::Hour => Key::Hour(zoned.year(), zoned.month(), zoned.day(), zoned.hour()),
        Period::Day => Key::Day(zoned.year(), zoned.month(), zoned.day()),
        Period::Week => {
            let week = zoned.date().iso_week_date();
            Key::Week(week.year(), week.week())
        }
        Period::Month => Key::Month(zoned.year(), zoned.month()),
        Period::Year => Key::Year(zoned.year()),
        Period::Total => Key::Total,
    }
}

#[derive(Debug, Clone)]
struct Spec {
    level: usize,
    dimension: usize,
    period: usize,
    limit: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        level: usize,
        usd: Option<u64>,
        tokens: Option<u64>,
        ttl_s: i64,
    },
    /// Settle reservation `pick`: each held dimension (in name order) settled
    /// at that percentage of its amount or left out; `over` settles the first
    /// one at one more than reserved, `stray` adds a dimension not reserved.
    Settle {
        pick: usize,
        percents: [Option<u8>; 2],
        over: bool,
        stray: bool,
    },
    Void {
        pick: usize,
    },
    Expire {
        pick: usize,
    },
    /// Expire every reservation that is due, as the server's sweeper does.
    ExpireDue,
    Forget,
    Advance {
        secs: i64,
    },
}

struct OBudget {
    id: String,
    level: usize,
    dimension: &'static str,
    period: Period,
    limit: u64,
}

struct OHold {
    budget: usize,
    amount: u64,
    key: Key,
}

struct OReservation {
    id: String,
    amounts: BTreeMap<String, u64>,
    holds: Vec<OHold>,
    expires_at: Timestamp,
    status: Status,
    resolved_at: Option<Timestamp>,
    forgotten: bool,
}

/// The oracle: budgets, reservations, and what was spent in every window of
/// every budget, recomputed from the operations alone.
struct Oracle {
    budgets: Vec<OBudget>,
    reservations: Vec<OReservation>,
    spent: BTreeMap<(usize, Key), u64>,
    now: Timestamp,
}

impl Oracle {
    fn spent(&self, budget: usize) -> u64 {
        let key = key(self.budgets[budget].period, self.now);
        self.spent.get(&(budget, key)).copied().unwrap_or(0)
    }

    fn reserved(&self, budget: usize) -> u64 {
        self.reservations
            .iter()
            .filter(|r| r.status == Status::Held)
            .flat_map(|r| &r.holds)
            .filter(|hold| hold.budget == budget)
            .map(|hold| hold.amount)
            .sum()
    }

    fn spend(&mut self, budget: usize, key: Key, amount: u64) {
        *self.spent.entry((budget, key)).or_default() += amount;
    }

    /// What a decision at `level` asking `asked` takes, or the first budget
    /// without room.
    fn plan(&self, level: usize, asked: &BTreeMap<String, u64>) -> Result<Vec<(usize, Touch)>, Shortfall> {
        let mut touches = Vec::new();
        for (identity, name) in LEVELS.iter().enumerate().skip(level) {
            for (index, budget) in self.budgets.iter().enumerate().filter(|(_, b)| b.level == identity) {
                let amount = if budget.dimension == CALLS {
                    1
                } else {
                    match asked.get(budget.dimension) {
                        Some(amount) => *amount,
                        None => continue,
                    }
                };
                let used = u128::from(self.spent(index)) + u128::from(self.reserved(index));
                if used + u128::from(amount) > u128::from(budget.limit) {
                    return Err(Shortfall {
                        budget: budget.id.clone(),
                        identity: id(name),
                        dimension: budget.dimension.to_owned(),
                        period: budget.period,
                        limit: budget.limit,
                        remaining: u64::try_from(u128::from(budget.limit).saturating_sub(used)).unwrap(),
                        asked: amount,
                    });
                }
                let before = u64::try_from(used).unwrap();
                touches.push((
                    index,
                    Touch {
                        budget: budget.id.clone(),
                        dimension: budget.dimension.to_owned(),
                        limit: budget.limit,
                        amount,
                        before,
                        after: before + amount,
                    },
                ));
            }
        }
        Ok(touches)
    }

    /// Resolves reservation `index` (known to be held) as `resolution`.
    fn resolve(&mut self, index: usize, resolution: &Resolution) {
        let (holds, status) = {
            let r = &self.reservations[index];
            let holds: Vec<(usize, Key, u64, String)> = r
                .holds
                .iter()
                .map(|h| (h.budget, h.key.clone(), h.amount, self.budgets[h.budget].dimension.to_owned()))
                .collect();
            let status = match resolution {
                Resolution::Settle(actual) => settled(actual),
                Resolution::Void => Status::Voided,
                Resolution::Expire => Status::Expired,
            };
            (holds, status)
        };
        if let Resolution::Settle(actual) = resolution {
            for (budget, key, amount, dimension) in holds {
                let spent = actual.get(&dimension).copied().unwrap_or(0);
                assert!(spent <= amount);
                self.spend(budget, key, spent);
            }
        }
        let now = self.now;
        let r = &mut self.reservations[index];
        r.status = status;
        r.resolved_at = Some(now);
    }

    /// What resolving reservation `index` as `resolution` answers, when the
    /// resolution itself is valid.
    fn expect(&self, index: usize, resolution: &Resolution) -> Result<Resolve, ResolveError> {
        let r = &self.reservations[index];
        let status = match resolution {
            Resolution::Settle(actual) => settled(actual),
            Resolution::Void => Status::Voided,
            Resolution::Expire => Status::Expired,
        };
        if r.forgotten {
            Err(ResolveError::Unknown { id: r.id.clone() })
        } else if r.status == Status::Held {
            Ok(Resolve::Now)
        } else if r.status == status {
            Ok(Resolve::Repeated)
        } else {
            Err(ResolveError::Conflict { id: r.id.clone(), status: r.status.as_str() })
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let limit = prop_oneof![Just(0_u64), 1..=20_u64, 100..=3_000_u64];
    (0..LEVELS.len(), 0..DIMENSIONS.len(), 0..Period::ALL.len(), limit)
        .prop_map(|(level, dimension, period, limit)| Spec { level, dimension, period, limit })
}

fn op() -> impl Strategy<Value = Op> {
    let amount = || proptest::option::of(prop_oneof![Just(0_u64), 1..=700_u64]);
    let ttl = prop::sample::select(vec![1_i64, 60, 300, 3_600, 86_400]);
    let secs = prop_oneof![
        prop::sample::select(vec![1_i64, 59, 1_799, 3_600, 86_399, 86_400, 604_800, 2_678_400, 31_622_400]),
        0..200_000_i64,
    ];
    prop_oneof![
        6 => (0..LEVELS.len(), amount(), amount(), ttl)
            .prop_map(|(level, usd, tokens, ttl_s)| Op::Reserve { level, usd, tokens, ttl_s }),
        3 => (
            any::<usize>(),
            prop::array::uniform2(proptest::option::of(0..=100_u8)),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.05),
        )
            .prop_map(|(pick, percents, over, stray)| Op::Settle { pick, percents, over, stray }),
        1 => any::<usize>().prop_map(|pick| Op::Void { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
        1 => Just(Op::ExpireDue),
        1 => Just(Op::Forget),
        3 => secs.prop_map(|secs| Op::Advance { secs }),
    ]
}

fn start() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        // Just before boundaries of every period.
        prop::sample::select(vec![
            "2028-02-28T23:59:59Z",
            "2028-02-29T23:59:00Z",
            "2026-12-31T23:00:00Z",
            "2026-03-15T23:59:00Z",
            "2026-01-31T23:59:59Z",
        ])
        .prop_map(at),
        (0..3 * 366 * 86_400_i64).prop_map(|secs| at("2026-01-01T00:00:00Z") + SignedDuration::from_secs(secs)),
    ]
}

/// Applies `op` to both the library and the oracle and compares their answers.
fn step(budgets: &mut Budgets, oracle: &mut Oracle, op: &Op, serial: &mut u32) -> Result<(), TestCaseError> {
    let now = oracle.now;
    match op {
        Op::Reserve { level, usd, tokens, ttl_s } => {
            let mut asked = BTreeMap::new();
            if let Some(usd) = usd {
                asked.insert("usd_cents".to_owned(), *usd);
            }
            if let Some(tokens) = tokens {
                asked.insert("tokens".to_owned(), *tokens);
            }
            let chain: Vec<IdentityId> = LEVELS[*level..].iter().map(|text| id(text)).collect();
            let expected = oracle.plan(*level, &asked);
            let planned = budgets.plan(&chain, &asked, now);
            let expected_touches = expected.clone().map(|touches| touches.into_iter().map(|(_, t)| t).collect());
            prop_assert_eq!(&planned, &expected_touches);
            let (Ok(touches), Ok(expected)) = (planned, expected) else { return Ok(()) };
            *serial += 1;
            let reservation = format!("r{serial:05}");
            let expires_at = now + SignedDuration::from_secs(*ttl_s);
            let new = (!asked.is_empty()).then(|| NewReservation {
                id: reservation.clone(),
                decision_id: format!("d{serial:05}"),
                identity: chain[0].clone(),
                amounts: asked.clone(),
                expires_at,
            });
            prop_assert_eq!(budgets.take(&touches, new, now), Ok(()));
            let mut holds = Vec::new();
            for (budget, touch) in expected {
                let key = key(oracle.budgets[budget].period, now);
                if touch.dimension == CALLS {
                    oracle.spend(budget, key, 1);
                } else {
                    holds.push(OHold { budget, amount: touch.amount, key });
                }
            }
            if asked.is_empty() {
                prop_assert!(holds.is_empty());
            } else {
                oracle.reservations.push(OReservation {
                    id: reservation,
                    amounts: asked,
                    holds,
                    expires_at,
                    status: Status::Held,
                    resolved_at: None,
                    forgotten: false,
                });
            }
        }
        Op::Settle { pick, percents, over, stray } => {
            if oracle.reservations.is_empty() {
                return Ok(());
            }
            let index = pick % oracle.reservations.len();
            let r = &oracle.reservations[index];
            let mut actual = BTreeMap::new();
            for ((dimension, amount), percent) in r.amounts.iter().zip(percents) {
                if let Some(percent) = percent {
                    actual.insert(dimension.clone(), amount * u64::from(*percent) / 100);
                }
            }
            if *over && let Some((dimension, amount)) = r.amounts.iter().next() {
                actual.insert(dimension.clone(), amount + 1);
            }
            if *stray {
                actual.insert("gpu_seconds".to_owned(), 0);
            }
            let invalid = *stray || *over;
            let id = r.id.clone();
            let resolution = Resolution::Settle(actual);
            let got = budgets.resolve(&id, resolution.clone(), now);
            if r.forgotten {
                prop_assert_eq!(got, Err(ResolveError::Unknown { id }));
            } else if invalid {
                let valid_error =
                    matches!(got, Err(ResolveError::OverReserved { .. } | ResolveError::UnknownDimension { .. }));
                let conflict = r.status != Status::Held && matches!(got, Err(ResolveError::Conflict { .. }));
                // Settled already with the same non-zero amounts (a stray
                // dimension at 0 counts as not named): a repeat.
                let repeat = matches!(&resolution, Resolution::Settle(actual) if r.status == settled(actual))
                    && got == Ok(Resolve::Repeated);
                prop_assert!(valid_error || conflict || repeat, "{:?} for an invalid settlement", got);
            } else {
                let expected = oracle.expect(index, &resolution);
                prop_assert_eq!(&got, &expected);
                if expected == Ok(Resolve::Now) {
                    oracle.resolve(index, &resolution);
                }
            }
        }
        Op::Void { pick } | Op::Expire { pick } => {
            if oracle.reservations.is_empty() {
                return Ok(());
            }
            let index = pick % oracle.reservations.len();
            let resolution = if matches!(op, Op::Void { .. }) { Resolution::Void } else { Resolution::Expire };
            let expected = oracle.expect(index, &resolution);
            let got = budgets.resolve(&oracle.reservations[index].id, resolution.clone(), now);
            prop_assert_eq!(&got, &expected);
            if expected == Ok(Resolve::Now) {
                oracle.resolve(index, &resolution);
            }
        }
        Op::ExpireDue => {
            let due: Vec<String> = budgets.due(now).map(str::to_owned).collect();
            let mut expected: Vec<(Timestamp, String, usize)> = oracle
                .reservations
                .iter()
                .enumerate()
                .filter(|(_, r)| r.status == Status::Held && r.expires_at <= now)
                .map(|(index, r)| (r.expires_at, r.id.clone(), index))
                .collect();
            expected.sort();
            prop_assert_eq!(&due, &expected.iter().map(|(_, id, _)| id.clone()).collect::<Vec<_>>());
            for (_, id, index) in expected {
                prop_assert_eq!(budgets.resolve(&id, Resolution::Expire, now), Ok(Resolve::Now));
                oracle.resolve(index, &Resolution::Expire);
            }
        }
        Op::Forget => {
            // Forget every resolved reservation; a held one is never forgotten.
            for r in oracle.reservations.iter_mut().filter(|r| !r.forgotten) {
                let forgotten = budgets.forget(&r.id);
                if r.resolved_at.is_some() {
                    prop_assert_eq!(forgotten.map(|f| f.status), Some(r.status.clone()));
                    r.forgotten = true;
                } else {
                    prop_assert!(forgotten.is_none());
                }
            }
        }
        Op::Advance { secs } => oracle.now = now + SignedDuration::from_secs(*secs),
    }
    Ok(())
}

/// After every step: no budget is over its limit, `reserved` is what the held
/// reservations hold, `spent` is what was spent in the current window.
fn check(budgets: &Budgets, oracle: &Oracle) -> Result<(), TestCaseError> {
    let now = oracle.now;
    for (index, expected) in oracle.budgets.iter().enumerate() {
        let budget = budgets.get(&expected.id).unwrap().at(now);
        prop_assert!(
            budget.spent.checked_add(budget.reserved).is_some_and(|used| used <= budget.limit),
            "{} over its limit: {:?}",
            expected.id,
            budget
        );
        prop_assert_eq!(budget.limit, expected.limit);
        prop_assert_eq!(budget.reserved, oracle.reserved(index), "reserved in {}", &expected.id);
        prop_assert_eq!(budget.spent, oracle.spent(index), "spent in {} at {}", &expected.id, now);
        prop_assert_eq!(
            budget.window.start.map(|start| key(expected.period, start)),
            match expected.period {
                Period::Total => None,
                period => Some(key(period, now)),
            }
        );
    }
    let mut remembered = 0;
    for r in &oracle.reservations {
        // The compact form's shortcuts agree with the reservation made from it.
        let got = budgets.reservation(&r.id);
        prop_assert_eq!(budgets.knows_reservation(&r.id), got.is_some());
        prop_assert_eq!(budgets.is_held(&r.id), got.as_ref().is_some_and(|got| got.status == Status::Held));
        prop_assert_eq!(budgets.reservation_identity(&r.id), got.as_ref().map(|got| &got.identity));
        match got {
            None => prop_assert!(r.forgotten, "{} forgotten too early", &r.id),
            Some(got) => {
                prop_assert!(!r.forgotten, "{} not forgotten", &r.id);
                prop_assert_eq!(&got.id, &r.id);
                prop_assert_eq!(&got.status, &r.status);
                prop_assert_eq!(got.resolved_at, r.resolved_at);
                prop_assert_eq!(got.expires_at, r.expires_at);
                let holds: Vec<(&str, u64)> = got.holds.iter().map(|h| (h.budget.as_str(), h.amount)).collect();
                let expected: Vec<(&str, u64)> =
                    r.holds.iter().map(|h| (oracle.budgets[h.budget].id.as_str(), h.amount)).collect();
                prop_assert_eq!(holds, expected);
                remembered += 1;
            }
        }
    }
    prop_assert_eq!(budgets.reservations().count(), remembered);
    prop_assert!(budgets.reservation_ids().eq(budgets.reservations().map(|r| r.id).collect::<Vec<_>>().iter()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn budgets_never_overspend_and_count_exactly(
        specs in prop::collection::vec(spec(), 0..=9),
        start in start(),
        ops in prop::collection::vec(op(), 1..=80),
    ) {
        let mut budgets = Budgets::new();
        let mut oracle = Oracle { budgets: Vec::new(), reservations: Vec::new(), spent: BTreeMap::new(), now: start };
        for (n, spec) in specs.iter().enumerate() {
            let (dimension, period) = (DIMENSIONS[spec.dimension], Period::ALL[spec.period]);
            let budget_id = format!("b{n}");
            let same_scope = oracle
                .budgets
                .iter()
                .any(|b| b.level == spec.level && b.dimension == dimension && b.period == period);
            let created = budgets.create(budget(&budget_id, LEVELS[spec.level], dimension, period, spec.limit, start));
            prop_assert_eq!(created.is_ok(), !same_scope);
            if !same_scope {
                oracle.budgets.push(OBudget { id: budget_id, level: spec.level, dimension, period, limit: spec.limit });
            }
        }
        let mut serial = 0;
        check(&budgets, &oracle)?;
        for op in &ops {
            step(&mut budgets, &mut oracle, op, &mut serial)?;
            check(&budgets, &oracle)?;
        }
    }
}

/// A settlement's status: a dimension settled at 0 is one not named.
fn settled(actual: &BTreeMap<String, u64>) -> Status {
    Status::Settled(actual.iter().filter(|(_, amount)| **amount > 0).map(|(d, a)| (d.clone(), *a)).collect())
}
