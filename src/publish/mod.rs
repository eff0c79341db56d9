//! Synthetic market-data publisher: the MarketPrism collector's messages, published the way it does.
//!
//! Consumes [`PublishOptions`] and a connected `async_nats::Client`; emits generated messages
//! (see [`generator`]) on NATS at a paced rate and returns [`PublishStats`]. It never reads
//! from NATS and never touches ClickHouse. Used by integration tests, the benchmark,
//! `marketprism-storage publish` and `marketprism-storage demo`.

mod format;
pub mod generator;
pub mod mix;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::model::DataType;

pub use generator::{DEFAULT_DEPTH, Generator, Message};
pub use mix::{Mix, Pacer};

/// PubAck futures outstanding at once in [`Transport::JetStream`] mode.
pub const JETSTREAM_WINDOW: usize = 1024;

/// Interval between paced bursts.
const TICK: Duration = Duration::from_millis(10);

/// Messages per burst when publishing as fast as possible.
const UNLIMITED_BATCH: f64 = 512.0;

/// How progress callbacks are spaced.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How messages reach NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Exactly like the MarketPrism collector: core NATS for trade and orderbook; JetStream with a
    /// `Nats-Msg-Id` header and each PubAck awaited before the next JetStream publish for the
    /// other six types.
    #[default]
    Collector,
    /// Everything on core NATS (no acks). Messages that have a Msg-Id keep it as a header, so
    /// a stream capturing them still deduplicates.
    Core,
    /// Everything through JetStream, with up to [`JETSTREAM_WINDOW`] PubAcks outstanding.
    /// Trade and orderbook subjects need a stream that captures them.
    JetStream,
}

/// The target rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rate {
    /// Use the mix's own per-type rates.
    #[default]
    Mix,
    /// Rescale the mix to this many messages per second in total.
    Total(f64),
    /// As fast as possible, keeping the mix's proportions.
    Unlimited,
}

impl Rate {
    /// `0` means unlimited, anything else a total rate (the CLI's `--rate N`).
    pub fn from_total(total: f64) -> Rate {
        if total <= 0.0 {
            Rate::Unlimited
        } else {
            Rate::Total(total)
        }
    }
}

/// What to publish, how fast, for how long.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Per-type rates (or proportions, with [`Rate::Total`] / [`Rate::Unlimited`]).
    pub mix: Mix,
    /// The target rate.
    pub rate: Rate,
    /// Stop after this long (`None`: no time limit).
    pub duration: Option<Duration>,
    /// Stop after this many messages (`None`: no count limit). With neither limit, publishing
    /// runs until the future is dropped.
    pub count: Option<u64>,
    /// Only these types (`None`: every type of the mix).
    pub types: Option<Vec<DataType>>,
    /// How messages reach NATS.
    pub transport: Transport,
    /// The generator's seed: the same seed gives the same message sequence.
    pub seed: u64,
    /// Orderbook levels per side.
    pub depth: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            mix: Mix::realistic(),
            rate: Rate::Mix,
            duration: Some(Duration::from_secs(10)),
            count: None,
            types: None,
            transport: Transport::Collector,
            seed: 1,
            depth: DEFAULT_DEPTH,
        }
    }
}

impl PublishOptions {
    /// The per-type rates actually used: the mix, filtered by `types`, rescaled for
    /// [`Rate::Total`].
    pub fn effective_mix(&self) -> Result<Mix, PublishError> {
        let mut mix = self.mix.clone();
        if let Some(types) = &self.types {
            mix = mix.only(types);
        }
        if mix.total() <= 0.0 {
            return Err(PublishError::NothingToPublish);
        }
        if let Rate::Total(total) = self.rate {
            if !(total.is_finite() && total > 0.0) {
                return Err(PublishError::InvalidRate(total));
            }
            mix = mix.scaled_to(total);
        }
        Ok(mix)
    }
}

/// What was published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishStats {
    /// Messages published, indexed like [`DataType::ALL`]: handed to the client for core NATS,
    /// acknowledged (and not a duplicate) for JetStream.
    pub published: [u64; 8],
    /// Payload bytes of the published messages.
    pub bytes: u64,
    /// Time since publishing started.
    pub elapsed: Duration,
    /// JetStream publishes that failed (send error, error PubAck, timeout, no stream).
    pub js_errors: u64,
    /// PubAcks that reported a duplicate (the stream dropped the message by its Msg-Id).
    pub js_duplicates: u64,
    /// The first JetStream error's text, if any.
    pub first_js_error: Option<String>,
}

impl PublishStats {
    /// Messages of one type published.
    pub fn count(&self, data_type: DataType) -> u64 {
        DataType::ALL
            .iter()
            .position(|t| *t == data_type)
            .map_or(0, |i| self.published[i])
    }

    /// Messages published in total.
    pub fn total(&self) -> u64 {
        self.published.iter().sum()
    }

    /// Achieved messages per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }

    fn record(&mut self, data_type: DataType, bytes: usize) {
        if let Some(i) = DataType::ALL.iter().position(|t| *t == data_type) {
            self.published[i] += 1;
        }
        self.bytes += bytes as u64;
    }

    fn js_error(&mut self, error: impl std::fmt::Display) {
        self.js_errors += 1;
        if self.first_js_error.is_none() {
            self.first_js_error = Some(error.to_string());
        }
    }
}

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The mix, after the type filter, has no positive rate.
    #[error("nothing to publish: no selected data type has a positive rate")]
    NothingToPublish,
    /// A total rate that is not a positive finite number.
    #[error("invalid total rate {0}: expected a positive number of messages per second")]
    InvalidRate(f64),
    /// A core NATS publish failed (the client is closed or its buffer is gone).
    #[error("core publish to {subject} failed")]
    Core {
        /// The subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::PublishError,
    },
    /// The final flush failed.
    #[error("flushing the nats client failed")]
    Flush(#[source] async_nats::client::FlushError),
}

/// Generates and publishes messages per `opts`, calling `progress` about once a second.
///
/// Pacing is a token bucket per type, released in bursts every 10 ms (not a sleep per
/// message). The client is flushed before returning, so core messages are on the wire.
/// JetStream failures are counted in [`PublishStats::js_errors`], not returned.
pub async fn publish(
    client: &async_nats::Client,
    opts: &PublishOptions,
    mut progress: impl FnMut(&PublishStats),
) -> Result<PublishStats, PublishError> {
    let mix = opts.effective_mix()?;
    let unlimited = opts.rate == Rate::Unlimited;
    let mut generator = Generator::with_depth(opts.seed, opts.depth);
    let mut pacer = Pacer::new(&mix);
    let mut sender = Sender::new(client, opts.transport);
    let mut stats = PublishStats::default();
    let start = Instant::now();
    let mut last_tick = start;
    let mut last_progress = start;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Unlimited: advance virtual time by one batch's worth (at most 1 s, the bucket size).
    let unlimited_dt = (UNLIMITED_BATCH / mix.total()).min(1.0);
    let mut sent: u64 = 0;
    let mut due_first = true;

    'outer: loop {
        if opts.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let due = if unlimited {
            tokio::task::yield_now().await;
            pacer.advance(unlimited_dt)
        } else {
            interval.tick().await;
            let now = Instant::now();
            let dt = if due_first {
                0.0
            } else {
                (now - last_tick).as_secs_f64()
            };
            last_tick = now;
            pacer.advance(dt)
        };
        due_first = false;
        let now_ms = wall_clock_ms();
        let mut left = due;
        // Interleave the types, one of each per round, as concurrent collector managers would.
        loop {
            let mut any = false;
            for (i, data_type) in DataType::ALL.iter().enumerate() {
                if left[i] == 0 {
                    continue;
                }
                left[i] -= 1;
                any = true;
                if opts.count.is_some_and(|c| sent >= c) {
                    break 'outer;
                }
                let msg = generator.next(*data_type, now_ms);
                sender.send(msg, &mut stats).await?;
                sent += 1;
            }
            if !any {
                break;
            }
        }
        if opts.count.is_some_and(|c| sent >= c) {
            break;
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            stats.elapsed = start.elapsed();
            progress(&stats);
        }
    }
    sender.finish(&mut stats).await?;
    stats.elapsed = start.elapsed();
    progress(&stats);
    Ok(stats)
}

/// UTC milliseconds now (0 if the clock is before 1970).
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type AckFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    DataType,
                    usize,
                    Result<
                        async_nats::jetstream::publish::PublishAck,
                        async_nats::jetstream::context::PublishError,
                    >,
                ),
            > + Send,
    >,
>;

/// Sends messages per transport and keeps the window of outstanding PubAcks.
struct Sender<'a> {
    client: &'a async_nats::Client,
    js: async_nats::jetstream::Context,
    transport: Transport,
    window: usize,
    acks: FuturesUnordered<AckFuture>,
}

impl<'a> Sender<'a> {
    fn new(client: &'a async_nats::Client, transport: Transport) -> Self {
        let window = match transport {
            // The collector awaits every PubAck before publishing the next message.
            Transport::Collector => 1,
            Transport::Core | Transport::JetStream => JETSTREAM_WINDOW,
        };
        Sender {
            client,
            js: async_nats::jetstream::new(client.clone()),
            transport,
            window,
            acks: FuturesUnordered::new(),
        }
    }

    async fn send(&mut self, msg: Message, stats: &mut PublishStats) -> Result<(), PublishError> {
        let jetstream = match self.transport {
            Transport::Collector => !msg.data_type.is_high_frequency(),
            Transport::Core => false,
            Transport::JetStream => true,
        };
        let len = msg.payload.len();
        if !jetstream {
            let result = match &msg.msg_id {
                Some(id) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", id.as_str());
                    self.client
                        .publish_with_headers(msg.subject.clone(), headers, msg.payload)
                        .await
                }
                None => self.client.publish(msg.subject.clone(), msg.payload).await,
            };
            result.map_err(|source| PublishError::Core {
                subject: msg.subject,
                source,
            })?;
            stats.record(msg.data_type, len);
            return Ok(());
        }
        while self.acks.len() >= self.window {
            self.settle_one(stats).await;
        }
        let mut publish = PublishMessage::build().payload(msg.payload);
        if let Some(id) = &msg.msg_id {
            publish = publish.message_id(id);
        }
        match self.js.send_publish(msg.subject, publish).await {
            Ok(ack) => {
                let data_type = msg.data_type;
                self.acks
                    .push(Box::pin(async move { (data_type, len, ack.await) }));
            }
            Err(e) => stats.js_error(e),
        }
        Ok(())
    }

    async fn settle_one(&mut self, stats: &mut PublishStats) {
        if let Some((data_type, len, result)) = self.acks.next().await {
            match result {
                Ok(ack) => {
                    if ack.duplicate {
                        stats.js_duplicates += 1;
                    } else {
                        stats.record(data_type, len);
                    }
                }
                Err(e) => stats.js_error(e),
            }
        }
    }

    async fn finish(&mut self, stats: &mut PublishStats) -> Result<(), PublishError> {
        while !self.acks.is_empty() {
            self.settle_one(stats).await;
        }
        self.client.flush().await.map_err(PublishError::Flush)
    }
}
