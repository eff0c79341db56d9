//! MarketPrism Storage: NATS JetStream → validated rows → ClickHouse, exactly once.
//!
//! Layout (the folder tree shows the pipeline; `ARCHITECTURE.md` has the invariants):
//! - [`config`]: raw YAML/env shape → validated [`config::Config`], read once before start.
//! - [`model`]: `DataType`, typed rows, dead letters.
//! - [`message`]: one file per data type: wire shape → validated row.
//! - [`decode`]: `Delivery` payload → `Record` or `Rejection` (pure, never panics).
//! - [`schema`]: DDL for the hot and cold databases.
//! - [`sink`]: the only ClickHouse writer (Native format, dedup tokens, retry classes).
//! - [`publish`]: synthetic collector traffic (generator + paced NATS publisher) for tests and demos.
//! - [`embedded`]: start/stop the embedded ClickHouse and nats-server children.

pub mod config;
pub mod decode;
pub mod embedded;
pub mod message;
pub mod model;
pub mod publish;
pub mod schema;
pub mod sink;
