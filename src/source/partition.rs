//! Partitioned streams: NATS's own deterministic subject partitioning, and the lanes it makes.
//!
//! A stream laid out for `n` partitions carries a subject transform (set when we create the
//! stream, or by `streams partition`) that stores every four-token subject
//! `<type>.<exchange>.<market_type>.<symbol>` as
//! `_mp.<type>.<n>.<k>.<exchange>.<market_type>.<symbol>`, where `k = partition(n, exchange,
//! market_type, symbol)` is computed by the server ([`transform`]). So a market always lands in
//! the same partition, and each partition is a subject space a durable can filter on.
//!
//! A **lane** is one durable consumer of one type and the unit everything is owned by: its
//! lease, its journal entry, its tokens. Each type has:
//! - its **base lane**, the durable it always had (`<durable>`, filter `<type>.>`): every
//!   message stored unpartitioned — all of them on an unpartitioned stream; on a partitioned
//!   one, what was stored before the layout was set and subjects that are not four tokens
//!   (the transform leaves them as they are);
//! - one lane per partition of the stream's layout (`<durable>_p<k>of<n>`, filter
//!   `_mp.<type>.<n>.<k>.>`);
//! - the lanes of an earlier layout whose durables still exist (after `streams partition`
//!   changed `n`): nothing new reaches them, they drain what they had.
//!
//! The layout number is part of the stored subject, so lanes of different layouts never
//! see the same message, and a new layout's lanes (created with `DeliverPolicy::All`) see only
//! what was stored under it: changing `n` loses and duplicates nothing, even while running.
//! Readers give every message its subject as published back ([`original_subject`]).

use std::borrow::Cow;

use crate::model::DataType;

/// First token of every subject the partition transform stores.
pub const PREFIX: &str = "_mp";

/// Most partitions a stream may be laid out for.
pub const MAX_PARTITIONS: u32 = 256;

/// The stream subject transform that lays a stream out for `n` partitions, as (source,
/// destination). `n` ≥ 2.
pub fn transform(n: u32) -> (String, String) {
    (
        "*.*.*.*".to_string(),
        format!(
            "{PREFIX}.{{{{wildcard(1)}}}}.{n}.{{{{partition({n},2,3,4)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}.{{{{wildcard(4)}}}}"
        ),
    )
}

/// What a stream's subject transform says about its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// No transform: every message is stored as published (base lanes only).
    Unpartitioned,
    /// Laid out for this many partitions by [`transform`].
    Partitioned(u32),
    /// A transform that is not ours: partitioned lanes cannot be derived from it.
    Foreign {
        /// Its source.
        source: String,
        /// Its destination.
        destination: String,
    },
}

impl Layout {
    /// The partition count (1: unpartitioned or foreign).
    pub fn partitions(&self) -> u32 {
        match self {
            Layout::Partitioned(n) => *n,
            _ => 1,
        }
    }
}

/// The layout a stream's transform (source, destination) describes.
pub fn layout_of(transform_cfg: Option<(&str, &str)>) -> Layout {
    let Some((src, dest)) = transform_cfg else {
        return Layout::Unpartitioned;
    };
    if src.is_empty() && dest.is_empty() {
        return Layout::Unpartitioned;
    }
    for n in 2..=MAX_PARTITIONS {
        // Cheap: the destination names its n right after the type.
        if dest.starts_with(&format!("{PREFIX}.{{{{wildcard(1)}}}}.{n}.")) {
            let (s, d) = transform(n);
            if s == src && d == dest {
                return Layout::Partitioned(n);
            }
            break;
        }
    }
    Layout::Foreign {
        source: src.to_string(),
        destination: dest.to_string(),
    }
}

/// Which partition of which layout a lane reads (`None`: the base lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Part {
    /// The partition, `0..of`.
    pub index: u32,
    /// The layout's partition count.
    pub of: u32,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// One lane: the durable, its filter, and what part of the type it reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId {
    /// The type.
    pub data_type: DataType,
    /// `None` for the base lane.
    pub part: Option<Part>,
    /// The durable consumer's name (also the lease and journal key).
    pub durable: String,
}

impl LaneId {
    /// The base lane of `t`, whose durable is `base`.
    pub fn base(t: DataType, base: &str) -> LaneId {
        LaneId {
            data_type: t,
            part: None,
            durable: base.to_string(),
        }
    }

    /// Partition `index` of `of` of type `t` whose base durable is `base`.
    pub fn partition(t: DataType, base: &str, index: u32, of: u32) -> LaneId {
        LaneId {
            data_type: t,
            part: Some(Part { index, of }),
            durable: format!("{base}_p{index}of{of}"),
        }
    }

    /// The subject filter of its durable.
    pub fn filter(&self) -> String {
        match self.part {
            None => self.data_type.subject_filter(),
            Some(p) => format!("{PREFIX}.{}.{}.{}.>", self.data_type, p.of, p.index),
        }
    }

    /// Its name as shown (`trade`, `trade 2/4`).
    pub fn label(&self) -> String {
        match self.part {
            None => self.data_type.to_string(),
            Some(p) => format!("{} {p}", self.data_type),
        }
    }
}

/// Parses a durable name of a partition lane of `base` (`<base>_p<k>of<n>`).
pub fn parse_partition_durable(base: &str, name: &str) -> Option<Part> {
    let rest = name.strip_prefix(base)?.strip_prefix("_p")?;
    let (k, n) = rest.split_once("of")?;
    let (index, of) = (k.parse::<u32>().ok()?, n.parse::<u32>().ok()?);
    // Canonical digits only (`p01of4` is not ours).
    if index >= of
        || !(2..=MAX_PARTITIONS).contains(&of)
        || format!("{index}") != k
        || format!("{of}") != n
    {
        return None;
    }
    Some(Part { index, of })
}

/// The lanes of type `t` (base durable `base`) on a stream laid out for `n` partitions, plus
/// the partition lanes of other layouts whose durables exist (`existing`: the stream's
/// consumer names), base first, then by layout and partition.
pub fn lanes_of(t: DataType, base: &str, n: u32, existing: &[String]) -> Vec<LaneId> {
    let mut out = vec![LaneId::base(t, base)];
    if n >= 2 {
        out.extend((0..n).map(|k| LaneId::partition(t, base, k, n)));
    }
    let mut older: Vec<Part> = existing
        .iter()
        .filter_map(|c| parse_partition_durable(base, c))
        .filter(|p| p.of != n)
        .collect();
    older.sort();
    older.dedup();
    out.extend(
        older
            .into_iter()
            .map(|p| LaneId::partition(t, base, p.index, p.of)),
    );
    out
}

/// The subject a message was published on, from the subject it is stored under: a
/// partitioned subject `_mp.<type>.<n>.<k>.<rest>` becomes `<type>.<rest>`; any other subject
/// is returned as it is.
pub fn original_subject(stored: &str) -> Cow<'_, str> {
    let Some(rest) = stored
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('.'))
    else {
        return Cow::Borrowed(stored);
    };
    let mut it = rest.splitn(4, '.');
    let (Some(t), Some(n), Some(k), Some(tail)) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Cow::Borrowed(stored);
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if t.is_empty() || !digits(n) || !digits(k) || tail.is_empty() {
        return Cow::Borrowed(stored);
    }
    Cow::Owned(format!("{t}.{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transform_round_trips_through_the_layout() {
        let (s, d) = transform(4);
        assert_eq!(s, "*.*.*.*");
        assert_eq!(
            d,
            "_mp.{{wildcard(1)}}.4.{{partition(4,2,3,4)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}"
        );
        assert_eq!(layout_of(Some((&s, &d))), Layout::Partitioned(4));
        assert_eq!(layout_of(None), Layout::Unpartitioned);
        assert_eq!(layout_of(Some(("", ""))), Layout::Unpartitioned);
        assert!(matches!(
            layout_of(Some(("trade.>", "x.>"))),
            Layout::Foreign { .. }
        ));
        let (s12, d12) = transform(12);
        assert_eq!(layout_of(Some((&s12, &d12))), Layout::Partitioned(12));
    }

    #[test]
    fn stored_subjects_give_back_the_published_one() {
        assert_eq!(
            original_subject("_mp.trade.4.2.binance.spot.BTC-USDT"),
            "trade.binance.spot.BTC-USDT"
        );
        for s in [
            "trade.binance.spot.BTC-USDT",
            "trade.a.b",
            "_mp.trade.x.2.a.b.c",
            "_mp.trade.4",
            "_mpx.trade.4.1.a",
        ] {
            assert_eq!(original_subject(s), s);
        }
    }

    #[test]
    fn lanes_are_the_base_the_layout_and_what_is_left_of_older_layouts() {
        let existing: Vec<String> = [
            "mp_trade",
            "mp_trade_p0of2",
            "mp_trade_p1of2",
            "mp_trade_p01of2",
            "mp_trade_p3of4",
            "mp_orderbook_p0of2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lanes = lanes_of(DataType::Trade, "mp_trade", 4, &existing);
        let names: Vec<&str> = lanes.iter().map(|l| l.durable.as_str()).collect();
        assert_eq!(
            names,
            [
                "mp_trade",
                "mp_trade_p0of4",
                "mp_trade_p1of4",
                "mp_trade_p2of4",
                "mp_trade_p3of4",
                "mp_trade_p0of2",
                "mp_trade_p1of2"
            ]
        );
        assert_eq!(lanes[0].filter(), "trade.>");
        assert_eq!(lanes[2].filter(), "_mp.trade.4.1.>");
        assert_eq!(lanes[6].filter(), "_mp.trade.2.1.>");
        assert_eq!(lanes[2].label(), "trade 1/4");
        assert_eq!(lanes_of(DataType::Trade, "mp_trade", 1, &[]).len(), 1);
    }
}
