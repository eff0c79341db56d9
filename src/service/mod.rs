//! The service, assembled from a validated [`Config`]: one [`Service::run`] that starts every
//! stage and stops them in order.
//!
//! Consumes a `Config` (already validated) and a stop token; runs, in this order: the embedded
//! ClickHouse when none is configured, the ops HTTP surface (bound first, stopped last, so
//! `/ready` reports the start and the drain), the migration loop when enabled, the schema
//! (applied and checked, retried until ClickHouse answers), the watchers (ClickHouse probe,
//! summary line), the NATS connection, and the pipeline in JetStream or core mode. It never
//! parses arguments, installs signal handlers, sets up logging or prints: the CLI does that
//! and calls [`Service::run`].
//!
//! The pieces are built by functions beside the configuration they read ([`build`],
//! [`migration`]), so tests, the benchmark and the one-shot commands build the same parts.

pub mod build;
pub mod migration;
pub mod nats;
pub mod startup;
pub mod watchers;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, NatsMode};
use crate::embedded::EmbeddedError;
use crate::migrate::MigrationStats;
use crate::ops::{self, OpsError};
use crate::pipeline::{self, Stats};
use crate::sink::SinkError;
use crate::sink::ddl::DriftError;
use crate::source::SourceError;

pub use build::{
    default_instance_id, one_shot_clickhouse, pipeline_settings, sink_for, stream_specs,
};

/// Why the service stopped with an error (a clean stop is `Ok`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The embedded ClickHouse could not be started.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// ClickHouse did not take the schema before the stop.
    #[error(transparent)]
    ClickHouse(#[from] SinkError),
    /// The tables could not be read for the start-up check before the stop.
    #[error(transparent)]
    DriftCheck(#[from] DriftError),
    /// The hot tables' drift breaks exactly-once or inserts (the drift, `; `-joined).
    #[error(
        "refusing to start, exactly-once cannot hold: {0}; run `marketprism-storage init` to upgrade the tables in place (`init --check` lists the drift)"
    )]
    Drift(String),
    /// `clickhouse.cluster` names a cluster the server does not define.
    #[error(
        "clickhouse.cluster: the server defines no cluster \"{cluster}\" in system.clusters (it has: {known}); use a name from its <remote_servers>, or leave the key empty for one server"
    )]
    UnknownCluster {
        /// The configured name.
        cluster: String,
        /// The clusters the server has, comma-separated (`none` when it has none).
        known: String,
    },
    /// A server's settings could not be read (`which`: hot or cold).
    #[error("{which} clickhouse")]
    Detect {
        /// `hot` or `cold`.
        which: &'static str,
        /// The cause.
        #[source]
        source: SinkError,
    },
    /// ClickHouse refused the configured user and password (never retried: waiting does not
    /// fix it). The server's message names the user, never the password.
    #[error(
        "clickhouse at {url} refused the credentials of user {user}: {message}; check clickhouse.user and clickhouse.password (CLICKHOUSE_USER, CLICKHOUSE_PASSWORD; with the embedded server, embedded.user and embedded.password)"
    )]
    Credentials {
        /// The server's base URL.
        url: String,
        /// The user sent.
        user: String,
        /// The server's error text.
        message: String,
    },
    /// The TLS handshake with ClickHouse failed on a certificate (never retried).
    #[error(
        "clickhouse at {url}: the TLS handshake failed: {reason}; check clickhouse.tls.ca (the CA that signed the server's certificate, for its name) and clickhouse.tls.cert/clickhouse.tls.key (a client certificate the server accepts)"
    )]
    Tls {
        /// The server's base URL.
        url: String,
        /// rustls's reason.
        reason: String,
    },
    /// The ops HTTP surface could not be bound.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// NATS refused the credentials or the certificates, or a credentials file went bad.
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    /// The pipeline failed (an unusable durable, streams that cannot be ensured).
    #[error(transparent)]
    Pipeline(#[from] SourceError),
}

/// What `run`'s flags add to the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Do not create missing databases and tables at start.
    pub no_init: bool,
    /// Instance id for consumer leases (`None`: [`default_instance_id`]).
    pub instance_id: Option<String>,
    /// Also run the hot → cold migration loop (same as `migration.enabled`).
    pub migrate: bool,
}

/// The service: a configuration, the run options and the counters the ops surface reads.
#[derive(Debug)]
pub struct Service {
    cfg: Config,
    opts: RunOptions,
    stats: Arc<Stats>,
}

impl Service {
    /// A service over `cfg` with fresh counters.
    pub fn new(cfg: Config, opts: RunOptions) -> Service {
        Service {
            cfg,
            opts,
            stats: Arc::new(Stats::new(pipeline::stats::now_ms())),
        }
    }

    /// The same service, counting into `stats` (the demo reads them while it runs).
    pub fn with_stats(self, stats: Arc<Stats>) -> Service {
        Service { stats, ..self }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Runs the service until `stop` (then drains within `shutdown_grace`) or until a stage
    /// fails. Starts and stops the embedded ClickHouse around everything else when configured.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ServiceError> {
        let embedded = if self.cfg.clickhouse.is_embedded() {
            let ch = build::start_embedded_clickhouse(&self.cfg).await?;
            let dir = self.cfg.embedded.data_dir.join("clickhouse");
            tracing::info!(url = %ch.url, data = %dir.display(), "embedded clickhouse started");
            Some(ch)
        } else {
            None
        };
        let result = self.run_with_clickhouse(stop).await;
        if let Some(ch) = embedded {
            ch.stop().await;
        }
        result
    }

    /// Ops, migration and pipeline; the ops server outlives the pipeline's stop so `/ready`
    /// says "shutting down" while batches drain, and is cancelled last.
    async fn run_with_clickhouse(&self, stop: CancellationToken) -> Result<(), ServiceError> {
        let ops_stop = CancellationToken::new();
        let started = ops::Latch::new();
        let migration = migration::service_stats(&self.cfg, self.opts.migrate);
        let ops_tasks = self
            .start_ops(migration.clone(), &stop, &ops_stop, &started)
            .await?;
        let migrator = migration::spawn(&self.cfg, migration, stop.clone());
        let result = self.run_pipeline(&stop, started).await;
        if let Some(m) = migrator {
            // After a stop the loop has already returned; a pipeline that failed on its own has
            // not cancelled `stop`, so the migration is aborted here (safe at any point: its
            // copies are idempotent).
            m.abort();
            let _ = m.await;
        }
        ops_stop.cancel();
        for t in ops_tasks {
            let _ = t.await;
        }
        result
    }

    /// Binds the ops HTTP surface (and the optional metrics port) and serves it until
    /// `ops_stop`.
    async fn start_ops(
        &self,
        migration: Option<Arc<MigrationStats>>,
        stop: &CancellationToken,
        ops_stop: &CancellationToken,
        started: &ops::Latch,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, ServiceError> {
        let cfg = &self.cfg;
        let state = ops::OpsState::from_config(self.stats.clone(), cfg)
            .with_startup(started.clone())
            .with_stop(stop.clone())
            .with_migration(migration);
        let mut tasks = Vec::new();
        let listener = ops::bind(cfg.http.addr()).await?;
        tracing::info!(url = %format!("http://{}/", cfg.http.addr()), "status page, /health, /ready, /stats, /metrics");
        let router = ops::router(state.clone());
        let s = ops_stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ops::serve(listener, router, s).await {
                tracing::error!(error = %e, "ops server stopped");
            }
        }));
        if let Some(addr) = cfg.http.metrics_addr() {
            let listener = ops::bind(addr).await?;
            let router = ops::metrics_router(state);
            let s = ops_stop.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = ops::serve(listener, router, s).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }));
        }
        Ok(tasks)
    }

    /// Schema, watchers, NATS, then the pipeline in the configured mode; opens `started` once
    /// the stages run.
    async fn run_pipeline(
        &self,
        stop: &CancellationToken,
        started: ops::Latch,
    ) -> Result<(), ServiceError> {
        let cfg = &self.cfg;
        let stats = &self.stats;
        stats
            .quality
            .configure(cfg.quality.enabled, cfg.quality.settings());
        let mut sink = sink_for(cfg, &cfg.hot_endpoint());
        self.start_against_clickhouse(&sink, stop)
            .await
            .map_err(|e| credentials_refused(cfg, e))?;
        if sink.detect_server().await.is_ok() {
            stats.set_clickhouse_up(true);
        }
        let sink = Arc::new(sink);
        watchers::spawn(sink.clone(), stats.clone(), stop.clone());
        let Some(client) = nats::connect(cfg, stats.clone(), stop).await? else {
            tracing::info!("stopped before NATS was reached");
            return Ok(());
        };
        watchers::watch_nats_server(client.clone(), stats.clone(), stop.clone());
        match cfg.nats.mode {
            NatsMode::Core => {
                self.run_core(&client, sink, stop, started).await?;
                nats::flush_bounded(&client).await;
            }
            NatsMode::JetStream => {
                self.run_jetstream(&client, sink, stop, started).await?;
                nats::flush_bounded(&client).await;
                tracing::info!("stopped");
            }
        }
        Ok(())
    }

    /// The start-up calls to the hot server: cluster check, schema, drift check.
    async fn start_against_clickhouse(
        &self,
        sink: &crate::sink::Sink,
        stop: &CancellationToken,
    ) -> Result<(), ServiceError> {
        let cfg = &self.cfg;
        startup::check_cluster(cfg, sink, stop).await?;
        if !self.opts.no_init {
            startup::init_schema(cfg, sink, stop).await?;
        }
        startup::startup_check(cfg, sink, stop).await
    }

    /// At-most-once core-NATS mode (`nats.mode: core`): what the stages return after the stop
    /// is not an error (nothing is acked, so nothing is left in doubt).
    async fn run_core(
        &self,
        client: &async_nats::Client,
        sink: Arc<crate::sink::Sink>,
        stop: &CancellationToken,
        started: ops::Latch,
    ) -> Result<(), ServiceError> {
        tracing::warn!(
            "nats.mode core: at-most-once (messages published while the service is down or buffered at a crash are lost)"
        );
        let cfg = &self.cfg;
        let types = cfg
            .nats
            .types
            .iter()
            .map(|t| (*t, build::limits(cfg, *t)))
            .collect();
        let stages = pipeline::core::run(
            types,
            cfg.retry.policy(),
            client.clone(),
            sink,
            self.stats.clone(),
            stop.clone(),
        );
        started.open();
        match until_drained(stages, stop, cfg.shutdown_grace).await {
            Ended::ByItself(r) => r?,
            Ended::Drained(_) | Ended::GraceOver => {}
        }
        Ok(())
    }

    /// Exactly-once JetStream mode: leases, journal, durables.
    async fn run_jetstream(
        &self,
        client: &async_nats::Client,
        sink: Arc<crate::sink::Sink>,
        stop: &CancellationToken,
        started: ops::Latch,
    ) -> Result<(), ServiceError> {
        let cfg = &self.cfg;
        let instance = self
            .opts
            .instance_id
            .clone()
            .unwrap_or_else(|| default_instance_id(cfg));
        let settings = pipeline_settings(cfg, instance);
        self.stats.set_instance(&settings.instance_id);
        tracing::info!(types = ?settings.types, instance = %settings.instance_id, "starting pipeline");
        let grace = cfg.shutdown_grace;
        let stages = pipeline::run(
            settings,
            client.clone(),
            sink,
            self.stats.clone(),
            stop.clone(),
        );
        started.open();
        match until_drained(stages, stop, grace).await {
            Ended::ByItself(r) | Ended::Drained(r) => r?,
            Ended::GraceOver => tracing::warn!(
                ?grace,
                "grace period over; exiting with batches unacked (they are re-read on the next start)"
            ),
        }
        Ok(())
    }
}

/// How the stages of one mode ended.
enum Ended<T> {
    /// Before the stop (a failure: running stages only end at the stop).
    ByItself(T),
    /// After the stop, within the grace period.
    Drained(T),
    /// The grace period ran out first; the stages are dropped.
    GraceOver,
}

/// Runs `stages` until they end or `stop` fires, then gives them `grace` to drain.
async fn until_drained<F: std::future::Future>(
    stages: F,
    stop: &CancellationToken,
    grace: std::time::Duration,
) -> Ended<F::Output> {
    tokio::pin!(stages);
    tokio::select! {
        r = &mut stages => Ended::ByItself(r),
        () = stop.cancelled() => match tokio::time::timeout(grace, &mut stages).await {
            Ok(r) => Ended::Drained(r),
            Err(_) => Ended::GraceOver,
        },
    }
}

/// `e` as [`ServiceError::Credentials`] or [`ServiceError::Tls`] when it is the hot server
/// refusing our credentials or a certificate failing the handshake.
fn credentials_refused(cfg: &Config, e: ServiceError) -> ServiceError {
    use startup::StartupFailure;
    let sink_error = match &e {
        ServiceError::ClickHouse(s) => s.sink_error(),
        ServiceError::DriftCheck(d) => d.sink_error(),
        _ => None,
    };
    let Some(sink_error) = sink_error else {
        return e;
    };
    let endpoint = cfg.hot_endpoint();
    if let Some(reason) = sink_error.tls_certificate_failure() {
        return ServiceError::Tls {
            url: endpoint.base_url,
            reason,
        };
    }
    match sink_error {
        SinkError::Server { message, .. } if sink_error.is_auth_failure() => {
            ServiceError::Credentials {
                url: endpoint.base_url,
                user: endpoint.user,
                message: message.trim().to_string(),
            }
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stages_end_by_themselves_drain_or_run_out_of_grace() {
        let stop = CancellationToken::new();
        let grace = Duration::from_secs(5);
        let failed = until_drained(async { 1 }, &stop, grace).await;
        assert!(matches!(failed, Ended::ByItself(1)));

        stop.cancel();
        let drains = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            2
        };
        assert!(matches!(
            until_drained(drains, &stop, grace).await,
            Ended::Drained(2)
        ));
        let hangs = std::future::pending::<u8>();
        assert!(matches!(
            until_drained(hangs, &stop, grace).await,
            Ended::GraceOver
        ));
    }
}
