//! Mandate's HTTP server.
//!
//! - [`state`]: a tenant's state as the fold of its log.
//! - [`tenant`]: one tenant at run time: its sequencer (the only writer of its
//!   state and log, group-committing batches) and committed reads.
//! - [`registry`]: the tenants served, tenant creation, admin keys and agent
//!   tokens.
//! - [`api`]: the HTTP handlers and the OpenAPI description.
//! - [`problem`]: RFC 9457 errors with stable codes.
//! - [`limits`]: every limit a request is held to, the request time limit
//!   and the per-credential limit on requests in flight.

pub mod api;
pub mod limits;
pub mod problem;
pub mod recent;
pub mod registry;
pub mod spend;
pub mod state;
pub mod tenant;

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use mandate_store::Ledger;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use registry::{CreateTenantError, NewAdminKey, NewAgentToken, Registry, create_tenant};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tenants.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Metrics,
    /// The requests each credential has in flight
    /// ([`limits::IN_FLIGHT_PER_KEY_MAX`]).
    pub in_flight: Arc<limits::InFlight>,
    /// The longest a request may take ([`limits::REQUEST_TIME_MAX`]).
    pub request_time: Duration,
    /// Becomes true when the server is asked to stop: long polls answer at
    /// once with what they have instead of holding the shutdown.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// The state of a server over `registry`, with the limits of [`limits`].
    pub fn new(registry: Arc<Registry>, metrics: Metrics) -> AppState {
        AppState {
            registry,
            metrics,
            in_flight: limits::InFlight::new(limits::IN_FLIGHT_PER_KEY_MAX),
            request_time: limits::REQUEST_TIME_MAX,
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

/// The Prometheus recorder: one per process, since `metrics` records into a
/// global.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder folds recorded samples into their histograms.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

impl Metrics {
    /// The process's recorder, installed on first use.
    pub fn global() -> Option<Metrics> {
        RECORDER
            .get_or_init(|| {
                let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0];
                let handle = PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Full("mandate_decision_seconds".into()), &buckets)
                    .ok()?
                    .install_recorder()
                    .ok()?;
                // A histogram keeps every sample until they are folded into
                // its buckets, which only a scrape or an upkeep does: without
                // this, a server nobody scrapes grows by ~20 bytes a decision.
                let upkeep = handle.clone();
                std::thread::Builder::new()
                    .name("mandate-metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                            upkeep.run_upkeep();
                        }
                    })
                    .ok()?;
                Some(handle)
            })
            .clone()
            .map(|handle| Metrics { handle })
    }

    /// Counts a decision and its latency.
    pub fn decision(&self, outcome: &str, elapsed: Duration) {
        metrics::counter!("mandate_decisions_total", "outcome" => outcome.to_owned()).increment(1);
        metrics::histogram!("mandate_decision_seconds").record(elapsed.as_secs_f64());
    }

    /// The text exposition, with each tenant's log size.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// The router of the whole API: every route under the body limit
/// ([`limits::BODY_BYTES_MAX`]) and the time limit (`app.request_time`).
pub fn router(app: AppState) -> Router {
    use api::*;
    let request_time = app.request_time;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/identities", post(create_identity).get(list_identities))
        .route("/v1/identities/{id}", get(get_identity))
        .route("/v1/identities/{id}/revoke", post(revoke_identity))
        .route("/v1/grants", post(create_grant).get(list_grants))
        .route("/v1/grants/{id}", get(get_grant))
        .route("/v1/grants/{id}/revoke", post(revoke_grant))
        .route("/v1/policies", axum::routing::put(put_policies).get(get_policies))
        .route("/v1/policies/versions", get(policy_versions))
        .route("/v1/settings", get(get_settings).patch(patch_settings))
        .route("/v1/admin-keys", post(create_admin_key))
        .route("/v1/admin-keys/{id}/revoke", post(revoke_admin_key))
        .route("/v1/authorize", post(authorize))
        .route("/v1/authorize/batch", post(authorize_batch))
        .route("/v1/events", post(record_event))
        .route("/v1/imports", post(import_transcript))
        // Reads its body itself: up to `limits::HOOK_BODY_BYTES_MAX` for an
        // agent token (a tool input can be large), the usual limit otherwise.
        .route("/v1/hooks/claude-code", post(claude_code_hook))
        .route("/v1/budgets", post(create_budget).get(list_budgets))
        .route("/v1/budgets/{id}", get(get_budget).patch(patch_budget))
        .route("/v1/reservations/{id}", get(get_reservation))
        .route("/v1/reservations/{id}/settle", post(settle))
        .route("/v1/reservations/{id}/void", post(void))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/introspect", post(introspect_token))
        .route("/v1/tokens/revoke", post(revoke_token))
        .route("/v1/log/checkpoint", get(checkpoint))
        .route("/v1/log/entries", get(entries))
        .route("/v1/log/proof/inclusion", get(inclusion_proof))
        .route("/v1/log/proof/consistency", get(consistency_proof))
        .route("/v1/log/receipt", get(receipt))
        .route("/v1/log/public-key", get(public_key))
        .route("/v1/log/search", get(search))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(request_time, limits::time_limit))
        .with_state(app)
}

impl From<tenant::LoadError> for ServeError {
    fn from(error: tenant::LoadError) -> ServeError {
        ServeError::Load(error)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A tenant failed to load. (Not its `source` as well: a report of
    /// the error chain would say the reason twice.)
    #[error("loading tenants: {0}")]
    Load(tenant::LoadError),
    /// The metrics recorder could not be installed.
    #[error("the metrics recorder could not be installed")]
    Metrics,
    /// A setting from the environment is invalid.
    #[error("{0}")]
    Config(String),
    /// Listening failed.
    #[error("listening on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// A server bound to its address, not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    app: AppState,
}

impl Bound {
    /// Loads every tenant of `ledger` and binds `addr`. Call inside a tokio
    /// runtime: the tenants' sequencers start on it. The request time limit
    /// is [`limits::REQUEST_TIME_MAX`] unless [`limits::REQUEST_TIMEOUT_ENV`]
    /// sets another.
    pub async fn bind(ledger: Arc<dyn Ledger>, addr: &str) -> Result<Bound, ServeError> {
        let request_time = limits::request_time_from_env().map_err(ServeError::Config)?;
        let registry = tokio::task::block_in_place(|| Registry::load(ledger))?;
        let metrics = Metrics::global().ok_or(ServeError::Metrics)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Listen { addr: addr.to_owned(), error })?;
        let app = AppState { request_time, ..AppState::new(Arc::new(registry), metrics) };
        Ok(Bound { listener, app })
    }

    /// The address actually bound (with the port chosen for `:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then stops accepting connections
    /// and gives the requests in flight up to [`limits::SHUTDOWN_GRACE`] to
    /// finish; long polls answer at once. A request cut off by the grace
    /// loses nothing that was acknowledged: its change either committed
    /// (retry with the same `request_id` to read the answer) or did not.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let stopping = self.app.stopping.clone();
        let mut stopped = stopping.subscribe();
        let signalled = async move {
            shutdown.await;
            stopping.send_replace(true);
        };
        let serving = axum::serve(self.listener, router(self.app)).with_graceful_shutdown(signalled).into_future();
        let grace_over = async move {
            let _ = stopped.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(limits::SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = serving => served.map_err(ServeError::Serve),
            () = grace_over => {
                tracing::warn!(grace_s = limits::SHUTDOWN_GRACE.as_secs(), "requests still in flight after the shutdown grace are cut off");
                Ok(())
            }
        }
    }
}
