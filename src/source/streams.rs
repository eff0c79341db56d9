//! Makes sure the JetStream streams exist: create what is missing, never delete or narrow.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::partition::{Layout, layout_of, transform};
use super::{SourceError, api_err};

/// The desired shape of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Which configured stream it is (`market_data`, `high_frequency`), for messages.
    pub which: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Retention by age.
    pub max_age: Duration,
    /// Retention by message count.
    pub max_msgs: i64,
    /// Retention by size.
    pub max_bytes: i64,
    /// `Nats-Msg-Id` dedup window.
    pub duplicate_window: Duration,
    /// Replicas (1 on a single server).
    pub replicas: usize,
    /// Partitions to lay a new stream out for (1: none; see [`super::partition`]); an existing
    /// stream's layout is reported, never changed here.
    pub partitions: u32,
}

/// What `ensure` found or did for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The stream was missing and has been created.
    Created,
    /// The stream existed; it was left exactly as it was.
    Existing {
        /// Our subjects that the existing stream does not capture (a warning, not an error).
        uncovered: Vec<String>,
        /// Messages it holds.
        messages: u64,
        /// Its partition layout (its subject transform).
        layout: Layout,
        /// Its replicas (fewer than configured is a warning: we never change a stream).
        replicas: usize,
    },
}

/// A stream's partition layout, from its configuration.
pub fn layout(cfg: &stream::Config) -> Layout {
    layout_of(
        cfg.subject_transform
            .as_ref()
            .map(|t| (t.source.as_str(), t.destination.as_str())),
    )
}

/// The subject transform of a stream laid out for `n` partitions (`None` for 1).
pub fn transform_for(n: u32) -> Option<stream::SubjectTransform> {
    (n >= 2).then(|| {
        let (source, destination) = transform(n);
        stream::SubjectTransform {
            source,
            destination,
        }
    })
}

/// Whether subject `s` is captured by stream subject pattern `p` (NATS wildcards).
pub fn subject_covers(p: &str, s: &str) -> bool {
    let mut pt = p.split('.');
    let mut st = s.split('.');
    loop {
        match (pt.next(), st.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Creates the stream when it does not exist; otherwise leaves it untouched and reports which
/// of our subjects it does not capture.
pub async fn ensure(js: &jetstream::Context, spec: &StreamSpec) -> Result<Ensured, SourceError> {
    match js.get_stream(&spec.name).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(api_err(format!("stream {} info", spec.name)))?;
            let uncovered = spec
                .subjects
                .iter()
                .filter(|want| {
                    !info
                        .config
                        .subjects
                        .iter()
                        .any(|have| subject_covers(have, want))
                })
                .cloned()
                .collect();
            Ok(Ensured::Existing {
                uncovered,
                messages: info.state.messages,
                layout: layout(&info.config),
                replicas: info.config.num_replicas.max(1),
            })
        }
        Err(e) if e.to_string().contains("not found") => {
            let cfg = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                retention: stream::RetentionPolicy::Limits,
                max_age: spec.max_age,
                max_messages: spec.max_msgs,
                max_bytes: spec.max_bytes,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::Old,
                duplicate_window: spec.duplicate_window,
                num_replicas: spec.replicas,
                subject_transform: transform_for(spec.partitions),
                description: Some("created by marketprism-storage".into()),
                ..Default::default()
            };
            js.create_stream(cfg)
                .await
                .map_err(api_err(format!("create stream {}", spec.name)))?;
            Ok(Ensured::Created)
        }
        Err(e) => Err(SourceError::Api {
            what: format!("get stream {}", spec.name),
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::subject_covers;

    #[test]
    fn wildcards() {
        for (p, s, want) in [
            ("trade.>", "trade.>", true),
            ("trade.>", "trade.binance.spot.BTC-USDT", true),
            ("funding_rate.binance.>", "funding_rate.>", false),
            (
                "funding_rate.*.>",
                "funding_rate.okx.perpetual.BTC-USDT",
                true,
            ),
            ("trade", "trade.>", false),
            ("orderbook.>", "trade.>", false),
        ] {
            assert_eq!(subject_covers(p, s), want, "{p} covers {s}");
        }
    }
}
