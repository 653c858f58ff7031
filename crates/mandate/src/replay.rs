//! `mandate replay`: rebuilds every tenant's budgets, reservations and
//! approvals from its log alone and compares them with the state rows the
//! server wrote beside the log. The log is the source of truth; a difference
//! means the store was changed behind the log's back (or a defect), and is
//! reported row by row with exit status 1.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use mandate_server::tenant::fold_log;
use mandate_store::Ledger;

use crate::StoreArgs;

/// How often to start again when the log grows while we read.
const ATTEMPTS: usize = 5;

/// `mandate replay`.
pub fn run(store: &StoreArgs) -> anyhow::Result<()> {
    if store.database.is_none() {
        let path = store.data.join(crate::serve::DATABASE_FILE);
        if !path.exists() {
            bail!("no Mandate store in {} (expected {})", store.data.display(), path.display());
        }
    }
    let ledger = crate::serve::open_store(store)?;
    let mut differences = 0;
    let tenants = ledger.tenants()?;
    for tenant in &tenants {
        differences += replay_tenant(ledger.as_ref(), tenant)?;
    }
    if differences > 0 {
        bail!("replay found {differences} difference(s) between the log and the store");
    }
    println!("ok: {} tenant(s); the store agrees with the log", tenants.len());
    Ok(())
}

fn replay_tenant(ledger: &dyn Ledger, tenant: &str) -> anyhow::Result<usize> {
    for _ in 0..ATTEMPTS {
        // Rows change only with entries: if the size is the same before and
        // after reading them, they are the rows of exactly that log.
        let size = ledger.size(tenant)?;
        let stored: BTreeMap<(String, String), Vec<u8>> = ledger
            .state_rows(tenant, None)?
            .into_iter()
            .map(|row| ((row.kind, row.key), row.value.unwrap_or_default()))
            .collect();
        if ledger.size(tenant)? != size {
            continue;
        }
        let state = fold_log(ledger, tenant, size).with_context(|| format!("folding the log of `{tenant}`"))?;
        let folded = state.spending.rows();
        let mut differences = 0;
        for key in folded.keys().chain(stored.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (kind, id) = key;
            match (folded.get(key), stored.get(key)) {
                (Some(a), Some(b)) if a == b => {}
                (from_log, in_store) => {
                    differences += 1;
                    println!(
                        "tenant `{tenant}`: {kind} `{id}`: the log gives {}, the store holds {}",
                        text(from_log),
                        text(in_store)
                    );
                }
            }
        }
        let count = |kind: &str, noun: &str| {
            let n = folded.keys().filter(|(k, _)| k == kind).count();
            format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
        };
        println!(
            "tenant `{tenant}`: folded {size} entries: {}, {}, {}; {}",
            count(mandate_server::spend::kinds::BUDGET, "budget"),
            count(mandate_server::spend::kinds::RESERVATION, "reservation"),
            count(mandate_server::spend::kinds::APPROVAL, "approval"),
            match differences {
                0 => "no difference".to_owned(),
                1 => "1 difference".to_owned(),
                n => format!("{n} differences"),
            }
        );
        return Ok(differences);
    }
    bail!("the log of `{tenant}` kept growing while it was read; retry, or stop the server first")
}

fn text(row: Option<&Vec<u8>>) -> String {
    row.map_or_else(|| "nothing".to_owned(), |bytes| String::from_utf8_lossy(bytes).into_owned())
}
