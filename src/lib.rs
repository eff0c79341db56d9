//! MarketPrism Storage: NATS JetStream → validated rows → ClickHouse, exactly once.
//!
//! Layout (the folder tree shows the pipeline; `ARCHITECTURE.md` has the invariants):
//! - [`config`]: raw YAML/env shape → validated [`config::Config`], read once before start.
//! - [`model`]: `DataType`, typed rows, dead letters.
//! - [`decode`]: `Delivery` payload → `Record` or `Rejection` (pure, never panics).
//! - [`schema`]: DDL for the hot and cold databases.
//! - [`sink`]: the only ClickHouse writer (Native format, dedup tokens, retry classes).
//! - [`batch`]: per-table batching on rows/bytes/age (pure).
//! - [`source`]: JetStream streams, durable consumers, batch journal, leases.
//! - [`ack`]: the only caller of JetStream ack APIs.
//! - [`redact`]: the registry of configured secrets and the masking applied to everything the
//!   process writes (logs, errors, panics, ops answers).
//! - [`retry`]: the one retry policy (`retry.*`) and loop every NATS/ClickHouse wait uses.
//! - [`pipeline`]: wires reader and writer per type; stats.
//! - [`service`]: a validated `Config` → the running service (stages, migration loop, watchers,
//!   ops) behind one `Service::run`; the parts it is built from (`service::build`).
//! - [`ops`]: the operations HTTP surface (`/health`, `/ready`, `/stats`, `/metrics`, status page).
//! - [`quality`]: data-quality detectors (gaps, duplicates, crossed books, silences) + report.
//! - [`migrate`]: hot → cold migration: pure planner, executor, verification.
//! - [`audit`]: streams vs stored rows per type and market (the proof of exactly-once).
//! - [`embedded`]: start/stop the embedded ClickHouse and nats-server children.
//!
//! The command-line interface (`src/cli/`), the synthetic collector traffic (`src/publish/`) and
//! the benchmark (`src/bench/`) are modules of the `marketprism-storage` binary, not of this
//! library: the service ships without its load generator, and no library module can import the
//! CLI.

pub mod ack;
pub mod audit;
pub mod batch;
pub mod config;
pub mod decode;
pub mod embedded;
pub mod migrate;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod quality;
pub mod redact;
pub mod retry;
pub mod schema;
pub mod service;
pub mod sink;
pub mod source;
