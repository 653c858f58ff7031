//! `mandate bench`: a load generator for Mandate's HTTP API.
//!
//! It sets up a realistic tenant through the API (a chain of three
//! identities, grants, twenty Cedar policies, a budget on each identity of
//! the chain), then drives `POST /v1/authorize` (and, with `--settle`, the
//! settlement of each reservation) from N keep-alive connections for a fixed
//! time, spread over every `--url` given (several servers on one PostgreSQL
//! database, say). Without `--url` it starts a server in this process on a
//! temporary embedded store (or on `--database`).
//!
//! Flat out (the default), each connection sends its next request as soon as
//! the last is answered: that measures throughput. With `--rate`, requests
//! are sent on a fixed schedule and a request that had to wait for its
//! connection is counted from when it was *due*, so a stall is charged to
//! every request it delays (no coordinated omission); one whose connection
//! was free is counted from when it was sent (the gap is the client's own
//! timer, late by up to a millisecond): that measures latency at a given load.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits),
//! one for the whole run and one per second. The report gives throughput and
//! p50/p90/p99/p99.9/max of the decisions made after the warm-up; `--json`
//! writes the same as JSON with the per-second series and the latency
//! distribution, and `--chart` draws both as an SVG a person can read:
//! latency over time (p50, p99, max per second) and the distribution
//! (latency by percentile). A progress bar shows on a terminal.
//!
//! `--floor` sends `GET /healthz` instead of decisions, on the same
//! connections and schedule: what one HTTP exchange between this client and
//! the server costs on this machine, which a decision's latency includes.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::StoreArgs;
use crate::connection::Connection;

/// `mandate bench` options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A server to load (repeat for several servers sharing one database).
    /// Without it, a server is started in this process.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// The admin key of the tenant to set up and load (needed with `--url`).
    #[arg(long, value_name = "KEY", env = "MANDATE_KEY")]
    key: Option<String>,
    /// Where the in-process server keeps its store (by default a new
    /// temporary data directory, removed afterwards).
    #[command(flatten)]
    store: StoreArgs,
    /// Keep-alive connections, spread over the servers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4_096))]
    connections: u64,
    /// How long to measure, in seconds (after the warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    duration: u64,
    /// How long to run before measuring, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Requests per second in total, on a fixed schedule (default: flat out).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: Option<u64>,
    /// Settle each reservation after its decision (a second request).
    #[arg(long)]
    settle: bool,
    /// Send `GET /healthz` instead of decisions: the floor of one HTTP
    /// exchange with the server, which nothing is decided or written in.
    #[arg(long, conflicts_with = "settle")]
    floor: bool,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw latency over time and the latency distribution to this SVG file.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
}

/// The percentiles the distribution reports and draws.
const PERCENTILES: [f64; 9] = [0.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0];

/// What one connection measured.
struct Tally {
    latencies: Histogram<u64>,
    /// One histogram per measured second.
    per_second: Vec<Histogram<u64>>,
    allowed: u64,
    denied: u64,
    failed: u64,
    settled: u64,
}

impl Tally {
    fn new(seconds: u64) -> anyhow::Result<Tally> {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).context("making a histogram");
        Ok(Tally {
            latencies: histogram()?,
            per_second: (0..seconds).map(|_| histogram()).collect::<anyhow::Result<_>>()?,
            allowed: 0,
            denied: 0,
            failed: 0,
            settled: 0,
        })
    }

    fn add(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latencies.add(&other.latencies).context("merging histograms")?;
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            mine.add(theirs).context("merging histograms")?;
        }
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.failed += other.failed;
        self.settled += other.settled;
        Ok(())
    }
}

/// `mandate bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let _server_dir;
    let (urls, key) = if args.urls.is_empty() {
        let (dir, url, key) = start_server(args.store.clone()).await?;
        _server_dir = dir;
        (vec![url], key)
    } else {
        let Some(key) = args.key.clone() else { bail!("--url needs --key (or MANDATE_KEY): the tenant's admin key") };
        (args.urls.clone(), key)
    };
    let addrs: Vec<String> = urls.iter().map(|url| address(url)).collect::<anyhow::Result<_>>()?;
    let first = addrs.first().context("no server to load")?;
    let agent = set_up(first, &key).await.context("setting up the tenant")?;
    eprintln!(
        "mandate bench: {} connection(s) over {} server(s), {} s warm-up, {} s measured, {}",
        args.connections,
        addrs.len(),
        args.warmup,
        args.duration,
        args.rate.map_or("flat out".to_owned(), |rate| format!("{rate} requests/s"))
    );
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let stop_at = measure_from + Duration::from_secs(args.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.warmup + args.duration);
    let ticker = tokio::spawn(show_progress(progress.clone(), answered.clone(), started, measure_from));
    let mut workers = Vec::new();
    for connection in 0..args.connections {
        let addr = addrs.iter().cycle().nth(connection as usize).cloned().unwrap_or_default();
        let (key, agent, stop, answered) = (key.clone(), agent.clone(), stop.clone(), answered.clone());
        let seconds = args.duration;
        // Each connection's share of the rate, started at a staggered offset.
        let interval = args.rate.map(|rate| Duration::from_secs_f64(args.connections as f64 / rate as f64));
        let offset = interval.map(|interval| interval.mul_f64(connection as f64 / args.connections as f64));
        let (settle, floor) = (args.settle, args.floor);
        workers.push(tokio::spawn(async move {
            let drive =
                Drive { addr, key, agent, interval, offset, settle, floor, measure_from, stop_at, stop, answered };
            drive.run(seconds).await
        }));
    }
    let mut total = Tally::new(args.duration)?;
    let mut first_error = None;
    for worker in workers {
        match worker.await.context("a connection's task failed")? {
            Ok(tally) => total.add(&tally)?,
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                first_error.get_or_insert(error);
            }
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error);
    }
    report(&args, &addrs, &total)
}

/// A seconds-based progress bar on a terminal; hidden otherwise.
fn progress_bar(total_seconds: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_seconds);
    if let Ok(style) = ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} s  {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Moves the bar every 200 ms: the phase, and the decisions per second of
/// the last tick.
async fn show_progress(bar: ProgressBar, answered: Arc<AtomicU64>, started: Instant, measure_from: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let (mut last_count, mut last_at) = (0, Instant::now());
    loop {
        tick.tick().await;
        let (count, now) = (answered.load(Ordering::Relaxed), Instant::now());
        let rate = (count - last_count) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        (last_count, last_at) = (count, now);
        bar.set_prefix(if now < measure_from { "warming up" } else { "measuring " });
        bar.set_position(now.duration_since(started).as_secs());
        bar.set_message(format!("{rate:.0} decisions/s"));
    }
}

/// `host:port` of an `http://` URL.
fn address(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").with_context(|| format!("`{url}` is not an http:// URL"))?;
    Ok(rest.trim_end_matches('/').to_owned())
}

/// Starts a server in this process on a temporary store (or the one given);
/// returns the directory to keep, its URL and the default tenant's key.
async fn start_server(store: StoreArgs) -> anyhow::Result<(Option<tempfile::TempDir>, String, String)> {
    let (dir, store) = match store {
        store if store.database.is_some() || store.data != std::path::Path::new(crate::DEFAULT_DATA) => (None, store),
        _ => {
            let dir = tempfile::tempdir().context("making a temporary data directory")?;
            let store = StoreArgs { data: dir.path().join("data"), database: None };
            (Some(dir), store)
        }
    };
    let ledger = tokio::task::block_in_place(|| crate::serve::open_store(&store))?;
    let tenant = format!("bench-{}", random_suffix()?);
    let created = tokio::task::block_in_place(|| mandate_server::create_tenant(ledger.as_ref(), &tenant, "localhost"))?;
    let bound = mandate_server::Bound::bind(ledger, "127.0.0.1:0").await?;
    let local = bound.local_addr().context("the server has no address")?;
    tokio::spawn(bound.serve(std::future::pending()));
    Ok((dir, format!("http://{local}"), created.token))
}

fn random_suffix() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Twenty policies: one permit for the chain's human, nineteen forbids with
/// conditions on the context that this workload never meets.
fn twenty_policies(human: &str) -> String {
    let mut text =
        format!(r#"@id("permit-team") permit(principal in Mandate::Identity::"{human}", action, resource);"#);
    for i in 0..19 {
        text.push_str(&format!(
            r#"
@id("rule-{i}") forbid(principal, action == Mandate::Action::"payments.charge", resource)
  when {{ context.amounts has usd_cents && context.amounts.usd_cents > {} && context has merchant && context.merchant == "blocked-{i}" }};"#,
            50_000 + i
        ));
    }
    text
}

/// Sets up a chain of three (a human, an agent, its sub-agent), grants down
/// the chain, twenty policies and a large `usd_cents` budget on each
/// identity of the chain. Returns the sub-agent, which the load acts as.
async fn set_up(addr: &str, key: &str) -> anyhow::Result<String> {
    let mut connection = Connection::open(addr).await?;
    let suffix = random_suffix()?;
    let (human, agent, sub) =
        (format!("user:bench-{suffix}"), format!("agent:bench-{suffix}"), format!("agent:bench-{suffix}-sub"));
    let mut call = async |method: &str, path: &str, body: Value| -> anyhow::Result<Value> {
        let (status, answer) = connection.call_json(method, path, key, &body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(answer)
    };
    call("POST", "/v1/identities", json!({"id": human, "kind": "human"})).await?;
    call("POST", "/v1/identities", json!({"id": agent, "kind": "agent", "parent": human})).await?;
    call("POST", "/v1/identities", json!({"id": sub, "kind": "agent", "parent": agent})).await?;
    for (grantee, grantor) in [(&agent, &human), (&sub, &agent)] {
        let grant =
            json!({"grantee": grantee, "grantor": grantor, "actions": ["payments.*"], "resources": ["merchant://*"]});
        call("POST", "/v1/grants", grant).await?;
    }
    call("PUT", "/v1/policies", json!({"policies": twenty_policies(&human)})).await?;
    for (identity, period) in [(&human, "total"), (&agent, "month"), (&sub, "day")] {
        let id = format!("bench-{suffix}-{}", identity.replace(':', "-"));
        let budget = json!({"id": id, "identity": identity, "dimension": "usd_cents", "period": period, "limit": 1_000_000_000_000u64});
        call("POST", "/v1/budgets", budget).await?;
    }
    Ok(sub)
}

struct Drive {
    addr: String,
    key: String,
    agent: String,
    interval: Option<Duration>,
    offset: Option<Duration>,
    settle: bool,
    floor: bool,
    measure_from: Instant,
    stop_at: Instant,
    stop: Arc<AtomicBool>,
    /// Every decision answered, warm-up included: for the progress bar.
    answered: Arc<AtomicU64>,
}

impl Drive {
    /// One connection's loop, measuring `seconds` after the warm-up.
    async fn run(self, seconds: u64) -> anyhow::Result<Tally> {
        let drive = self;
        let mut connection = Connection::open(&drive.addr).await?;
        let mut tally = Tally::new(seconds)?;
        let request = json!({
            "identity": drive.agent, "action": "payments.charge", "resource": "merchant://books/1",
            "amounts": {"usd_cents": 1}, "context": {"merchant": "books"},
        });
        let settle_body = json!({"amounts": {"usd_cents": 1}});
        let mut due = Instant::now() + drive.offset.unwrap_or_default();
        // When this connection's previous exchange ended.
        let mut free_since = Instant::now();
        loop {
            if drive.interval.is_some() {
                tokio::time::sleep_until(due.into()).await;
            } else {
                due = Instant::now();
            }
            if due >= drive.stop_at || drive.stop.load(Ordering::Relaxed) {
                return Ok(tally);
            }
            // Latency counts from when the request was due if it had to wait
            // for this connection (no coordinated omission), but from when
            // it was sent if the connection was free by then: the wait
            // between is the client's own timer (tokio's has millisecond
            // granularity), which says nothing about the server.
            let start = if free_since <= due { Instant::now() } else { due };
            let (status, answer) = if drive.floor {
                let (status, _) = connection.call("GET", "/healthz", &drive.key, None).await?;
                (status, Value::Null)
            } else {
                connection.call_json("POST", "/v1/authorize", &drive.key, &request).await?
            };
            let latency = start.elapsed();
            drive.answered.fetch_add(1, Ordering::Relaxed);
            let measured = due >= drive.measure_from;
            if measured {
                let micros = latency.as_micros().try_into().unwrap_or(u64::MAX).max(1);
                tally.latencies.saturating_record(micros);
                let second = usize::try_from(due.duration_since(drive.measure_from).as_secs()).unwrap_or(usize::MAX);
                if let Some(histogram) = tally.per_second.get_mut(second) {
                    histogram.saturating_record(micros);
                }
                match (status, answer.get("decision").and_then(Value::as_str)) {
                    (200, Some("allow")) => tally.allowed += 1,
                    (200, None) if drive.floor => tally.allowed += 1,
                    (200, _) => tally.denied += 1,
                    _ => tally.failed += 1,
                }
            }
            if drive.settle
                && status == 200
                && let Some(reservation) = answer.pointer("/reservation/id").and_then(Value::as_str)
            {
                let path = format!("/v1/reservations/{reservation}/settle");
                let (status, answer) = connection.call_json("POST", &path, &drive.key, &settle_body).await?;
                if status != 200 {
                    bail!("settling {reservation}: {status} {answer}");
                }
                if measured {
                    tally.settled += 1;
                }
            }
            free_since = Instant::now();
            if let Some(interval) = drive.interval {
                due += interval;
            }
        }
    }
}

/// What was measured, as the report and the charts name it.
fn workload(args: &BenchArgs) -> &'static str {
    if args.floor { "GET /healthz" } else { "authorize" }
}

fn report(args: &BenchArgs, addrs: &[String], total: &Tally) -> anyhow::Result<()> {
    let seconds = args.duration as f64;
    let decisions = total.allowed + total.denied;
    let quantile = |q: f64| total.latencies.value_at_quantile(q) as f64 / 1_000.0;
    let ms = |micros: u64| micros as f64 / 1_000.0;
    let per_second: Vec<Value> = total
        .per_second
        .iter()
        .enumerate()
        .map(|(second, histogram)| {
            json!({
                "second": second + 1,
                "decisions": histogram.len(),
                "p50_ms": ms(histogram.value_at_quantile(0.5)),
                "p99_ms": ms(histogram.value_at_quantile(0.99)),
                "max_ms": ms(histogram.max()),
            })
        })
        .collect();
    let distribution: Vec<Value> = PERCENTILES
        .iter()
        .map(|percentile| json!({"percentile": percentile, "latency_ms": quantile(percentile / 100.0)}))
        .collect();
    let results = json!({
        "servers": addrs,
        "connections": args.connections,
        "rate": args.rate,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "settle": args.settle,
        "workload": workload(args),
        "decisions": decisions,
        "allowed": total.allowed,
        "denied": total.denied,
        "failed": total.failed,
        "settled": total.settled,
        "decisions_per_s": decisions as f64 / seconds,
        "latency_ms": {
            "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99), "p99_9": quantile(0.999),
            "max": total.latencies.max() as f64 / 1_000.0, "mean": total.latencies.mean() / 1_000.0,
        },
        "per_second": per_second,
        "distribution": distribution,
    });
    if args.floor {
        println!(
            "{decisions} requests (GET /healthz) in {seconds} s: {:.0}/s ({} failed)",
            decisions as f64 / seconds,
            total.failed
        );
    } else {
        println!(
            "{decisions} decisions in {seconds} s: {:.0}/s ({} allowed, {} denied, {} failed{})",
            decisions as f64 / seconds,
            total.allowed,
            total.denied,
            total.failed,
            if args.settle { format!(", {} settled", total.settled) } else { String::new() }
        );
    }
    println!(
        "{} latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        workload(args),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        total.latencies.max() as f64 / 1_000.0
    );
    if let Some(path) = &args.chart {
        chart(path, workload(args), total).with_context(|| format!("drawing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if total.failed > 0 {
        bail!("{} request(s) failed", total.failed);
    }
    Ok(())
}

/// Draws two charts side by side: latency over time (p50, p99 and max of
/// each measured second) and the latency distribution (latency by
/// percentile, the percentile axis stretched as `-log10(1 - p)` so that the
/// tail gets room: 90, 99, 99.9 … are equally spaced).
fn chart(path: &std::path::Path, workload: &str, total: &Tally) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let ms = |micros: u64| micros as f64 / 1_000.0;
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (left, right) = root.split_horizontally(600);

    let series: [Series; 3] = [
        ("p50", BLUE, per_second(total, |h| ms(h.value_at_quantile(0.5)))),
        ("p99", RED, per_second(total, |h| ms(h.value_at_quantile(0.99)))),
        ("max", BLACK, per_second(total, |h| ms(h.max()))),
    ];
    let top = series.iter().flat_map(|(_, _, points)| points.iter().map(|p| p.1)).fold(0.001, f64::max) * 1.1;
    let seconds = total.per_second.len().max(1) as f64;
    let mut over_time = ChartBuilder::on(&left)
        .caption(format!("{workload} latency over time"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..seconds + 1.0, 0.0..top)
        .map_err(draw_error)?;
    over_time.configure_mesh().x_desc("second").y_desc("ms").draw().map_err(draw_error)?;
    for (name, color, points) in series {
        over_time
            .draw_series(LineSeries::new(points, &color))
            .map_err(draw_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    over_time.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(draw_error)?;

    let stretch = |percentile: f64| -(1.0 - percentile / 100.0).max(1e-6).log10();
    let points: Vec<(f64, f64)> = (0..=600)
        .map(|step| {
            let percentile = 100.0 * (1.0 - 10f64.powf(-f64::from(step) / 100.0));
            (stretch(percentile), ms(total.latencies.value_at_quantile(percentile / 100.0)))
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut distribution = ChartBuilder::on(&right)
        .caption(format!("{workload} latency by percentile"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..6.0, 0.0..top)
        .map_err(draw_error)?;
    distribution
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(7)
        .x_label_formatter(&|x| format!("{}", 100.0 - 100.0 * 10f64.powf(-x)))
        .y_desc("ms")
        .draw()
        .map_err(draw_error)?;
    distribution.draw_series(LineSeries::new(points, &BLUE)).map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// A line of the chart: its name, its color and its points.
type Series = (&'static str, plotters::style::RGBColor, Vec<(f64, f64)>);

/// `(second, value)` for each measured second that made decisions.
fn per_second(total: &Tally, value: impl Fn(&Histogram<u64>) -> f64) -> Vec<(f64, f64)> {
    total
        .per_second
        .iter()
        .enumerate()
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(second, histogram)| ((second + 1) as f64, value(histogram)))
        .collect()
}

fn draw_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}
