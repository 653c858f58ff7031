//! The spending part of a tenant's state: budgets, reservations and
//! approvals, folded from the log like the rest (see `state.rs`). Request
//! ids and recent decisions are the store's to remember (`recent.rs`).
//!
//! Entry bodies:
//!
//! | type | body |
//! |---|---|
//! | `budget.created` | `id`, `identity`, `dimension`, `period`, `limit` |
//! | `budget.updated` | `id`, `limit` |
//! | `decision` | its `budgets` touches (`before`/`after` give each amount), `reservation` (`id`, `expires_at`), `approval` (`id`, `expires_at`), and `request` (with `request_id`) |
//! | `reservation.settled` | `id`, `amounts` |
//! | `reservation.voided` | `id` |
//! | `reservation.expired` | `id` |
//! | `approval.approved`, `approval.denied` | `id`, `by` (a denial also voids its reservation) |
//! | `approval.expired` | `id` |
//!
//! Everything here changes only by those entries, at their entry times, so
//! folding the log again gives the same state, and the same rows (`rows`)
//! that the sequencer writes beside the log for `mandate replay` to compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use mandate_core::budget::{self, Budget, Budgets, NewReservation, Period, Resolution, Touch};
use mandate_core::identity::IdentityId;
use serde_json::{Map, Value};

/// The kinds of state rows written beside the log.
pub mod kinds {
    /// A budget's definition and counters.
    pub const BUDGET: &str = "budget";
    /// A reservation (held or recently resolved).
    pub const RESERVATION: &str = "reservation";
    /// An approval.
    pub const APPROVAL: &str = "approval";
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for a human or an admin.
    Pending,
    /// Approved: the action may go ahead.
    Approved,
    /// Denied: its reservation was voided.
    Denied,
    /// Nobody answered in time.
    Expired,
}

impl ApprovalStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        [ApprovalStatus::Pending, ApprovalStatus::Approved, ApprovalStatus::Denied, ApprovalStatus::Expired]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// A pending decision waiting for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Its id.
    pub id: String,
    /// The decision that asked for it.
    pub decision_id: String,
    /// The decision's entry.
    pub log_index: u64,
    /// The chain, acting identity first.
    pub chain: Vec<IdentityId>,
    /// What was asked.
    pub action: String,
    /// On what.
    pub resource: String,
    /// With which amounts.
    pub amounts: BTreeMap<String, u64>,
    /// The reservation it holds, if any.
    pub reservation: Option<String>,
    /// When it expires unanswered.
    pub expires_at: Timestamp,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who answered it.
    pub resolved_by: Option<String>,
    /// The entry that answered it (or recorded its expiry).
    pub resolved_log_index: Option<u64>,
}

/// Budgets, reservations and approvals.
#[derive(Debug, Clone, Default)]
pub struct Spending {
    /// Budgets and reservations.
    pub budgets: Budgets,
    /// Approvals by id (resolved ones are kept: they are few and audited).
    pub approvals: BTreeMap<String, Approval>,
    approval_expiries: BTreeSet<(Timestamp, String)>,
    /// The reservation the last entry resolved, as it was resolved: the
    /// state forgets it at once (its entries answer for it afterwards:
    /// `recent.rs`), and the sequencer answers with it.
    just_resolved: Option<budget::Reservation>,
    /// Approval id by the reservation it holds.
    approval_of_reservation: HashMap<String, String>,
    /// Rows changed since the last [`Spending::take_dirty`].
    dirty: BTreeSet<(&'static str, String)>,
}

/// RFC 8785 bytes of an object. Everything here holds only integers within
/// ±2^53 (amounts are checked on the way in), so the fallback to serde's
/// own bytes is never taken; it keeps a defect from becoming a panic.
fn canonical(object: &Map<String, Value>) -> Vec<u8> {
    mandate_log::json::canonicalize_object(object).unwrap_or_else(|_| serde_json::to_vec(object).unwrap_or_default())
}

impl Spending {
    /// A budget to create, checked against the state.
    pub fn check_budget(&self, budget: &Budget) -> Result<(), budget::BudgetError> {
        self.budgets.check_create(budget)
    }

    /// The reservation the last entry folded in resolved, if it did.
    pub fn take_just_resolved(&mut self) -> Option<budget::Reservation> {
        self.just_resolved.take()
    }

    /// The approval that holds this reservation, if any.
    pub fn approval_of(&self, reservation: &str) -> Option<&Approval> {
        self.approval_of_reservation.get(reservation).and_then(|id| self.approvals.get(id))
    }

    /// Held reservations or pending approvals whose time is up.
    pub fn anything_due(&self, now: Timestamp) -> bool {
        self.budgets.next_expiry().is_some_and(|at| at <= now)
            || self.approval_expiries.first().is_some_and(|(at, _)| *at <= now)
    }

    /// At most `max` of the expiry entries due at `now`: `(type, id)`,
    /// approvals first, soonest first.
    pub fn due(&self, now: Timestamp, max: usize) -> Vec<(&'static str, String)> {
        let approvals = self
            .approval_expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| (crate::state::types::APPROVAL_EXPIRED, id.clone()));
        let reservations = self.budgets.due(now).map(|id| (crate::state::types::RESERVATION_EXPIRED, id.to_owned()));
        approvals.chain(reservations).take(max).collect()
    }

    /// Whether an expiry [`Spending::due`] listed is still to be written:
    /// an approval's expiry also expires its reservation, which may be
    /// listed after it.
    pub fn still_due(&self, entry_type: &str, id: &str) -> bool {
        match entry_type {
            crate::state::types::APPROVAL_EXPIRED => {
                self.approvals.get(id).is_some_and(|approval| approval.status == ApprovalStatus::Pending)
            }
            _ => self.budgets.is_held(id),
        }
    }

    /// The rows changed since the last call, with their current values
    /// (`None`: deleted).
    pub fn take_dirty(&mut self) -> Vec<(&'static str, String, Option<Vec<u8>>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|(kind, key)| {
                let value = self.row(kind, &key).map(|object| canonical(&object));
                (kind, key, value)
            })
            .collect()
    }

    /// Every row, as `mandate replay` compares them: `(kind, key) → bytes`.
    pub fn rows(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let budgets = self.budgets.iter().map(|b| (kinds::BUDGET, b.id.clone()));
        let reservations = self.budgets.reservation_ids().map(|id| (kinds::RESERVATION, id.to_owned()));
        let approvals = self.approvals.keys().map(|id| (kinds::APPROVAL, id.clone()));
        budgets
            .chain(reservations)
            .chain(approvals)
            .filter_map(|(kind, key)| {
                let value = canonical(&self.row(kind, &key)?);
                Some(((kind.to_owned(), key), value))
            })
            .collect()
    }

    fn row(&self, kind: &str, key: &str) -> Option<Map<String, Value>> {
        match kind {
            kinds::BUDGET => self.budgets.get(key).map(budget_row),
            kinds::RESERVATION => self.budgets.reservation(key).as_ref().map(reservation_view),
            kinds::APPROVAL => self.approvals.get(key).map(approval_view),
            _ => None,
        }
    }

    /// Folds in a `budget.created` entry.
    pub fn apply_budget_created(&mut self, body: &Map<String, Value>, now: Timestamp) -> Result<(), String> {
        let budget = budget_from_body(body, now)?;
        let id = budget.id.clone();
        self.budgets.create(budget).map_err(|e| e.to_string())?;
        self.dirty.insert((kinds::BUDGET, id));
        Ok(())
    }

    /// Folds in a `budget.updated` entry.
    pub fn apply_budget_updated(&mut self, body: &Map<String, Value>, now: Timestamp) -> Result<(), String> {
        let id = text(body, "id")?;
        let limit = amount(body, "limit")?;
        self.budgets.set_limit(id, limit, now).map_err(|e| e.to_string())?;
        self.dirty.insert((kinds::BUDGET, id.to_owned()));
        Ok(())
    }

    /// Folds in a `decision` entry: its budget touches, reservation and
    /// approval.
    pub fn apply_decision(&mut self, index: u64, body: &Map<String, Value>, now: Timestamp) -> Result<(), String> {
        let request = body.get("request").and_then(Value::as_object).ok_or("`request` is missing")?;
        let identity = IdentityId::parse(text(request, "identity")?).map_err(|e| e.to_string())?;
        let outcome = text(body, "decision")?;
        if outcome == "deny" {
            return Ok(());
        }
        let amounts = match request.get("amounts") {
            None => BTreeMap::new(),
            Some(value) => amounts(value, "request.amounts")?,
        };
        let decision_id = text(body, "decision_id")?.to_owned();
        let touches = touches(body)?;
        let reservation = match body.get("reservation") {
            None | Some(Value::Null) => None,
            Some(Value::Object(object)) => Some(NewReservation {
                id: text(object, "id")?.to_owned(),
                decision_id: decision_id.clone(),
                identity: identity.clone(),
                amounts: amounts.clone(),
                expires_at: timestamp(object, "expires_at")?,
            }),
            Some(_) => return Err("`reservation` is not an object".into()),
        };
        let reservation_id = reservation.as_ref().map(|r| r.id.clone());
        self.budgets.take(&touches, reservation, now).map_err(|shortfall| shortfall.to_string())?;
        for touch in &touches {
            self.dirty.insert((kinds::BUDGET, touch.budget.clone()));
        }
        if let Some(id) = &reservation_id {
            self.dirty.insert((kinds::RESERVATION, id.clone()));
        }
        if let Some(Value::Object(object)) = body.get("approval") {
            let chain = body
                .get("chain")
                .and_then(Value::as_array)
                .ok_or("`chain` is missing")?
                .iter()
                .map(|id| id.as_str().ok_or("bad chain").and_then(|id| IdentityId::parse(id).map_err(|_| "bad chain")))
                .collect::<Result<Vec<_>, _>>()?;
            let approval = Approval {
                id: text(object, "id")?.to_owned(),
                decision_id,
                log_index: index,
                chain,
                action: text(request, "action")?.to_owned(),
                resource: text(request, "resource")?.to_owned(),
                amounts,
                reservation: reservation_id,
                expires_at: timestamp(object, "expires_at")?,
                status: ApprovalStatus::Pending,
                resolved_by: None,
                resolved_log_index: None,
            };
            self.approval_expiries.insert((approval.expires_at, approval.id.clone()));
            if let Some(reservation) = &approval.reservation {
                self.approval_of_reservation.insert(reservation.clone(), approval.id.clone());
            }
            self.dirty.insert((kinds::APPROVAL, approval.id.clone()));
            self.approvals.insert(approval.id.clone(), approval);
        }
        Ok(())
    }

    /// Folds in a reservation's settlement, void or expiry.
    pub fn apply_resolution(&mut self, id: &str, resolution: Resolution, now: Timestamp) -> Result<(), String> {
        self.budgets.resolve(id, resolution, now).map_err(|e| e.to_string())?;
        // INVARIANT (resolved-forgotten): only held reservations are in
        // memory; a resolved one's row is deleted with the entry that
        // resolved it, and the log answers for it (`recent.rs`).
        self.just_resolved = self.budgets.forget(id);
        // The budgets it held changed.
        let held = self.just_resolved.iter().flat_map(|resolved| &resolved.holds);
        self.dirty.extend(held.map(|hold| (kinds::BUDGET, hold.budget.clone())));
        self.dirty.insert((kinds::RESERVATION, id.to_owned()));
        Ok(())
    }

    /// Folds in an approval's answer or expiry. A denial or an expiry voids
    /// (or expires) its reservation if that is still held.
    pub fn apply_approval(
        &mut self,
        index: u64,
        id: &str,
        status: ApprovalStatus,
        by: Option<&str>,
        now: Timestamp,
    ) -> Result<(), String> {
        let approval = self.approvals.get_mut(id).ok_or_else(|| format!("no approval `{id}`"))?;
        if approval.status != ApprovalStatus::Pending {
            return Err(format!("approval `{id}` is already {}", approval.status.as_str()));
        }
        approval.status = status;
        approval.resolved_by = by.map(str::to_owned);
        approval.resolved_log_index = Some(index);
        self.approval_expiries.remove(&(approval.expires_at, approval.id.clone()));
        self.dirty.insert((kinds::APPROVAL, id.to_owned()));
        let reservation = approval.reservation.clone();
        let release = match status {
            ApprovalStatus::Denied => Some(Resolution::Void),
            ApprovalStatus::Expired => Some(Resolution::Expire),
            ApprovalStatus::Pending | ApprovalStatus::Approved => None,
        };
        if let (Some(reservation), Some(resolution)) = (reservation, release) {
            let held = self.budgets.is_held(&reservation);
            if held {
                self.apply_resolution(&reservation, resolution, now)?;
            }
        }
        Ok(())
    }
}

fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    body.get(field).and_then(Value::as_str).ok_or_else(|| format!("`{field}` is missing or not a string"))
}

fn amount(body: &Map<String, Value>, field: &str) -> Result<u64, String> {
    body.get(field).and_then(Value::as_u64).ok_or_else(|| format!("`{field}` is not a non-negative integer"))
}

/// The reservation a decision entry made, as it was made (held), from the
/// entry alone: for answering after it is resolved and forgotten
/// (`recent.rs`). Its holds' windows are not in the entry and are left
/// open; nothing reads them from here.
pub fn decided_reservation(body: &Map<String, Value>) -> Result<Option<budget::Reservation>, String> {
    let Some(Value::Object(object)) = body.get("reservation") else { return Ok(None) };
    let request = body.get("request").and_then(Value::as_object).ok_or("`request` is missing")?;
    let holds = touches(body)?
        .into_iter()
        .filter(Touch::is_held)
        .map(|touch| budget::Hold {
            budget: touch.budget,
            dimension: touch.dimension,
            amount: touch.amount,
            window: budget::Window { start: None, end: None },
        })
        .collect();
    Ok(Some(budget::Reservation {
        id: text(object, "id")?.to_owned(),
        decision_id: text(body, "decision_id")?.to_owned(),
        identity: IdentityId::parse(text(request, "identity")?).map_err(|e| e.to_string())?,
        amounts: match request.get("amounts") {
            None => BTreeMap::new(),
            Some(value) => amounts(value, "request.amounts")?,
        },
        holds,
        expires_at: timestamp(object, "expires_at")?,
        status: budget::Status::Held,
        resolved_at: None,
    }))
}

fn timestamp(body: &Map<String, Value>, field: &str) -> Result<Timestamp, String> {
    text(body, field)?.parse().map_err(|e| format!("`{field}`: {e}"))
}

/// Amounts by dimension from a JSON object.
pub fn amounts(value: &Value, field: &str) -> Result<BTreeMap<String, u64>, String> {
    let object = value.as_object().ok_or_else(|| format!("`{field}` is not an object"))?;
    object
        .iter()
        .map(|(dimension, amount)| {
            amount
                .as_u64()
                .map(|amount| (dimension.clone(), amount))
                .ok_or_else(|| format!("`{field}.{dimension}` is not a non-negative integer"))
        })
        .collect()
}

/// A decision body's budget touches.
fn touches(body: &Map<String, Value>) -> Result<Vec<Touch>, String> {
    let Some(list) = body.get("budgets").and_then(Value::as_array) else {
        return Err("`budgets` is missing".into());
    };
    list.iter()
        .map(|touch| {
            let touch = touch.as_object().ok_or("a budget touch is not an object")?;
            let before = amount(touch, "before")?;
            let after = amount(touch, "after")?;
            Ok(Touch {
                budget: text(touch, "id")?.to_owned(),
                dimension: text(touch, "dimension")?.to_owned(),
                limit: amount(touch, "limit")?,
                amount: after.checked_sub(before).ok_or("a touch's `after` is below its `before`")?,
                before,
                after,
            })
        })
        .collect()
}

/// A touch as a decision body records it.
pub fn touch_json(touch: &Touch) -> Value {
    let mut object = Map::new();
    object.insert("after".into(), Value::from(touch.after));
    object.insert("before".into(), Value::from(touch.before));
    object.insert("dimension".into(), Value::from(touch.dimension.as_str()));
    object.insert("id".into(), Value::from(touch.budget.as_str()));
    object.insert("limit".into(), Value::from(touch.limit));
    Value::Object(object)
}

/// A budget from a `budget.created` body.
pub fn budget_from_body(body: &Map<String, Value>, now: Timestamp) -> Result<Budget, String> {
    let identity = IdentityId::parse(text(body, "identity")?).map_err(|e| e.to_string())?;
    let period = Period::parse(text(body, "period")?).ok_or("unknown `period`")?;
    Ok(Budget::new(
        text(body, "id")?.to_owned(),
        identity,
        text(body, "dimension")?.to_owned(),
        period,
        amount(body, "limit")?,
        now,
    ))
}

/// A `budget.created` body.
pub fn budget_body(budget: &Budget) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("dimension".into(), Value::from(budget.dimension.as_str()));
    body.insert("id".into(), Value::from(budget.id.as_str()));
    body.insert("identity".into(), Value::from(budget.identity.to_string()));
    body.insert("limit".into(), Value::from(budget.limit));
    body.insert("period".into(), Value::from(budget.period.as_str()));
    body
}

fn time_value(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |at| Value::from(crate::tenant::entry_time(at)))
}

fn window_json(window: budget::Window) -> Value {
    let mut object = Map::new();
    object.insert("end".into(), time_value(window.end));
    object.insert("start".into(), time_value(window.start));
    Value::Object(object)
}

/// A budget's stored row: its counters as of the last entry that changed it.
fn budget_row(budget: &Budget) -> Map<String, Value> {
    let mut row = budget_body(budget);
    row.insert("reserved".into(), Value::from(budget.reserved));
    row.insert("spent".into(), Value::from(budget.spent));
    row.insert("window".into(), window_json(budget.window));
    row
}

/// A budget as the API shows it at `now` (SPEC §4): the current window,
/// `spent`, `reserved` and `remaining` in it.
pub fn budget_view(budget: &Budget, now: Timestamp) -> Map<String, Value> {
    let current = budget.at(now);
    let mut view = budget_row(&current);
    view.insert("remaining".into(), Value::from(current.remaining()));
    view
}

fn amounts_json(amounts: &BTreeMap<String, u64>) -> Value {
    Value::Object(amounts.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect())
}

/// A reservation as the API shows it (and as its row is stored).
pub fn reservation_view(reservation: &budget::Reservation) -> Map<String, Value> {
    let mut view = Map::new();
    view.insert("amounts".into(), amounts_json(&reservation.amounts));
    view.insert("decision_id".into(), Value::from(reservation.decision_id.as_str()));
    view.insert("expires_at".into(), Value::from(crate::tenant::entry_time(reservation.expires_at)));
    view.insert(
        "holds".into(),
        Value::Array(
            reservation
                .holds
                .iter()
                .map(|hold| {
                    let mut object = Map::new();
                    object.insert("amount".into(), Value::from(hold.amount));
                    object.insert("budget".into(), Value::from(hold.budget.as_str()));
                    Value::Object(object)
                })
                .collect(),
        ),
    );
    view.insert("id".into(), Value::from(reservation.id.as_str()));
    view.insert("identity".into(), Value::from(reservation.identity.to_string()));
    view.insert("resolved_at".into(), time_value(reservation.resolved_at));
    let settled = match &reservation.status {
        budget::Status::Settled(amounts) => amounts_json(amounts),
        _ => Value::Null,
    };
    view.insert("settled".into(), settled);
    view.insert("status".into(), Value::from(reservation.status.as_str()));
    view
}

/// An approval as the API shows it (and as its row is stored).
pub fn approval_view(approval: &Approval) -> Map<String, Value> {
    let mut view = Map::new();
    view.insert("action".into(), Value::from(approval.action.as_str()));
    view.insert("amounts".into(), amounts_json(&approval.amounts));
    view.insert("chain".into(), Value::Array(approval.chain.iter().map(|id| Value::from(id.to_string())).collect()));
    view.insert("decision_id".into(), Value::from(approval.decision_id.as_str()));
    view.insert("decision_log_index".into(), Value::from(approval.log_index));
    view.insert("expires_at".into(), Value::from(crate::tenant::entry_time(approval.expires_at)));
    view.insert("id".into(), Value::from(approval.id.as_str()));
    view.insert("reservation".into(), approval.reservation.as_deref().map_or(Value::Null, Value::from));
    view.insert("resolved_by".into(), approval.resolved_by.as_deref().map_or(Value::Null, Value::from));
    view.insert("resource".into(), Value::from(approval.resource.as_str()));
    view.insert("status".into(), Value::from(approval.status.as_str()));
    view
}
