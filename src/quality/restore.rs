//! The quality module's IO: state restored from the hot tables at start, and the silence timer.
//!
//! Consumes the hot database through the sink (reads only, once per type at pipeline start,
//! bounded by `restore_window`) and the wall clock; emits restored tracker state and the
//! timer's `stale_open` events, inserted through the sink under a token derived from their
//! content (so a repeated insert of the same episode is dropped by ClickHouse).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::DataType;
use crate::sink::{self, Sink};

use super::tracker::market_hash;
use super::{QUALITY_EVENTS_TABLE, Quality, QualityError, QualityEvent, Restored};

/// How long the start-up restore may take before the pipeline goes on without it.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(20);

/// The SQL that restores one type's markets: `exchange, market_type, symbol, last id, exchange
/// time of that id (ms), latest timestamp (ms)` per market with rows in the last `window_s`.
pub fn restore_sql(db: &str, t: DataType, window_s: u64) -> String {
    let (id, id_time) = match t {
        DataType::Trade => (
            "max(toUInt64OrZero(trade_id))",
            "toUnixTimestamp64Milli(argMax(trade_time, toUInt64OrZero(trade_id)))",
        ),
        DataType::Orderbook => ("max(last_update_id)", "toInt64(0)"),
        _ => ("toUInt64(0)", "toInt64(0)"),
    };
    format!(
        "SELECT exchange, market_type, symbol, {id}, {id_time}, toUnixTimestamp64Milli(max(timestamp)) \
         FROM `{db}`.`{table}` WHERE timestamp >= now64(3) - INTERVAL {window_s} SECOND \
         GROUP BY exchange, market_type, symbol",
        table = t.table()
    )
}

/// The SQL listing one type's markets whose latest stale event is a `stale_open`.
pub fn open_stale_sql(db: &str, t: DataType, window_s: u64) -> String {
    format!(
        "SELECT exchange, market_type, symbol FROM `{db}`.`{QUALITY_EVENTS_TABLE}` \
         WHERE data_type = '{dt}' AND kind IN ('stale_open', 'stale_close') \
         AND detected_at >= now64(3) - INTERVAL {window_s} SECOND \
         GROUP BY exchange, market_type, symbol \
         HAVING argMax(kind, (detected_at, kind = 'stale_close')) = 'stale_open'",
        dt = t.as_str()
    )
}

/// Parses the TabSeparated result of [`restore_sql`], marking markets listed in `open`.
pub fn parse_restored(
    text: &str,
    open: &[(String, String, String)],
) -> Result<Vec<Restored>, QualityError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [ex, mt, sym, id, id_time, ts] = f.as_slice() else {
            return Err(QualityError::Parse(line.to_string()));
        };
        let num = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| QualityError::Parse(line.to_string()))
        };
        let last_id = id
            .parse::<u64>()
            .map_err(|_| QualityError::Parse(line.to_string()))?;
        out.push(Restored {
            exchange: (*ex).to_string(),
            market_type: (*mt).to_string(),
            symbol: (*sym).to_string(),
            last_id,
            last_id_time_ms: num(id_time)?,
            last_ts_ms: num(ts)?,
            stale_open: open.iter().any(|(e, m, s)| e == ex && m == mt && s == sym),
        });
    }
    Ok(out)
}

/// Restores every type in `types` from the hot tables; returns how many markets were restored.
pub async fn restore_from(
    sink: &Sink,
    quality: &Quality,
    types: &[DataType],
) -> Result<usize, QualityError> {
    let window = quality.settings().restore_window.as_secs().max(1);
    let db = sink.database().to_string();
    let mut n = 0;
    for &t in types {
        let open_text = sink
            .query_bytes(&open_stale_sql(&db, t, window), "TabSeparated")
            .await?;
        let open: Vec<(String, String, String)> = String::from_utf8_lossy(&open_text)
            .lines()
            .filter_map(|l| {
                let mut it = l.split('\t');
                Some((
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                ))
            })
            .collect();
        let text = sink
            .query_bytes(&restore_sql(&db, t, window), "TabSeparated")
            .await?;
        let restored = parse_restored(&String::from_utf8_lossy(&text), &open)?;
        n += restored.len();
        quality.restore(t, &restored, chrono::Utc::now().timestamp_millis());
    }
    Ok(n)
}

/// The dedup token of a set of timer events: a stable hash of what identifies each episode
/// (type, market, last row's time), so re-detecting the same episodes gives the same token.
pub fn stale_token(events: &[QualityEvent]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        let m = market_hash(&e.exchange, &e.market_type, &e.symbol);
        for x in [
            m,
            market_hash(e.data_type.as_str(), e.kind.as_str(), ""),
            e.event_time_ms as u64,
        ] {
            h ^= x;
            h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17);
        }
    }
    format!("mpq:stale:{h:016x}:{}", events.len())
}

/// Inserts timer events (retrying retriable errors until `stop`). Returns false if they were
/// given up.
pub async fn insert_events(
    sink: &Sink,
    events: &[QualityEvent],
    token: &str,
    stop: &CancellationToken,
) -> bool {
    let body = match sink::encode_quality_events(events) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "quality events not encodable");
            return false;
        }
    };
    let res = sink
        .insert_with_retry(
            QUALITY_EVENTS_TABLE,
            body,
            events.len() as u64,
            token,
            stop,
            |e, attempt, delay| {
                tracing::warn!(attempt, ?delay, error = %e, "quality events insert failed; retrying")
            },
        )
        .await;
    match res {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, events = events.len(), "quality events not stored");
            false
        }
    }
}

/// Restores state (bounded by [`RESTORE_TIMEOUT`]; on failure the trackers start empty, which
/// can only miss an event at the restart boundary, never invent one), then spawns the silence
/// [`timer`] until `stop`. Await it before the stages start, so that no batch is observed
/// before its market's state is restored. Does nothing when detection is off.
pub async fn start(
    sink: Arc<Sink>,
    quality: Arc<Quality>,
    types: &[DataType],
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !quality.is_enabled() {
        return None;
    }
    // Without the table every batch's events insert would be retried forever and stall
    // ingest (a database created before the table existed, run with `--no-init`).
    let exists = sink
        .fetch_count(&format!(
            "SELECT count() FROM system.tables WHERE database = {} AND name = '{QUALITY_EVENTS_TABLE}'",
            crate::schema::quote(sink.database())
        ))
        .await;
    if exists.as_ref().is_ok_and(|n| *n == 0) {
        tracing::error!(
            table = QUALITY_EVENTS_TABLE,
            "table missing (run `marketprism-storage init`); data-quality detection disabled"
        );
        let settings = quality.settings();
        quality.configure(false, settings);
        return None;
    }
    match tokio::time::timeout(RESTORE_TIMEOUT, restore_from(&sink, &quality, types)).await {
        Ok(Ok(n)) => tracing::info!(markets = n, "quality state restored from the hot tables"),
        Ok(Err(e)) => tracing::warn!(error = %e, "quality state not restored; starting empty"),
        Err(_) => tracing::warn!("quality state restore timed out; starting empty"),
    }
    Some(tokio::spawn(timer(sink, quality, stop.clone())))
}

/// The silence timer: every `tick`, opens stale episodes and stores their events.
pub async fn timer(sink: Arc<Sink>, quality: Arc<Quality>, stop: CancellationToken) {
    let tick = quality.settings().tick.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let events = quality.tick(chrono::Utc::now().timestamp_millis());
        if events.is_empty() {
            continue;
        }
        let token = stale_token(&events);
        insert_events(&sink, &events, &token, &stop).await;
    }
}
