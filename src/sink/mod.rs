//! The only ClickHouse writer: encoded batches in, `Ok` or a classified error out.
//!
//! Consumes Native-encoded blocks ([`native`]) with their table, row count and dedup token,
//! and sends each as one `INSERT … FORMAT Native` over HTTP with the official `clickhouse`
//! crate. Emits success (the INSERT returned 200: the caller may now ack) or a [`SinkError`]
//! whose [`SinkError::kind`] says whether to retry, isolate bad rows, or stop. It never acks,
//! never talks to NATS and never decides what happens to a message: that is the pipeline's.
//!
//! Exactly-once rests on deterministic dedup tokens ([`epoch_batch_token`] `mp2:…` for the
//! batches of a JetStream stream, [`batch_token`] `mp1:…` in core mode and in journal entries
//! of the previous release, and `<token>/0`, `<token>/1`, … for the halves of a split piece,
//! `<token>/dl` for its dead letters; see [`Splitter`]) together with the
//! tables' `non_replicated_deduplication_window`/`replicated_deduplication_window`, which
//! must cover `pipeline::window::required_window` blocks (from [`max_blocks_per_batch`]).
//!
//! Why the real LowCardinality dictionary is the default wire form
//! ([`native::LowCardinalityEncoding`]): a 100k-row `trades` block (5 exchanges, 300 symbols)
//! inserted into chDB 26.9 (2 shared cores, merges stopped, medians of two runs of 7 and 9):
//!
//! | wire form            | body   | parse only (`Null` engine) | hot `trades` MergeTree |
//! |----------------------|--------|----------------------------|------------------------|
//! | dictionary (default) | 5.0 MB | 4.9–5.3 ms (≈19 M rows/s)  | 57–64 ms (≈1.6 M rows/s) |
//! | plain `String`       | 9.5 MB | 14.2–14.4 ms (≈7 M rows/s) | 67–76 ms (≈1.4 M rows/s) |
//!
//! Encoding costs the same either way (≈25 ms per 100k rows, optimised build), so the
//! dictionary wins end to end, and halves the bytes on the wire.

pub mod ddl;
mod error;
mod isolate;
pub mod native;
mod partition;
pub mod tls;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use tokio_util::sync::CancellationToken;

pub use error::{ErrorClass, SinkError, classify, parse_code, parse_status};
pub use isolate::{
    HalvingLog, Isolation, MAX_PARTITIONS_PER_INSERT, NoHalvingLog, Piece, RejectedRow, Splitter,
    batch_token, child_token, dead_letter_token, epoch_batch_token, halving_key, split,
};
pub use native::{
    EncodeError, LowCardinalityEncoding, encode_block, encode_dead_letters, encode_quality_events,
};
pub use partition::{
    dead_letter_partition, max_blocks_per_batch, quality_event_partition, record_partition, yyyymm,
};

/// Size of the pieces an INSERT body is sent in: the body streams while later pieces are
/// compressed, and with LZ4 each piece becomes one ClickHouse compressed block (the server
/// limits those to 1 GiB; 1 MiB keeps memory and latency small).
const SEND_CHUNK: usize = 1 << 20;

/// Default time allowed to hand one body piece to the connection.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for the server to finish an INSERT after the body was sent.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_secs(60);

/// Body compression on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain bodies: cheapest on loopback, where LZ4 saves nothing.
    #[default]
    None,
    /// ClickHouse LZ4 blocks (`decompress=1`): about 4× less traffic for our rows.
    Lz4,
}

/// How the INSERTs of a cluster are sent (`clickhouse.cluster`, `clickhouse.insert_quorum*`):
/// into the `Distributed` tables with `distributed_foreground_insert=1`, so that a 200 means
/// every shard's part of the block is written (on `quorum` replicas when it is 2 or more), not
/// queued on the node we talk to. See `docs/production.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterInsert {
    /// `insert_quorum`; below 2 no quorum is asked for.
    pub quorum: u32,
    /// `insert_quorum_parallel`.
    pub quorum_parallel: bool,
    /// `insert_quorum_timeout`.
    pub quorum_timeout: Duration,
}

impl ClusterInsert {
    /// The settings every INSERT into a cluster carries, besides the token ones.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("distributed_foreground_insert", "1".to_string())];
        if self.quorum >= 2 {
            v.push(("insert_quorum", self.quorum.to_string()));
            v.push((
                "insert_quorum_parallel",
                u8::from(self.quorum_parallel).to_string(),
            ));
            v.push((
                "insert_quorum_timeout",
                self.quorum_timeout.as_millis().to_string(),
            ));
        }
        v
    }
}

/// Everything the sink needs, as plain values (the config module maps its types onto this).
#[derive(Clone, PartialEq)]
pub struct SinkOptions {
    /// ClickHouse HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// User (`X-ClickHouse-User`); `None` for the server's default user.
    pub user: Option<String>,
    /// Password (`X-ClickHouse-Key`).
    pub password: Option<String>,
    /// HTTPS with a private CA and/or a client certificate; `None`: the crate's own client
    /// (web roots, no client certificate).
    pub tls: Option<tls::ClientTls>,
    /// Database the tables live in; every INSERT names it explicitly.
    pub database: String,
    /// Body compression.
    pub compression: Compression,
    /// Per-piece send timeout.
    pub send_timeout: Duration,
    /// Timeout for the server's answer once the body is sent.
    pub end_timeout: Duration,
    /// Delays between retries of a retriable error.
    pub backoff: crate::retry::Policy,
    /// `Some` on a cluster: the settings that make a 200 mean "written on every shard".
    pub cluster: Option<ClusterInsert>,
}

impl fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("SinkOptions")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("database", &self.database)
            .field("compression", &self.compression)
            .field("send_timeout", &self.send_timeout)
            .field("end_timeout", &self.end_timeout)
            .field("backoff", &self.backoff)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl SinkOptions {
    /// Options with default timeouts, backoff and no compression.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        SinkOptions {
            url: url.into(),
            user: None,
            password: None,
            tls: None,
            database: database.into(),
            compression: Compression::None,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            end_timeout: DEFAULT_END_TIMEOUT,
            backoff: crate::retry::Policy::default(),
            cluster: None,
        }
    }
}

/// A ClickHouse writer. Cheap to clone (the HTTP connection pool is shared).
#[derive(Clone)]
pub struct Sink {
    client: Client,
    database: String,
    send_timeout: Duration,
    end_timeout: Duration,
    backoff: crate::retry::Policy,
    /// Whether the server knows `deduplicate_insert` (26.2+); see [`Sink::detect_server`].
    send_deduplicate_insert: bool,
    /// The cluster settings of every INSERT ([`ClusterInsert::settings`]); empty on one server.
    cluster_settings: Vec<(&'static str, String)>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("database", &self.database)
            .field("send_deduplicate_insert", &self.send_deduplicate_insert)
            .field("cluster_settings", &self.cluster_settings)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// A sink for `options`. Does no IO: the first request opens the connection.
    ///
    /// Credentials go in the `X-ClickHouse-User`/`X-ClickHouse-Key` headers of every request
    /// (the crate's `with_user`/`with_password`), never in the URL, which servers and proxies
    /// log.
    pub fn new(options: &SinkOptions) -> Self {
        let client = match &options.tls {
            Some(tls) => tls.client(),
            None => Client::default(),
        };
        let mut client = client
            .with_url(options.url.as_str())
            .with_database(options.database.as_str())
            // The crate's default is LZ4 when its feature is on; always set it explicitly.
            .with_compression(match options.compression {
                Compression::None => clickhouse::Compression::None,
                Compression::Lz4 => clickhouse::Compression::Lz4,
            });
        if let Some(user) = &options.user {
            client = client.with_user(user.as_str());
        }
        if let Some(password) = &options.password {
            client = client.with_password(password.as_str());
        }
        Sink {
            client,
            database: options.database.clone(),
            send_timeout: options.send_timeout,
            end_timeout: options.end_timeout,
            backoff: options.backoff,
            send_deduplicate_insert: false,
            cluster_settings: options.cluster.map(|c| c.settings()).unwrap_or_default(),
        }
    }

    /// The same server and credentials with another database (e.g. `system` for DDL that
    /// creates the configured database, or the cold database on the same server).
    pub fn on_database(&self, database: &str) -> Sink {
        let mut s = self.clone();
        s.client = s.client.with_database(database);
        s.database = database.to_string();
        s
    }

    /// The database every INSERT goes to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Asks the server which insert settings it knows, so that dedup tokens take effect on
    /// every version: on 26.2+ `deduplicate_insert` governs dedup and is then sent as `enable`
    /// (overriding a profile that might disable it); older servers would reject it as an
    /// unknown setting, so it is only sent when present. Call once at start-up, after the
    /// server is reachable.
    pub async fn detect_server(&mut self) -> Result<(), SinkError> {
        let known = self
            .fetch_count("SELECT count() FROM system.settings WHERE name = 'deduplicate_insert'")
            .await?;
        self.send_deduplicate_insert = known > 0;
        Ok(())
    }

    /// Sends one INSERT of a Native `body` holding `rows` rows into `table`, tagged with the
    /// dedup `token`. `Ok` means ClickHouse answered 200: the rows are stored (or were already,
    /// and this copy was deduplicated). An empty batch (`rows == 0` or an empty body) is a
    /// no-op; `table` must be one of the tables [`native::table_columns`] knows.
    ///
    /// Settings sent, and why:
    /// - `insert_deduplication_token=<token>`: makes a re-sent batch a no-op (exactly-once).
    /// - `async_insert=0`: 26.2+ servers default to async inserts, which batch rows from many
    ///   INSERTs server-side and deduplicate by a different mechanism; we already batch, and
    ///   we want "200 = in the table" before acking.
    /// - `insert_deduplicate=1`: the switch for token dedup before 26.2 (and on 26.2+ when
    ///   `deduplicate_insert=backward_compatible_choice`).
    /// - `deduplicate_insert=enable`: only on servers that know it (see
    ///   [`Sink::detect_server`]).
    /// - on a cluster, `distributed_foreground_insert=1` (and the quorum settings when
    ///   configured): `table` is then the `Distributed` table, which splits the block by its
    ///   sharding key and forwards each shard's rows with these settings, token included, and
    ///   answers only once every shard has written them ([`ClusterInsert`]).
    pub async fn insert(
        &self,
        table: &str,
        body: Bytes,
        rows: u64,
        token: &str,
    ) -> Result<(), SinkError> {
        let columns = native::table_columns(table)
            .ok_or_else(|| SinkError::UnknownTable(table.to_owned()))?;
        if token.is_empty() {
            return Err(SinkError::EmptyToken);
        }
        if rows == 0 || body.is_empty() {
            return Ok(());
        }
        let sql = native::insert_statement(&self.database, table, columns);
        tracing::debug!(table, rows, bytes = body.len(), token, "insert");
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(self.send_timeout), Some(self.end_timeout));
        for (k, v) in self.insert_settings(token) {
            insert = insert.with_setting(k, v);
        }
        let mut offset = 0;
        while offset < body.len() {
            let end = body.len().min(offset + SEND_CHUNK);
            insert.send(body.slice(offset..end)).await?;
            offset = end;
        }
        insert.end().await?;
        Ok(())
    }

    /// [`Sink::insert`], retrying `Retriable` errors with the configured [`crate::retry::Policy`] until it
    /// succeeds, fails otherwise (returned as is), or `cancel` fires while waiting
    /// ([`SinkError::RetryCancelled`]). An attempt already in flight is never interrupted:
    /// its own timeouts bound it.
    ///
    /// `on_retry(error, attempt, delay)` is called before each wait (attempt counts from 1):
    /// log and count there.
    pub async fn insert_with_retry(
        &self,
        table: &str,
        body: Bytes,
        rows: u64,
        token: &str,
        cancel: &CancellationToken,
        mut on_retry: impl FnMut(&SinkError, u32, Duration),
    ) -> Result<(), SinkError> {
        self.insert_with_retry_gated(table, (body, rows), token, cancel, &|| true, &mut on_retry)
            .await
    }

    /// [`Sink::insert_with_retry`], asking `may_send` before every attempt: `false` ends it
    /// with [`SinkError::Journal`] (see [`HalvingLog::may_send`]).
    async fn insert_with_retry_gated(
        &self,
        table: &str,
        (body, rows): (Bytes, u64),
        token: &str,
        cancel: &CancellationToken,
        may_send: &(dyn Fn() -> bool + Sync),
        on_retry: &mut impl FnMut(&SinkError, u32, Duration),
    ) -> Result<(), SinkError> {
        let mut backoff = self.backoff.backoff();
        let result = crate::retry::retry_until(
            cancel,
            &mut backoff,
            || async {
                if !may_send() {
                    return Err(SinkError::Journal(
                        "the writer may not send any more (its lease lapsed)".into(),
                    ));
                }
                self.insert(table, body.clone(), rows, token).await
            },
            |e: &SinkError, attempt, delay| {
                if e.kind() != ErrorClass::Retriable || matches!(e, SinkError::Journal(_)) {
                    return crate::retry::Verdict::GiveUp;
                }
                on_retry(e, attempt, delay);
                crate::retry::Verdict::Retry
            },
        )
        .await;
        result.map_err(|f| match f {
            crate::retry::Failure::GaveUp(e) => e,
            crate::retry::Failure::Stopped { attempts, last } => SinkError::RetryCancelled {
                attempts,
                last: Box::new(last),
            },
        })
    }

    /// Inserts `rows` into `table`, split so that ClickHouse accepts every piece, isolating
    /// rows it refuses (see [`Splitter`]): a batch spanning more than
    /// [`MAX_PARTITIONS_PER_INSERT`] partitions (`partition(row)` is the row's partition key)
    /// is split by partition before sending; a piece refused for its shape (too many
    /// partitions, too large) or its data is split again, and rows that fail alone come back
    /// in [`Isolation::rejected`] with their error, for the dead-letter table. Each piece goes
    /// through [`Sink::insert_with_retry`]. A `Fatal` error, a shape error no split can help,
    /// or a cancelled retry stops the procedure and is returned: nothing may be acked then,
    /// and a later re-run with the same token is harmless because pieces and tokens are a
    /// function of the rows.
    ///
    /// `encode` turns a slice of rows into a Native body, e.g.
    /// `|rows| native::encode_block(data_type, rows)`. Pieces that are not a contiguous range
    /// of `rows` (only after a split by partition) are gathered into a new slice first.
    ///
    /// Cost: a clean batch of at most 100 partitions is one INSERT; `p` partitions are
    /// `⌈p/100⌉`; `k` bad rows in `n` cost about `2·k·log2(n)` INSERTs, each a separate part
    /// on the server (and a dedup-window entry: see [`max_blocks_per_batch`]).
    #[allow(clippy::too_many_arguments)] // one call per table kind; a struct would only rename them
    pub async fn insert_isolating<'a, R: Clone, K: Ord>(
        &self,
        table: &str,
        rows: &'a [R],
        token: &str,
        partition: impl Fn(&'a R) -> K,
        encode: impl Fn(&[R]) -> Result<Bytes, EncodeError>,
        halvings: (&[String], &mut dyn HalvingLog),
        cancel: &CancellationToken,
        mut on_retry: impl FnMut(&SinkError, u32, Duration),
    ) -> Result<Isolation, SinkError> {
        let (halved, log) = halvings;
        let keys: Vec<K> = rows.iter().map(partition).collect();
        let mut splitter = Splitter::new(keys, token, MAX_PARTITIONS_PER_INSERT)
            .with_halved(halved.iter().cloned());
        while let Some(piece) = splitter.next_piece() {
            let body = match piece.as_range() {
                Some(range) => encode(rows.get(range).unwrap_or_default()),
                None => {
                    let gathered: Vec<R> = piece
                        .rows
                        .iter()
                        .filter_map(|&i| rows.get(i).cloned())
                        .collect();
                    encode(&gathered)
                }
            };
            let result = match body {
                Ok(body) => {
                    let n = piece.rows.len() as u64;
                    let may_send = || log.may_send();
                    self.insert_with_retry_gated(
                        table,
                        (body, n),
                        &piece.token,
                        cancel,
                        &may_send,
                        &mut on_retry,
                    )
                    .await
                }
                Err(e) => Err(e.into()),
            };
            splitter.record(piece, result)?;
            for key in splitter.take_halved() {
                log.record(&key).await?;
            }
        }
        Ok(splitter.finish())
    }

    /// Runs one statement that returns no rows (DDL, `OPTIMIZE`, `SYSTEM …`). The SQL is
    /// sent verbatim: `?` is not a bind placeholder.
    pub async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        self.client.query_raw(sql).execute().await?;
        Ok(())
    }

    /// Runs a query returning one `UInt64` (e.g. `SELECT count() FROM t`).
    pub async fn fetch_count(&self, sql: &str) -> Result<u64, SinkError> {
        Ok(self.client.query_raw(sql).fetch_one::<u64>().await?)
    }

    /// Runs a query and returns the raw result in `format` (any ClickHouse output format).
    pub async fn query_bytes(&self, sql: &str, format: &str) -> Result<Bytes, SinkError> {
        let mut cursor = self.client.query_raw(sql).fetch_bytes(format)?;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = cursor.next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// The settings every INSERT of ours carries (see [`Sink::insert`] for why each is there):
    /// one list, so the three insert paths cannot drift apart on what makes a retry a no-op.
    fn insert_settings<'a>(&'a self, token: &'a str) -> Vec<(&'static str, &'a str)> {
        let mut v = vec![
            ("insert_deduplication_token", token),
            ("async_insert", "0"),
            ("insert_deduplicate", "1"),
        ];
        if self.send_deduplicate_insert {
            v.push(("deduplicate_insert", "enable"));
        }
        v.extend(self.cluster_settings.iter().map(|(k, v)| (*k, v.as_str())));
        v
    }

    /// Runs `INSERT INTO … SELECT …` (both tables on this server) with the same insert
    /// settings as [`Sink::insert`], so that a re-run with the same `token` is a no-op.
    /// `Ok` means the server answered 200: the rows are stored (or were already).
    pub async fn insert_select(&self, sql: &str, token: &str) -> Result<(), SinkError> {
        if token.is_empty() {
            return Err(SinkError::EmptyToken);
        }
        tracing::debug!(token, "insert select");
        let mut q = self.client.query_raw(sql);
        for (k, v) in self.insert_settings(token) {
            q = q.with_setting(k, v);
        }
        q.execute().await?;
        Ok(())
    }

    /// Streams the result of `select_sql` on `source` (another server) into this server as
    /// `insert_head FORMAT Native` (`insert_head` = `INSERT INTO db.t (cols)`), tagged with
    /// `token` and the settings of [`Sink::insert`]. Nothing is buffered beyond one response
    /// piece: the SELECT's answer is forwarded to the INSERT's body as it arrives. Returns the
    /// bytes moved. The copy is one INSERT, so a failure anywhere leaves it un-acknowledged
    /// and a re-run with the same token is harmless.
    pub async fn copy_from(
        &self,
        source: &Sink,
        select_sql: &str,
        insert_head: &str,
        token: &str,
    ) -> Result<u64, SinkError> {
        if token.is_empty() {
            return Err(SinkError::EmptyToken);
        }
        let mut cursor = source.client.query_raw(select_sql).fetch_bytes("Native")?;
        let mut insert = self
            .client
            .insert_formatted_with(format!("{insert_head} FORMAT Native"))
            .with_timeouts(Some(self.send_timeout), Some(self.end_timeout));
        for (k, v) in self.insert_settings(token) {
            insert = insert.with_setting(k, v);
        }
        let mut moved: u64 = 0;
        while let Some(piece) = cursor.next().await? {
            moved = moved.saturating_add(piece.len() as u64);
            insert.send(piece).await?;
        }
        insert.end().await?;
        Ok(moved)
    }

    /// Checks that the server answers queries with the configured credentials.
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.client.query_raw("SELECT 1").fetch_one::<u8>().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataType, Record};

    /// The pipeline spawns these futures on a multi-threaded runtime.
    #[test]
    fn sink_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let sink = Sink::new(&SinkOptions::new("http://127.0.0.1:1", "db"));
        let cancel = CancellationToken::new();
        let rows: Vec<Record> = Vec::new();
        let mut log = NoHalvingLog;
        let f = sink.insert_isolating(
            "trades",
            &rows,
            "t",
            record_partition,
            |r| encode_block(DataType::Trade, r),
            (&[], &mut log),
            &cancel,
            |_, _, _| {},
        );
        is_send(&f);
        is_send(&sink.insert_with_retry("trades", Bytes::new(), 0, "t", &cancel, |_, _, _| {}));
    }

    #[test]
    fn cluster_inserts_are_foreground_with_the_quorum_when_asked() {
        let token = "mp2:d:1:1-2:2";
        let mut o = SinkOptions::new("http://h:8123", "db");
        let single = Sink::new(&o);
        assert_eq!(
            single.insert_settings(token),
            [
                ("insert_deduplication_token", token),
                ("async_insert", "0"),
                ("insert_deduplicate", "1"),
            ]
        );
        o.cluster = Some(ClusterInsert {
            quorum: 0,
            quorum_parallel: true,
            quorum_timeout: Duration::from_secs(600),
        });
        let s = Sink::new(&o);
        assert_eq!(
            s.insert_settings(token)[3..],
            [("distributed_foreground_insert", "1")]
        );
        o.cluster = Some(ClusterInsert {
            quorum: 2,
            quorum_parallel: false,
            quorum_timeout: Duration::from_secs(30),
        });
        let s = Sink::new(&o);
        assert_eq!(
            s.insert_settings(token)[3..],
            [
                ("distributed_foreground_insert", "1"),
                ("insert_quorum", "2"),
                ("insert_quorum_parallel", "0"),
                ("insert_quorum_timeout", "30000"),
            ]
        );
        assert_eq!(
            s.insert_settings(token)[0],
            ("insert_deduplication_token", token)
        );
    }

    #[test]
    fn options_debug_hides_the_password() {
        let mut o = SinkOptions::new("http://h:8123", "db");
        o.password = Some("hunter2".into());
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
