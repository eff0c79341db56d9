//! The text printed by `marketprism-storage config`: every effective key, its value and where
//! the value came from, aligned, with secrets masked.

use std::fmt::Write as _;

use super::value::{format_duration, format_size};
use super::{ClickHouseHost, Compression, Config, Discard, Loaded, LogFormat, StreamStorage};

/// Renders the effective configuration as an aligned `key  value  source` table, followed by the
/// warnings. Passwords and the token are shown as `****` (or `(empty)`), never in clear.
pub fn render(loaded: &Loaded) -> String {
    const MAX_VALUE_WIDTH: usize = 48;
    let rows: Vec<(String, String, String)> = entries(&loaded.config)
        .into_iter()
        .map(|(key, value)| {
            let source = loaded.source(&key).to_string();
            (key, value, source)
        })
        .collect();
    let key_width = rows.iter().map(|r| r.0.len()).chain([3]).max().unwrap_or(3);
    // A very long value (the 18 subjects) would push every source far right: it overflows its
    // column instead.
    let value_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .filter(|w| *w <= MAX_VALUE_WIDTH)
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let mut line = |k: &str, v: &str, s: &str| {
        let pad = value_width.saturating_sub(v.chars().count());
        let text = format!("{k:<key_width$}  {v}{:pad$}  {s}", "");
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line("key", "value", "source");
    for (k, v, s) in &rows {
        line(k, v, s);
    }
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// Every effective key and its printed value, in a stable order. The keys are the ones under
/// which `Loaded::sources` records origins.
pub(crate) fn entries(c: &Config) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| e.push((k.to_string(), v));
    let dur = |d| format_duration(d);
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());

    let n = &c.nats;
    put("nats.url", n.url());
    put("nats.mode", n.mode.as_str().to_string());
    for (which, s) in [
        ("market_data", &n.streams.market_data),
        ("high_frequency", &n.streams.high_frequency),
    ] {
        let k = |f: &str| format!("nats.streams.{which}.{f}");
        put(&k("name"), s.name.clone());
        put(&k("subjects"), s.subjects.join(","));
        put(&k("max_age"), dur(s.max_age));
        put(&k("max_msgs"), s.max_msgs.to_string());
        put(&k("max_bytes"), format_size(s.max_bytes.get()));
        put(&k("duplicate_window"), dur(s.duplicate_window));
        let storage = match s.storage {
            StreamStorage::File => "file",
            StreamStorage::Memory => "memory",
        };
        put(&k("storage"), storage.to_string());
        let discard = match s.discard {
            Discard::Old => "old",
            Discard::New => "new",
        };
        put(&k("discard"), discard.to_string());
        put(&k("replicas"), s.replicas.to_string());
    }
    put("nats.consumer_prefix", n.consumer_prefix.clone());
    put("nats.ack_wait", dur(n.ack_wait));
    for (t, v) in n.max_ack_pending.iter() {
        put(&format!("nats.max_ack_pending.{t}"), v.to_string());
    }
    put("nats.fetch_batch", n.fetch_batch.to_string());
    put("nats.fetch_max_bytes", format_size(n.fetch_max_bytes.get()));
    put("nats.journal_bucket", n.journal_bucket.clone());
    let types: Vec<&str> = n.types.iter().map(|t| t.as_str()).collect();
    put("nats.types", types.join(","));

    let ch = &c.clickhouse;
    let host = match &ch.host {
        ClickHouseHost::Embedded => "embedded".to_string(),
        ClickHouseHost::Server(h) => h.clone(),
    };
    put("clickhouse.host", host);
    put("clickhouse.http_port", ch.http_port.to_string());
    put("clickhouse.secure", ch.secure.to_string());
    put("clickhouse.hot_db", ch.hot_db.clone());
    put("clickhouse.cold_db", ch.cold_db.clone());
    put("clickhouse.user", ch.user.clone());
    put("clickhouse.password", ch.password.masked().to_string());
    let compression = match ch.compression {
        Compression::None => "none",
        Compression::Lz4 => "lz4",
    };
    put("clickhouse.compression", compression.to_string());
    put("clickhouse.insert_timeout", dur(ch.insert_timeout));
    put("clickhouse.url", ch.base_url(&c.embedded));

    match &c.cold_clickhouse {
        None => put(
            "cold_clickhouse.host",
            "(same server as clickhouse)".to_string(),
        ),
        Some(cold) => {
            put("cold_clickhouse.host", cold.host.clone());
            put("cold_clickhouse.http_port", cold.http_port.to_string());
            put("cold_clickhouse.secure", cold.secure.to_string());
            put("cold_clickhouse.user", cold.user.clone());
            put(
                "cold_clickhouse.password",
                cold.password.masked().to_string(),
            );
        }
    }

    put(
        "embedded.data_dir",
        c.embedded.data_dir.display().to_string(),
    );
    put(
        "embedded.tools_dir",
        c.embedded.tools_dir.display().to_string(),
    );
    put("embedded.listen", c.embedded.listen.to_string());

    for (t, b) in c.batch.iter() {
        let k = |f: &str| format!("batch.types.{t}.{f}");
        put(&k("max_rows"), b.max_rows.to_string());
        put(&k("max_bytes"), format_size(b.max_bytes.get()));
        put(&k("max_age"), dur(b.max_age));
        put(&k("max_queue"), b.max_queue.to_string());
        put(&k("max_queue_bytes"), format_size(b.max_queue_bytes.get()));
    }

    put("retry.initial_backoff", dur(c.retry.initial_backoff));
    put("retry.max_backoff", dur(c.retry.max_backoff));
    put("retry.multiplier", c.retry.multiplier.to_string());

    put("http.port", c.http.port.to_string());
    put("http.bind", c.http.bind.to_string());
    let token = c
        .http
        .token
        .as_ref()
        .map_or("(none)", |t| t.masked())
        .to_string();
    put("http.token", token);
    let metrics = c
        .http
        .metrics_port
        .map_or_else(|| "(none)".to_string(), |p| p.to_string());
    put("http.metrics_port", metrics);

    put("log.level", c.log.level.clone());
    put("log.rust_log", opt(&c.log.rust_log));
    let format = match c.log.format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    };
    put("log.format", format.to_string());

    let m = &c.migration;
    put("migration.enabled", m.enabled.to_string());
    put(
        "migration.window_hours",
        (m.window.as_secs_f64() / 3600.0).to_string(),
    );
    put("migration.batch_limit", m.batch_limit.to_string());
    put("migration.symbol_prefix", opt(&m.symbol_prefix));
    put("migration.exchange", opt(&m.exchange));
    put("migration.market_type", opt(&m.market_type));
    put("migration.dry_run", m.dry_run.to_string());
    put("migration.interval", dur(m.interval));
    put("migration.lag", dur(m.lag));
    put("migration.recheck_windows", m.recheck_windows.to_string());

    put("quality.enabled", c.quality.enabled.to_string());
    put("quality.price_jump", c.quality.price_jump.to_string());
    put("quality.sequential_ids", c.quality.sequential_ids.join(","));

    put("shutdown.grace_period", dur(c.shutdown_grace));
    e
}
