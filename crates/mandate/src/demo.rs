//! `mandate demo`: the product's story in one screen, on a fresh embedded
//! store.
//!
//! It creates the tenant `default` the way `mandate serve` does, then drives
//! the tenant in-process (the same sequencer the HTTP API submits to): a
//! human, an agent and a sub-agent; grants handed down the chain, one of them
//! refused for being wider than its grantor's; Cedar rules, one of which asks
//! a human; daily budgets; decisions allowed and denied for each kind of
//! reason; a burst of concurrent decisions; a charge reserved and settled for
//! less, a charge approved by the human, and a budget exhausted; a revocation
//! that cuts off everything below it. Then it exports the log, verifies it
//! with the code of `mandate verify`, checks one decision's receipt alone, and
//! shows one altered byte caught and located. Every file stays in the data
//! directory, so the reader can verify by hand, replay it with `mandate replay
//! --data DIR`, or serve the store with `mandate serve --data DIR`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use mandate_core::budget::{Budget, Period};
use mandate_core::identity::IdentityId;
use mandate_core::policy::PolicySet;
use mandate_core::wire;
use mandate_log::Receipt;
use mandate_server::create_tenant;
use mandate_server::problem::Problem;
use mandate_server::tenant::{AuthorizeRequest, Op, OpResult, Tenant};
use mandate_store::{Ledger, SqliteLedger};
use serde_json::{Map, Value, json};

use crate::verify;

const TENANT: &str = "default";
/// The host part of the log's name, as `mandate serve` names new tenants.
const ORIGIN_HOST: &str = "localhost";
/// How many callers make the burst of decisions at once.
const CALLERS: u64 = 32;

const ALICE: &str = "user:alice";
const BUYER: &str = "agent:buyer";
const SEARCH: &str = "agent:buyer/search";

/// The rules the demo puts in place of a new tenant's permit-all policy.
/// Cedar permits combine: a charge over 4000 is permitted by both permits,
/// and since one of them asks for approval, the answer is `pending`.
const POLICIES: &str = r#"@id("block-gambling") forbid(principal, action, resource) when { context has category && context.category == "gambling" };
@id("big-charges-need-alice") @approval("required") permit(principal, action, resource) when { context.amounts has usd_cents && context.amounts.usd_cents > 4000 };
@id("default-permit") permit(principal, action, resource);
"#;

/// Alice's household budget: hers and everything below her.
const ALICE_DAILY: (&str, &str, u64) = ("alice-daily", ALICE, 10_000);
/// The buyer's own budget, inside hers.
const BUYER_DAILY: (&str, &str, u64) = ("buyer-daily", BUYER, 6_000);
const DIMENSION: &str = "usd_cents";
/// The first charge, reserved in section 4 and settled for less in 5.
const DUNE_CENTS: u64 = 1_899;

/// Terminal styling, only when stdout is a terminal.
struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: impl Display) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    fn bold(&self, text: impl Display) -> String {
        self.paint("1", text)
    }
    fn good(&self, text: impl Display) -> String {
        self.paint("32", text)
    }
    fn bad(&self, text: impl Display) -> String {
        self.paint("31", text)
    }
    fn dim(&self, text: impl Display) -> String {
        self.paint("2", text)
    }
    fn wait(&self, text: impl Display) -> String {
        self.paint("33", text)
    }
}

/// The tenant, driven in-process on a small runtime.
struct Demo {
    runtime: tokio::runtime::Runtime,
    tenant: Arc<Tenant>,
}

impl Demo {
    fn submit(&self, op: Op) -> OpResult {
        self.runtime.block_on(self.tenant.submit_one(op))
    }

    /// Submits a change that must succeed.
    fn change(&self, op: Op) -> Result<Map<String, Value>> {
        self.submit(op).map_err(problem)
    }

    fn authorize(&self, request: AuthorizeRequest) -> Result<Map<String, Value>> {
        self.change(Op::Authorize(Box::new(request)))
    }

    /// The demo's budgets as they stand now (committed).
    fn budgets(&self) -> Result<Vec<Budget>> {
        let now = jiff::Timestamp::now();
        // In chain order, as decisions list them.
        let ids = [BUYER_DAILY.0, ALICE_DAILY.0];
        let read = self.tenant.read(|state| {
            ids.iter().filter_map(|id| state.spending.budgets.get(id).map(|budget| budget.at(now))).collect()
        });
        self.runtime.block_on(read).map_err(problem)
    }
}

fn problem(problem: Problem) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", problem.code().as_str(), problem.detail())
}

/// Runs the demo in `data` (or a new temporary directory); the burst makes
/// `burst` decisions.
pub fn run(data: Option<PathBuf>, burst: u64) -> Result<()> {
    let dir = match data {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
            dir
        }
        None => tempfile::Builder::new().prefix("mandate-demo-").tempdir()?.keep(),
    };
    let db = dir.join("mandate.db");
    if db.exists() {
        anyhow::bail!("`{}` already holds a demo store: give --data an empty directory", dir.display());
    }
    let style = Style { color: std::io::stdout().is_terminal() };
    let out = &mut std::io::stdout().lock();

    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(&db)?);
    let admin_key = create_tenant(ledger.as_ref(), TENANT, ORIGIN_HOST)?;
    write_private(&dir.join("admin.key"), &admin_key.token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tenant = {
        let _entered = runtime.enter();
        Tenant::start(ledger.clone(), TENANT)?
    };
    let demo = Demo { runtime, tenant };

    writeln!(out, "{}", style.bold("Mandate demo: agents act on a human's authority, within limits, on the record"))?;
    writeln!(
        out,
        "  {}",
        style.dim(format!("a fresh store in {}, tenant `{TENANT}`, log `{ORIGIN_HOST}/{TENANT}`", dir.display()))
    )?;

    identities(out, &style, &demo)?;
    grants(out, &style, &demo)?;
    policies(out, &style, &demo)?;
    let allowed = decisions(out, &style, &demo, burst)?;
    let receipt_index = log_index(&allowed);
    spending(out, &style, &demo, &allowed)?;
    revocation(out, &style, &demo)?;
    the_log(out, &style, &demo, ledger.as_ref(), &dir, receipt_index)?;

    let files = ["mandate.db", "admin.key", "log.jsonl", "checkpoint", "log.pub"]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("entry-{receipt_index}.json"), format!("receipt-{receipt_index}.tlog-proof")])
        .chain(["tampered.jsonl".to_owned()])
        .collect::<Vec<_>>();
    writeln!(out, "\n{} {}", style.bold(format!("Files in {}:", dir.display())), files.join(" "))?;
    writeln!(out, "Check them by hand there, or serve the store over HTTP (its admin key is in admin.key):")?;
    writeln!(out, "  mandate verify --log log.jsonl --checkpoint checkpoint --key log.pub")?;
    writeln!(
        out,
        "  mandate verify --receipt receipt-{receipt_index}.tlog-proof --entry entry-{receipt_index}.json --key log.pub"
    )?;
    writeln!(out, "  mandate serve --data .")?;
    Ok(())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn text<'a>(answer: &'a Map<String, Value>, field: &str) -> &'a str {
    answer.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn log_index(answer: &Map<String, Value>) -> u64 {
    answer.get("log_index").and_then(Value::as_u64).unwrap_or_default()
}

fn identities(out: &mut impl Write, style: &Style, demo: &Demo) -> Result<()> {
    writeln!(out, "\n{} every agent answers to a human", style.bold("1. Identities:"))?;
    let people = [
        (ALICE, "human", None, "", "a person, the root of all authority here"),
        (BUYER, "agent", Some(ALICE), "└─ ", "her shopping agent"),
        (SEARCH, "agent", Some(BUYER), "   └─ ", "a sub-agent the buyer started"),
    ];
    for (id, kind, parent, branch, what) in people {
        let identity = wire::identity_from_json(&object(json!({"id": id, "kind": kind, "parent": parent})))?;
        let answer = demo.change(Op::CreateIdentity(identity))?;
        let name = format!("{branch}{id}");
        writeln!(out, "     {name:<25} {kind:<6} {}", style.dim(format!("{what} (log index {})", log_index(&answer))))?;
    }
    Ok(())
}

/// One grant: `(id, grantee, grantor, actions, resources, usd_cents limit)`.
type GrantSpec = (&'static str, &'static str, &'static str, &'static str, &'static str, Option<u64>);

fn grants(out: &mut impl Write, style: &Style, demo: &Demo) -> Result<()> {
    writeln!(out, "\n{} each parent hands down part of its own authority", style.bold("2. Grants:"))?;
    let grants: [GrantSpec; 4] = [
        ("alice-buyer-pay", BUYER, ALICE, "payments.charge", "merchant://*", Some(5_000)),
        ("alice-buyer-search", BUYER, ALICE, "search.*", "web://*", None),
        ("buyer-search-web", SEARCH, BUYER, "search.web", "web://*", None),
        ("buyer-search-pay", SEARCH, BUYER, "payments.charge", "merchant://books/*", Some(20_000)),
    ];
    for (id, grantee, grantor, action, resource, limit) in grants {
        let mut body = json!({"grantee": grantee, "grantor": grantor, "actions": [action], "resources": [resource]});
        if let (Some(limit), Some(fields)) = (limit, body.as_object_mut()) {
            fields.insert("limits".into(), json!({"usd_cents": limit}));
        }
        let grant = wire::grant_from_json(&object(body), id.to_owned())?;
        let limit = limit.map(|cents| format!(", at most {cents} usd_cents a call")).unwrap_or_default();
        let line = format!("{grantor} → {grantee}: {action} on {resource}{limit}");
        match demo.submit(Op::CreateGrant(grant)) {
            Ok(answer) => writeln!(out, "     {line} {}", style.dim(format!("(log index {})", log_index(&answer))))?,
            Err(refused) => {
                let json = refused.to_json();
                let field = json.get("field").and_then(Value::as_str).unwrap_or("?");
                writeln!(out, "     {line}")?;
                let code = style.bold(refused.code().as_str());
                writeln!(out, "       {} {code}, field `{field}`:", style.bad("refused:"))?;
                writeln!(out, "         {}", refused.detail())?;
            }
        }
    }
    Ok(())
}

fn policies(out: &mut impl Write, style: &Style, demo: &Demo) -> Result<()> {
    writeln!(
        out,
        "\n{} Cedar policies on top of the grants, versioned; what may be spent per day",
        style.bold("3. Rules and budgets:")
    )?;
    let set = PolicySet::new(POLICIES, None)?;
    let answer = demo.change(Op::PutPolicies(set))?;
    for line in POLICIES.lines() {
        writeln!(out, "     {}", style.dim(line))?;
    }
    let versions = demo.runtime.block_on(demo.tenant.read(|state| state.policy_versions.clone())).map_err(problem)?;
    let first = versions.first().map_or(0, |version| version.log_index);
    let hash = text(&answer, "policy_hash");
    writeln!(
        out,
        "     now version {} (sha256 {}…, log index {}); version 1, permit-all, is kept at log index {first}",
        answer.get("version").and_then(Value::as_u64).unwrap_or_default(),
        hash.get(..12).unwrap_or(hash),
        log_index(&answer),
    )?;
    let mut created = Vec::new();
    for (id, identity, limit) in [ALICE_DAILY, BUYER_DAILY] {
        let now = jiff::Timestamp::now();
        let budget =
            Budget::new(id.to_owned(), IdentityId::parse(identity)?, DIMENSION.to_owned(), Period::Day, limit, now);
        let answer = demo.change(Op::CreateBudget(budget))?;
        created.push((format!("`{id}` {limit} on {identity}"), log_index(&answer)));
    }
    let (budgets, indexes): (Vec<String>, Vec<String>) =
        created.into_iter().map(|(budget, index)| (budget, index.to_string())).unzip();
    writeln!(
        out,
        "     {DIMENSION} a day, counting each identity and all below it: {} (log index {})",
        budgets.join(", "),
        indexes.join(", ")
    )?;
    Ok(())
}

/// A question an agent puts before acting.
#[derive(Clone, Copy)]
struct Question<'a> {
    identity: &'a str,
    action: &'a str,
    resource: &'a str,
    usd_cents: Option<u64>,
    /// The merchant's category, in the request's context.
    category: Option<&'a str>,
}

impl<'a> Question<'a> {
    fn new(identity: &'a str, action: &'a str, resource: &'a str) -> Question<'a> {
        Question { identity, action, resource, usd_cents: None, category: None }
    }

    fn cents(self, usd_cents: u64) -> Question<'a> {
        Question { usd_cents: Some(usd_cents), ..self }
    }

    fn category(self, category: &'a str) -> Question<'a> {
        Question { category: Some(category), ..self }
    }

    fn request(&self) -> Result<AuthorizeRequest> {
        let context = self.category.map(|category| object(json!({"category": category}))).unwrap_or_default();
        let amounts = self.usd_cents.map(|cents| BTreeMap::from([("usd_cents".to_owned(), cents)]));
        Ok(AuthorizeRequest {
            identity: IdentityId::parse(self.identity)?,
            action: self.action.to_owned(),
            resource: self.resource.to_owned(),
            context,
            amounts: amounts.unwrap_or_default(),
            input: None,
            input_sha256: None,
            request_id: None,
            reservation_ttl: None,
            session_id: Some("demo".to_owned()),
            trace_id: None,
        })
    }
}

impl Display for Question<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} asks: {} {}", self.identity, self.action, self.resource)?;
        if let Some(cents) = self.usd_cents {
            write!(f, " usd_cents={cents}")?;
        }
        if let Some(category) = self.category {
            write!(f, " category={category}")?;
        }
        Ok(())
    }
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).map(|values| values.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// What a decision takes from each budget: `id before → after of limit`.
fn touches(answer: &Map<String, Value>) -> String {
    let touches = answer.get("budgets").and_then(Value::as_array).into_iter().flatten();
    let touch = |touch: &Value| {
        let field = |name: &str| touch.get(name).map(ToString::to_string).unwrap_or_default();
        format!(
            "{} {} → {} of {}",
            touch.get("id").and_then(Value::as_str).unwrap_or("?"),
            field("before"),
            field("after"),
            field("limit")
        )
    };
    touches.map(touch).collect::<Vec<_>>().join(", ")
}

fn id_of<'a>(answer: &'a Map<String, Value>, field: &str) -> &'a str {
    answer.get(field).and_then(|held| held.get("id")).and_then(Value::as_str).unwrap_or_default()
}

/// Asks, prints the question and the answer, and returns the answer.
fn ask(out: &mut impl Write, style: &Style, demo: &Demo, question: Question<'_>) -> Result<Map<String, Value>> {
    let answer = demo.authorize(question.request()?)?;
    writeln!(out, "     {question}")?;
    let policies = answer.get("policies");
    let determining = strings(policies.and_then(|p| p.get("determining"))).join("`, `");
    match text(&answer, "decision") {
        "allow" => {
            writeln!(
                out,
                "       {}  by policy `{determining}`, chain {}, log index {}",
                style.good("allow"),
                strings(answer.get("chain")).join(" → "),
                log_index(&answer),
            )?;
            if answer.get("reservation").is_some_and(Value::is_object) {
                writeln!(
                    out,
                    "       reserved in every budget on the chain, all or nothing: {}",
                    style.dim(touches(&answer))
                )?;
            }
        }
        "pending" => writeln!(
            out,
            "       {}  by policy `{determining}`: approval {} waits for a human (log index {})",
            style.wait("pending"),
            id_of(&answer, "approval"),
            log_index(&answer),
        )?,
        _ => {
            for reason in answer.get("reasons").and_then(Value::as_array).into_iter().flatten() {
                let code = reason.get("code").and_then(Value::as_str).unwrap_or_default();
                let message = reason.get("message").and_then(Value::as_str).unwrap_or_default();
                writeln!(out, "       {}   {}: {message}", style.bad("deny"), style.bold(code))?;
            }
        }
    }
    // Evaluation errors are never hidden (a forbid that errors denies).
    for error in policies.and_then(|p| p.get("errors")).and_then(Value::as_array).into_iter().flatten() {
        writeln!(out, "       {} {error}", style.bad("policy error:"))?;
    }
    Ok(answer)
}

/// Returns the allowed charge's answer: its reservation is settled later, and
/// its entry gets a receipt.
fn decisions(out: &mut impl Write, style: &Style, demo: &Demo, burst: u64) -> Result<Map<String, Value>> {
    writeln!(out, "\n{} an agent asks before it acts; every answer is a log entry", style.bold("4. Decisions:"))?;
    let search = "web://books.example/search?q=dune";
    let charge = |resource| Question::new(BUYER, "payments.charge", resource);
    let allowed = ask(out, style, demo, charge("merchant://books/dune").cents(DUNE_CENTS))?;
    ask(out, style, demo, Question::new(SEARCH, "search.web", search))?;
    ask(out, style, demo, charge("merchant://books/box-set").cents(12_000))?;
    ask(out, style, demo, Question::new(SEARCH, "payments.charge", "merchant://books/dune").cents(1_899))?;
    ask(out, style, demo, charge("merchant://lucky-casino").cents(500).category("gambling"))?;
    ask(out, style, demo, Question::new("agent:mallory", "payments.charge", "merchant://books/dune").cents(1_899))?;

    let started = Instant::now();
    let allowed_in_burst = burst_of_searches(demo, burst)?;
    let elapsed = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "     then {burst} searches from {CALLERS} concurrent callers: {allowed_in_burst} allowed in {elapsed:.2} s ({:.0}/s), each logged before its answer",
        burst as f64 / elapsed.max(1e-9),
    )?;
    Ok(allowed)
}

/// `count` decisions from [`CALLERS`] concurrent callers; returns how many
/// were allowed.
fn burst_of_searches(demo: &Demo, count: u64) -> Result<u64> {
    demo.runtime.block_on(async {
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let tenant = demo.tenant.clone();
            callers.spawn(async move {
                let mut allowed = 0u64;
                for n in (caller..count).step_by(usize::try_from(CALLERS).unwrap_or(1)) {
                    let resource = format!("web://books.example/search?q=book-{n}");
                    let request = Question::new(SEARCH, "search.web", &resource).request()?;
                    let answer = tenant.submit_one(Op::Authorize(Box::new(request))).await.map_err(problem)?;
                    allowed += u64::from(text(&answer, "decision") == "allow");
                }
                anyhow::Ok(allowed)
            });
        }
        let mut allowed = 0;
        while let Some(caller) = callers.join_next().await {
            allowed += caller.context("a caller failed")??;
        }
        anyhow::Ok(allowed)
    })
}

/// A budget's counters: `reserved R, spent S, remaining X`.
fn counters(budget: &Budget) -> String {
    format!("reserved {}, spent {}, remaining {}", budget.reserved, budget.spent, budget.remaining())
}

/// Settles a reservation for `usd_cents`; returns the settlement's log index.
fn settle(demo: &Demo, reservation: &str, usd_cents: u64) -> Result<u64> {
    let amounts = BTreeMap::from([(DIMENSION.to_owned(), usd_cents)]);
    let answer = demo.change(Op::Settle { id: reservation.to_owned(), amounts })?;
    Ok(log_index(&answer))
}

/// A charge settled for less than it reserved, a charge a human approves,
/// and a budget exhausted.
fn spending(out: &mut impl Write, style: &Style, demo: &Demo, allowed: &Map<String, Value>) -> Result<()> {
    writeln!(out, "\n{} reserve before acting, settle after; no budget ever goes over", style.bold("5. Spending:"))?;
    let before = demo.budgets()?;
    let (reserved, paid) = (DUNE_CENTS, 1_500);
    let index = settle(demo, id_of(allowed, "reservation"), paid)?;
    writeln!(
        out,
        "     the bookshop took {paid} of the {reserved} held: agent:buyer settles (log index {index}), {} released",
        reserved.saturating_sub(paid)
    )?;
    for (before, after) in before.iter().zip(demo.budgets()?) {
        writeln!(out, "       {:<12} {}  →  {}", before.id, counters(before), style.good(counters(&after)))?;
    }

    let big = 4_500;
    let pending = ask(out, style, demo, Question::new(BUYER, "payments.charge", "merchant://garden/mower").cents(big))?;
    anyhow::ensure!(text(&pending, "decision") == "pending", "the big charge was not sent for approval");
    let approval = id_of(&pending, "approval").to_owned();
    let approved = demo.change(Op::ResolveApproval { id: approval, approve: true, by: ALICE.to_owned() })?;
    let index = settle(demo, id_of(&pending, "reservation"), big)?;
    let summary = demo.budgets()?.iter().map(|b| format!("{} {} of {}", b.id, b.spent, b.limit)).collect::<Vec<_>>();
    writeln!(
        out,
        "     {ALICE} {} it (log index {}); the {big} held meanwhile is paid and settled (log index {index}): spent {}",
        style.good(text(&approved, "status")),
        log_index(&approved),
        summary.join(", ")
    )?;
    ask(out, style, demo, Question::new(BUYER, "payments.charge", "merchant://books/atlas").cents(1_200))?;
    Ok(())
}

fn revocation(out: &mut impl Write, style: &Style, demo: &Demo) -> Result<()> {
    writeln!(out, "\n{} withdrawing a human's authority cuts off all delegated from it", style.bold("6. Revocation:"))?;
    let answer = demo.change(Op::RevokeIdentity(IdentityId::parse(ALICE)?))?;
    let cut: Vec<&str> = answer
        .get("revoked_descendants")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    writeln!(out, "     {ALICE} revoked (log index {}), cutting off {}", log_index(&answer), cut.join(", "))?;
    ask(out, style, demo, Question::new(SEARCH, "search.web", "web://books.example/search?q=dune"))?;
    Ok(())
}

fn the_log(
    out: &mut impl Write,
    style: &Style,
    demo: &Demo,
    ledger: &dyn Ledger,
    dir: &Path,
    index: u64,
) -> Result<()> {
    writeln!(out, "\n{} anyone holding its public key can check it, offline", style.bold("7. The log:"))?;
    let signed = ledger.sign_checkpoint(TENANT, demo.tenant.signer())?;
    let key = demo.tenant.signer().verifier().clone();
    std::fs::write(dir.join("checkpoint"), &signed.note)?;
    std::fs::write(dir.join("log.pub"), format!("{key}\n"))?;
    let exported = dir.join("log.jsonl");
    export(ledger, &exported)?;
    writeln!(
        out,
        "     wrote log.jsonl ({} entries), checkpoint (signed, Ed25519) and log.pub (the verifier key)",
        signed.checkpoint.size
    )?;
    let checkpoint = Some(dir.join("checkpoint"));
    let summary = verify::run(&verify::Target::Log { log: exported.clone(), checkpoint, previous: None }, &key)?;
    let verified = style.good(format!("verified {} entries", signed.checkpoint.size));
    writeln!(out, "     {verified} with the code of `mandate verify`:")?;
    writeln!(out, "       {}", style.dim(summary))?;

    let entry = ledger.entries(TENANT, index, index + 1)?.pop().context("the allowed charge's entry is missing")?;
    let receipt = Receipt {
        extra: None,
        index,
        proof: ledger.inclusion_proof(TENANT, index, signed.checkpoint.size)?,
        checkpoint_note: signed.note.clone(),
    };
    let receipt_path = dir.join(format!("receipt-{index}.tlog-proof"));
    let entry_path = dir.join(format!("entry-{index}.json"));
    std::fs::write(&receipt_path, receipt.to_text())?;
    std::fs::write(&entry_path, [entry.bytes.as_slice(), b"\n"].concat())?;
    let summary = verify::run(&verify::Target::Receipt { receipt: receipt_path, entry: entry_path }, &key)?;
    writeln!(
        out,
        "     the allowed charge's receipt (entry-{index}.json + receipt-{index}.tlog-proof, {} hashes), checked alone:",
        receipt.proof.len()
    )?;
    writeln!(out, "       {}", style.good(summary))?;

    let tampered = dir.join("tampered.jsonl");
    let (before, after) = tamper(&exported, &tampered, index)?;
    let target = verify::Target::Log { log: tampered, checkpoint: Some(dir.join("checkpoint")), previous: None };
    let caught = match verify::run(&target, &key) {
        Ok(summary) => anyhow::bail!("the tampered log verified, which must never happen: {summary}"),
        Err(error) => error.to_string(),
    };
    writeln!(out, "     one byte changed in a copy, tampered.jsonl ({before} -> {after} in entry {index}):")?;
    writeln!(out, "       {}", style.bad(format!("verification failed: {caught}")))?;
    Ok(())
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{text}")?;
    Ok(())
}

fn export(ledger: &dyn Ledger, path: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let size = ledger.size(TENANT)?;
    mandate_store::for_each_entry(ledger, TENANT, size, |entry| -> Result<()> {
        file.write_all(&entry.bytes)?;
        Ok(file.write_all(b"\n")?)
    })?;
    file.flush()?;
    Ok(())
}

/// Copies the log, changing one digit of the amount of entry `index`.
fn tamper(from: &Path, to: &Path, index: u64) -> Result<(String, String)> {
    let text = std::fs::read_to_string(from)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = lines.get_mut(usize::try_from(index)?).context("the entry to alter is missing")?;
    let start = line.find("\"usd_cents\":").context("the entry has no amount")? + "\"usd_cents\":".len();
    let digits: String = line.get(start..).unwrap_or_default().chars().take_while(char::is_ascii_digit).collect();
    let altered = (digits.parse::<u64>()? + 100).to_string();
    line.replace_range(start..start + digits.len(), &altered);
    std::fs::write(to, lines.join("\n") + "\n")?;
    Ok((format!("usd_cents {digits}"), format!("usd_cents {altered}")))
}
