//! Budgets and reservations: two-phase spending that can never overspend.
//!
//! A budget limits what an identity and all its descendants may spend in one
//! dimension (`usd_cents`, `tokens`, `calls`, …) per calendar window in UTC.
//! An allowed decision *reserves* its amounts in every budget on the chain at
//! once, all or nothing; later exactly one of settle, void or expiry resolves
//! the reservation. For every budget, at every moment:
//!
//! INVARIANT (no-overspend): `spent + reserved ≤ limit`, where a reservation
//! is admitted only if `spent + reserved + amount ≤ limit` (checked
//! arithmetic: an overflow is a refusal), and settling never moves more into
//! `spent` than it takes out of `reserved`. Only lowering a limit can leave a
//! budget above it, and then it simply has no room.
//!
//! Decisions made here are functions of the state and the time passed in, so
//! folding the same log entries at the same entry times gives the same state.
//!
//! Choices where SPEC §2 is silent:
//! - `calls` counts 1 per allowed (or pending) decision as spent at once: a
//!   call that was decided on was made, and is not given back by void or
//!   expiry.
//! - A window that ends forgets its spend; reservations still held are
//!   carried into the new window (so nothing can overspend across the
//!   boundary). A reservation settled after its window ended is spent in
//!   that past window, not the current one.
//! - A resolved reservation answers a repeated resolution the same until
//!   its owner forgets it ([`Budgets::forget`]); the server forgets each at
//!   once and answers for [`RESOLVED_RETENTION`] from its log, so that its
//!   memory holds only what is held.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::identity::IdentityId;

/// The dimension that counts decisions rather than amounts.
pub const CALLS: &str = "calls";

/// How long a reservation is held when the request does not say.
pub const RESERVATION_TTL_DEFAULT: SignedDuration = SignedDuration::from_secs(300);

/// The longest a reservation may be held.
pub const RESERVATION_TTL_MAX: SignedDuration = SignedDuration::from_hours(24);

/// How long a resolved reservation answers a repeated resolution as it
/// was resolved (after that: unknown).
pub const RESOLVED_RETENTION: SignedDuration = SignedDuration::from_hours(24);

/// A budget's period: calendar windows in UTC, weeks from Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// From the top of the hour.
    Hour,
    /// From midnight.
    Day,
    /// From Monday midnight.
    Week,
    /// From the first of the month.
    Month,
    /// From the first of January.
    Year,
    /// One window for all time.
    Total,
}

impl Period {
    /// Every period, for errors that list them.
    pub const ALL: [Period; 6] = [Period::Hour, Period::Day, Period::Week, Period::Month, Period::Year, Period::Total];

    /// Reads the wire name.
    pub fn parse(text: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|period| period.as_str() == text)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
            Period::Total => "total",
        }
    }

    /// The window holding `at`.
    pub fn window(self, at: Timestamp) -> Window {
        let civil = TimeZone::UTC.to_datetime(at);
        let date = civil.date();
        let start: DateTime = match self {
            Period::Total => return Window { start: None, end: None },
            Period::Hour => date.at(civil.hour(), 0, 0, 0),
            Period::Day => date.at(0, 0, 0, 0),
            Period::Week => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                date.checked_sub(back.days()).unwrap_or(date).at(0, 0, 0, 0)
            }
            Period::Month => date.first_of_month().at(0, 0, 0, 0),
            Period::Year => date.first_of_year().at(0, 0, 0, 0),
        };
        let end = match self {
            Period::Hour => start.checked_add(1.hour()),
            Period::Day => start.checked_add(1.day()),
            Period::Week => start.checked_add(7.days()),
            Period::Month => start.checked_add(1.month()),
            Period::Year => start.checked_add(1.year()),
            Period::Total => return Window { start: None, end: None },
        };
        let utc = |civil: DateTime| TimeZone::UTC.to_timestamp(civil).ok();
        // Beyond jiff's range (year 9999) a window simply does not end.
        Window { start: utc(start), end: end.ok().and_then(utc) }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A window of a period: `[start, end)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first instant, or `None` for all time.
    pub start: Option<Timestamp>,
    /// The first instant after it, or `None` if it never ends.
    pub end: Option<Timestamp>,
}

impl Window {
    /// Whether the window has ended by `at`.
    pub fn ended_by(&self, at: Timestamp) -> bool {
        self.end.is_some_and(|end| at >= end)
    }
}

/// A day, for tests and callers that think in dates.
pub fn midnight(date: Date) -> Option<Timestamp> {
    TimeZone::UTC.to_timestamp(date.at(0, 0, 0, 0)).ok()
}

/// A budget and its counters in the current window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Its id.
    pub id: String,
    /// Whose spend (and whose descendants' spend) it limits.
    pub identity: IdentityId,
    /// What it counts.
    pub dimension: String,
    /// Its period.
    pub period: Period,
    /// The most `spent + reserved` may reach in one window.
    pub limit: u64,
    /// The window `spent` belongs to.
    pub window: Window,
    /// Settled in this window.
    pub spent: u64,
    /// Held by unresolved reservations.
    pub reserved: u64,
}

impl Budget {
    /// A new budget with nothing spent, its window the one holding `now`.
    pub fn new(
        id: String,
        identity: IdentityId,
        dimension: String,
        period: Period,
        limit: u64,
        now: Timestamp,
    ) -> Budget {
        Budget { id, identity, dimension, period, limit, window: period.window(now), spent: 0, reserved: 0 }
    }

    /// The budget as it stands at `now`: a window that ended is replaced and
    /// its spend forgotten; reservations still held stay.
    pub fn at(&self, now: Timestamp) -> Budget {
        let mut budget = self.clone();
        budget.roll(now);
        budget
    }

    fn roll(&mut self, now: Timestamp) {
        if self.window.ended_by(now) {
            self.window = self.period.window(now);
            self.spent = 0;
        }
    }

    /// `spent + reserved`, saturating.
    pub fn used(&self) -> u64 {
        self.spent.saturating_add(self.reserved)
    }

    /// Why `asked` more does not fit.
    fn shortfall(&self, asked: u64) -> Shortfall {
        Shortfall {
            budget: self.id.clone(),
            identity: self.identity.clone(),
            dimension: self.dimension.clone(),
            period: self.period,
            limit: self.limit,
            remaining: self.remaining(),
            asked,
        }
    }

    /// What may still be reserved.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used())
    }

    /// Whether `amount` more fits under the limit (INVARIANT (no-overspend)).
    fn admits(&self, amount: u64) -> bool {
        self.spent
            .checked_add(self.reserved)
            .and_then(|used| used.checked_add(amount))
            .is_some_and(|total| total <= self.limit)
    }
}

/// One budget a decision touches: what it takes from it, and the budget's
/// `spent + reserved` before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The budget.
    pub budget: String,
    /// Its dimension.
    pub dimension: String,
    /// Its limit.
    pub limit: u64,
    /// The amount taken (1 for `calls`).
    pub amount: u64,
    /// `spent + reserved` before.
    pub before: u64,
    /// `spent + reserved` after.
    pub after: u64,
}

impl Touch {
    /// Whether the amount is held by a reservation (every dimension but
    /// `calls`, which is spent at once).
    pub fn is_held(&self) -> bool {
        self.dimension != CALLS
    }
}

/// Why a budget has no room: what a `budget_exceeded` reason names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The budget.
    pub budget: String,
    /// Its identity.
    pub identity: IdentityId,
    /// Its dimension.
    pub dimension: String,
    /// Its period.
    pub period: Period,
    /// Its limit.
    pub limit: u64,
    /// What remains in it.
    pub remaining: u64,
    /// What was asked.
    pub asked: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget `{}` of `{}` ({} per {}, limit {}) has {} left, and {} were asked",
            self.budget, self.identity, self.dimension, self.period, self.limit, self.remaining, self.asked
        )
    }
}

/// A reservation's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Holding its amounts.
    Held,
    /// Settled with these actual amounts (each ≤ the held one).
    Settled(BTreeMap<String, u64>),
    /// Voided by a caller (or by a denied approval).
    Voided,
    /// Voided by time.
    Expired,
}

impl Status {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Settled(_) => "settled",
            Status::Voided => "voided",
            Status::Expired => "expired",
        }
    }
}

/// One held amount of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The budget.
    pub budget: String,
    /// Its dimension.
    pub dimension: String,
    /// The amount held.
    pub amount: u64,
    /// The budget's window when the amount was reserved: a settlement after
    /// it ended is spent in it, not in the window of the settlement.
    pub window: Window,
}

/// Amounts held for one decision until it is settled, voided or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its id.
    pub id: String,
    /// The decision that made it.
    pub decision_id: String,
    /// The acting identity.
    pub identity: IdentityId,
    /// The amounts asked, by dimension (what a settlement may not exceed).
    pub amounts: BTreeMap<String, u64>,
    /// What it holds, budget by budget.
    pub holds: Vec<Hold>,
    /// When it expires if unresolved.
    pub expires_at: Timestamp,
    /// Where it stands.
    pub status: Status,
    /// When it was resolved.
    pub resolved_at: Option<Timestamp>,
}

/// How a reservation is to be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Spend these actual amounts (dimensions not named: 0); the rest is released.
    Settle(BTreeMap<String, u64>),
    /// Release everything.
    Void,
    /// Release everything, because time ran out.
    Expire,
}

impl Resolution {
    /// The status a reservation resolved so has.
    pub fn status(&self) -> Status {
        match self {
            // A dimension settled at 0 is the same as one not named.
            Resolution::Settle(amounts) => Status::Settled(
                amounts.iter().filter(|(_, amount)| **amount > 0).map(|(d, a)| (d.clone(), *a)).collect(),
            ),
            Resolution::Void => Status::Voided,
            Resolution::Expire => Status::Expired,
        }
    }
}

/// What resolving would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Resolve it now.
    Now,
    /// It was already resolved exactly so: answer the same, change nothing.
    Repeated,
}

/// Why a resolution is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such reservation (or it was resolved long ago and forgotten).
    #[error("no reservation `{id}`")]
    Unknown {
        /// The id asked for.
        id: String,
    },
    /// It was resolved otherwise.
    #[error("reservation `{id}` is already {status}")]
    Conflict {
        /// The reservation.
        id: String,
        /// How it was resolved.
        status: &'static str,
    },
    /// A settlement names a dimension the reservation does not hold.
    #[error("reservation `{id}` holds no `{dimension}`")]
    UnknownDimension {
        /// The reservation.
        id: String,
        /// The dimension.
        dimension: String,
    },
    /// A settlement spends more than was reserved.
    #[error("reservation `{id}` holds {reserved} {dimension}, and {asked} were settled")]
    OverReserved {
        /// The reservation.
        id: String,
        /// The dimension.
        dimension: String,
        /// What was reserved.
        reserved: u64,
        /// What was asked.
        asked: u64,
    },
}

/// Why a budget cannot be created or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The id is taken.
    #[error("budget `{id}` exists")]
    Duplicate {
        /// The id.
        id: String,
    },
    /// The identity already has a budget for this dimension and period.
    #[error("`{identity}` already has a {dimension} budget per {period}: `{existing}`")]
    SameScope {
        /// The identity.
        identity: IdentityId,
        /// The dimension.
        dimension: String,
        /// The period.
        period: Period,
        /// The budget that has it.
        existing: String,
    },
    /// No such budget.
    #[error("no budget `{id}`")]
    Unknown {
        /// The id.
        id: String,
    },
}

/// A tenant's budgets and reservations.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    /// By id; a reservation's holds share the key.
    budgets: BTreeMap<Arc<str>, Budget>,
    /// Budget ids by identity, in creation order.
    by_identity: BTreeMap<IdentityId, Vec<Arc<str>>>,
    /// The dimensions of the budgets, shared by the holds and amounts that
    /// name them (only these: a request may name any dimension, and this
    /// set must not grow with requests).
    dimensions: BTreeSet<Arc<str>>,
    /// By id; the expiry index shares the key.
    reservations: BTreeMap<Arc<str>, Kept>,
    /// Held reservations by expiry.
    expiries: BTreeSet<(Timestamp, Arc<str>)>,
}

/// A reservation as kept in memory: the facts of a [`Reservation`] with its
/// id, budget ids and dimensions shared rather than copied, and the
/// resolution (rare: the server forgets a reservation once it is resolved)
/// behind a pointer. Every unsettled decision with amounts is one for up to
/// 24 h (300 s by default), so their size is the server's memory: a held
/// reservation of three holds costs the server about 0.85 KB so, against
/// 1.8 KB as a [`Reservation`] (`docs/benchmarks.md`, "Server memory").
#[derive(Debug, Clone)]
struct Kept {
    decision_id: Box<str>,
    identity: IdentityId,
    amounts: Box<[(Arc<str>, u64)]>,
    holds: Box<[KeptHold]>,
    expires_at: Timestamp,
    resolved: Option<Box<(Status, Timestamp)>>,
}

/// A [`Hold`] as kept.
#[derive(Debug, Clone)]
struct KeptHold {
    budget: Arc<str>,
    dimension: Arc<str>,
    amount: u64,
    window: Window,
}

impl Kept {
    /// The reservation `id` this is.
    fn to_reservation(&self, id: &str) -> Reservation {
        Reservation {
            id: id.to_owned(),
            decision_id: self.decision_id.to_string(),
            identity: self.identity.clone(),
            amounts: self.amounts.iter().map(|(dimension, amount)| (dimension.to_string(), *amount)).collect(),
            holds: self
                .holds
                .iter()
                .map(|hold| Hold {
                    budget: hold.budget.to_string(),
                    dimension: hold.dimension.to_string(),
                    amount: hold.amount,
                    window: hold.window,
                })
                .collect(),
            expires_at: self.expires_at,
            status: self.resolved.as_ref().map_or(Status::Held, |resolved| resolved.0.clone()),
            resolved_at: self.resolved.as_ref().map(|resolved| resolved.1),
        }
    }

    /// What it holds of `dimension`, if it asked for any.
    fn asked(&self, dimension: &str) -> Option<u64> {
        self.amounts.iter().find(|(asked, _)| &**asked == dimension).map(|(_, amount)| *amount)
    }
}

impl Budgets {
    /// No budgets.
    pub fn new() -> Budgets {
        Budgets::default()
    }

    /// Adds a budget.
    pub fn create(&mut self, budget: Budget) -> Result<(), BudgetError> {
        self.check_create(&budget)?;
        let id: Arc<str> = Arc::from(budget.id.as_str());
        self.by_identity.entry(budget.identity.clone()).or_default().push(id.clone());
        if !self.dimensions.contains(budget.dimension.as_str()) {
            self.dimensions.insert(Arc::from(budget.dimension.as_str()));
        }
        self.budgets.insert(id, budget);
        Ok(())
    }

    /// Whether [`Budgets::create`] would accept it.
    pub fn check_create(&self, budget: &Budget) -> Result<(), BudgetError> {
        if self.budgets.contains_key(budget.id.as_str()) {
            return Err(BudgetError::Duplicate { id: budget.id.clone() });
        }
        let same = self.of(&budget.identity).find(|b| b.dimension == budget.dimension && b.period == budget.period);
        if let Some(existing) = same {
            return Err(BudgetError::SameScope {
                identity: budget.identity.clone(),
                dimension: budget.dimension.clone(),
                period: budget.period,
                existing: existing.id.clone(),
            });
        }
        Ok(())
    }

    /// Changes a budget's limit (at `now`, so its window is current).
    pub fn set_limit(&mut self, id: &str, limit: u64, now: Timestamp) -> Result<(), BudgetError> {
        let budget = self.budgets.get_mut(id).ok_or_else(|| BudgetError::Unknown { id: id.to_owned() })?;
        budget.roll(now);
        budget.limit = limit;
        Ok(())
    }

    /// A budget as stored (its window possibly ended: see [`Budget::at`]).
    pub fn get(&self, id: &str) -> Option<&Budget> {
        self.budgets.get(id)
    }

    /// Every budget, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Budget> {
        self.budgets.values()
    }

    /// The budgets of one identity.
    pub fn of<'a>(&'a self, identity: &IdentityId) -> impl Iterator<Item = &'a Budget> + 'a {
        self.by_identity.get(identity).into_iter().flatten().filter_map(|id| self.budgets.get(id))
    }

    /// What a decision for `chain` with `amounts` would take, budget by
    /// budget (acting identity first), or the first budget without room.
    /// Every budget of every identity on the chain whose dimension is in
    /// `amounts`, and every `calls` budget, is in play.
    pub fn plan(
        &self,
        chain: &[IdentityId],
        amounts: &BTreeMap<String, u64>,
        now: Timestamp,
    ) -> Result<Vec<Touch>, Shortfall> {
        let mut touches = Vec::new();
        for identity in chain {
            for budget in self.of(identity) {
                let amount = match amounts.get(&budget.dimension) {
                    _ if budget.dimension == CALLS => 1,
                    Some(amount) => *amount,
                    None => continue,
                };
                let budget = budget.at(now);
                if !budget.admits(amount) {
                    return Err(budget.shortfall(amount));
                }
                let before = budget.used();
                touches.push(Touch {
                    budget: budget.id.clone(),
                    dimension: budget.dimension.clone(),
                    limit: budget.limit,
                    amount,
                    before,
                    after: before.saturating_add(amount),
                });
            }
        }
        Ok(touches)
    }

    /// Takes what `touches` say from their budgets at `now`: `calls` as
    /// spent, the rest held by a reservation `id` (made when anything is
    /// held). Touches must come from [`Budgets::plan`] at the same state; a
    /// touch that no longer fits is refused whole, changing nothing.
    pub fn take(
        &mut self,
        touches: &[Touch],
        reservation: Option<NewReservation>,
        now: Timestamp,
    ) -> Result<(), Shortfall> {
        // All or nothing: check every touch first.
        for touch in touches {
            let Some(budget) = self.budgets.get(touch.budget.as_str()) else { continue };
            let budget = budget.at(now);
            if !budget.admits(touch.amount) {
                return Err(budget.shortfall(touch.amount));
            }
        }
        let mut holds = Vec::new();
        for touch in touches {
            let Some((id, budget)) = get_with_key(&mut self.budgets, &touch.budget) else { continue };
            budget.roll(now);
            if touch.is_held() {
                budget.reserved = budget.reserved.saturating_add(touch.amount);
                let dimension = shared(&self.dimensions, &touch.dimension);
                holds.push(KeptHold { budget: id.clone(), dimension, amount: touch.amount, window: budget.window });
            } else {
                budget.spent = budget.spent.saturating_add(touch.amount);
            }
        }
        if let Some(new) = reservation {
            let id: Arc<str> = Arc::from(new.id);
            let amounts =
                new.amounts.iter().map(|(dimension, amount)| (shared(&self.dimensions, dimension), *amount)).collect();
            self.expiries.insert((new.expires_at, id.clone()));
            self.reservations.insert(
                id,
                Kept {
                    decision_id: new.decision_id.into_boxed_str(),
                    identity: new.identity,
                    amounts,
                    holds: holds.into_boxed_slice(),
                    expires_at: new.expires_at,
                    resolved: None,
                },
            );
        }
        Ok(())
    }

    /// A reservation (made for the asking: they are kept in a compact form).
    pub fn reservation(&self, id: &str) -> Option<Reservation> {
        self.reservations.get(id).map(|kept| kept.to_reservation(id))
    }

    /// Whether reservation `id` is remembered (held, or resolved and not
    /// yet forgotten), without making it.
    pub fn knows_reservation(&self, id: &str) -> bool {
        self.reservations.contains_key(id)
    }

    /// Whether reservation `id` is held.
    pub fn is_held(&self, id: &str) -> bool {
        self.reservations.get(id).is_some_and(|kept| kept.resolved.is_none())
    }

    /// The acting identity of reservation `id`.
    pub fn reservation_identity(&self, id: &str) -> Option<&IdentityId> {
        self.reservations.get(id).map(|kept| &kept.identity)
    }

    /// Every remembered reservation, by id.
    pub fn reservations(&self) -> impl Iterator<Item = Reservation> + '_ {
        self.reservations.iter().map(|(id, kept)| kept.to_reservation(id))
    }

    /// The ids of every remembered reservation, in order.
    pub fn reservation_ids(&self) -> impl Iterator<Item = &str> {
        self.reservations.keys().map(|id| &**id)
    }

    /// Held reservations whose time is up at `now`, soonest first.
    pub fn due(&self, now: Timestamp) -> impl Iterator<Item = &str> {
        self.expiries.iter().take_while(move |(at, _)| *at <= now).map(|(_, id)| &**id)
    }

    /// When the next held reservation expires.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Whether `resolution` of reservation `id` would be applied, repeated,
    /// or refused.
    pub fn check_resolution(&self, id: &str, resolution: &Resolution) -> Result<Resolve, ResolveError> {
        let reservation = self.reservations.get(id).ok_or_else(|| ResolveError::Unknown { id: id.to_owned() })?;
        // Resolved already: the same resolution is a repeat, anything else a
        // conflict, whatever its amounts.
        match reservation.resolved.as_deref() {
            None => {}
            Some((status, _)) if *status == resolution.status() => return Ok(Resolve::Repeated),
            Some((status, _)) => return Err(ResolveError::Conflict { id: id.to_owned(), status: status.as_str() }),
        }
        if let Resolution::Settle(actual) = resolution {
            for (dimension, asked) in actual {
                let reserved = reservation.asked(dimension).ok_or_else(|| ResolveError::UnknownDimension {
                    id: id.to_owned(),
                    dimension: dimension.clone(),
                })?;
                if *asked > reserved {
                    return Err(ResolveError::OverReserved {
                        id: id.to_owned(),
                        dimension: dimension.clone(),
                        reserved,
                        asked: *asked,
                    });
                }
            }
        }
        Ok(Resolve::Now)
    }

    /// Resolves reservation `id` at `now`: releases what it holds and, for
    /// a settlement, spends the actual amounts in the windows they were
    /// reserved in. A repeated resolution changes nothing.
    pub fn resolve(&mut self, id: &str, resolution: Resolution, now: Timestamp) -> Result<Resolve, ResolveError> {
        if self.check_resolution(id, &resolution)? == Resolve::Repeated {
            return Ok(Resolve::Repeated);
        }
        let Some((key, reservation)) = get_with_key(&mut self.reservations, id) else {
            return Err(ResolveError::Unknown { id: id.to_owned() });
        };
        let actual = match &resolution {
            Resolution::Settle(actual) => Some(actual),
            Resolution::Void | Resolution::Expire => None,
        };
        for hold in &reservation.holds {
            let Some(budget) = self.budgets.get_mut(&*hold.budget) else { continue };
            budget.roll(now);
            budget.reserved = budget.reserved.saturating_sub(hold.amount);
            let spend = actual.and_then(|actual| actual.get(&*hold.dimension)).copied().unwrap_or(0);
            // INVARIANT (no-overspend): spend ≤ hold.amount, checked above.
            if budget.window == hold.window {
                budget.spent = budget.spent.saturating_add(spend.min(hold.amount));
            }
        }
        self.expiries.remove(&(reservation.expires_at, key.clone()));
        reservation.resolved = Some(Box::new((resolution.status(), now)));
        Ok(Resolve::Now)
    }

    /// Forgets reservation `id` once it is resolved (a held one stays: it
    /// holds amounts), returning it as it was resolved.
    pub fn forget(&mut self, id: &str) -> Option<Reservation> {
        self.reservations.get(id)?.resolved.as_ref()?;
        self.reservations.remove(id).map(|kept| kept.to_reservation(id))
    }
}

/// The entry for `key` with its shared key, the value mutable (what
/// `BTreeMap` offers for one key only as a range of one).
fn get_with_key<'a, V>(map: &'a mut BTreeMap<Arc<str>, V>, key: &str) -> Option<(&'a Arc<str>, &'a mut V)> {
    map.range_mut::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Included(key))).next()
}

/// `dimension` shared with the budgets that have it, or a copy of its own
/// when none does (a request may name any dimension).
fn shared(dimensions: &BTreeSet<Arc<str>>, dimension: &str) -> Arc<str> {
    dimensions.get(dimension).cloned().unwrap_or_else(|| Arc::from(dimension))
}

/// What [`Budgets::take`] needs to record a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    /// Its id.
    pub id: String,
    /// The decision.
    pub decision_id: String,
    /// The acting identity.
    pub identity: IdentityId,
    /// The amounts asked.
    pub amounts: BTreeMap<String, u64>,
    /// When it expires.
    pub expires_at: Timestamp,
}
