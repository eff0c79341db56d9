//! The lanes and members as the ops surface shows them: which lanes of the configured types this
//! instance knows of, in a stable order, whether it holds each, and the role of each type and of
//! the instance as a whole. Pure: a copy of the pipeline's lane state in, words and counts out;
//! `/stats`, `/metrics` and the status page all read it from here.

use crate::model::DataType;
use crate::pipeline::stats::{LaneRole, LaneView, Stats};

/// The lanes of the configured `types`, copied once: in the configured type order, each type's
/// base lane first, then its partitions by layout and index.
pub fn lanes(stats: &Stats, types: &[DataType]) -> Vec<LaneView> {
    let mut v: Vec<LaneView> = stats
        .lanes()
        .iter()
        .map(|l| l.view())
        .filter(|l| types.contains(&l.id.data_type))
        .collect();
    v.sort_by_key(|l| {
        let at = types.iter().position(|t| *t == l.id.data_type);
        (at, l.id.part.map(|p| (p.of, p.index)), l.id.durable.clone())
    });
    v
}

/// Whether this instance holds the lane's lease now (it is the holder and has not lost the
/// lease since it took it).
pub fn is_held(l: &LaneView) -> bool {
    l.role == LaneRole::Holder && l.held_since_ms > 0
}

/// Who holds the lane's lease, as far as this instance knows: itself (`me`), the holder it
/// stands by behind, the holder the coordinator saw at its last look, or `None` (nobody held
/// it then, or still acquiring).
pub fn holder<'a>(l: &'a LaneView, me: Option<&'a str>) -> Option<&'a str> {
    match &l.role {
        LaneRole::Holder if is_held(l) => me,
        LaneRole::Standby(h) if !h.is_empty() => Some(h.as_str()),
        LaneRole::Elsewhere if !l.seen_holder.is_empty() => Some(l.seen_holder.as_str()),
        _ => None,
    }
}

/// The partition a lane reads as shown (`2/4`); `None` for a base lane.
pub fn partition(l: &LaneView) -> Option<String> {
    l.id.part.map(|p| p.to_string())
}

/// How many lanes this instance holds, stands by for, and leaves to others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleCounts {
    /// Lanes known here.
    pub lanes: usize,
    /// Held here ([`is_held`]).
    pub held: usize,
    /// Assigned here, not held: behind another holder (standby), taking the lease, or
    /// re-acquiring it after a loss.
    pub standby: usize,
    /// Not assigned here.
    pub elsewhere: usize,
}

impl RoleCounts {
    /// Counts `lanes`.
    pub fn of<'a>(lanes: impl IntoIterator<Item = &'a LaneView>) -> RoleCounts {
        let mut c = RoleCounts::default();
        for l in lanes {
            c.lanes += 1;
            if is_held(l) {
                c.held += 1;
            } else if l.role == LaneRole::Elsewhere {
                c.elsewhere += 1;
            } else {
                c.standby += 1;
            }
        }
        c
    }

    /// The instance's role in words: `holder of all 9 lanes`, `holder of 3 of 9 lanes, standby
    /// for 1`, `standby for 9 of 9 lanes`, `elsewhere: none of 9 lanes assigned here`, `no lanes
    /// yet` (before the coordinator's first look, or in core mode).
    pub fn summary(&self) -> String {
        let RoleCounts {
            lanes,
            held,
            standby,
            ..
        } = *self;
        let plural = if lanes == 1 { "lane" } else { "lanes" };
        if lanes == 0 {
            return "no lanes yet".to_string();
        }
        let mut parts = Vec::new();
        if held == lanes {
            parts.push(format!("holder of all {lanes} {plural}"));
        } else if held > 0 {
            parts.push(format!("holder of {held} of {lanes} {plural}"));
        }
        if standby > 0 {
            parts.push(if held == 0 {
                format!("standby for {standby} of {lanes} {plural}")
            } else {
                format!("standby for {standby}")
            });
        }
        if parts.is_empty() {
            return format!("elsewhere: none of {lanes} {plural} assigned here");
        }
        parts.join(", ")
    }
}

/// What this instance does for one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeRole {
    /// Holds every lane of the type (or, without lanes, its consumer is bound: core mode).
    Holder,
    /// Holds some of its lanes.
    Partial,
    /// Holds none; at least one is assigned here and waits for its lease.
    Standby,
    /// None of its lanes is assigned here.
    Elsewhere,
    /// No lanes known and nothing bound (before the coordinator's first look).
    Unknown,
}

impl TypeRole {
    /// The role of a type from its lanes' counts; `bound` decides when it has no lanes.
    pub fn of(c: &RoleCounts, bound: bool) -> TypeRole {
        match c {
            RoleCounts { lanes: 0, .. } if bound => TypeRole::Holder,
            RoleCounts { lanes: 0, .. } => TypeRole::Unknown,
            RoleCounts { lanes, held, .. } if held == lanes => TypeRole::Holder,
            RoleCounts { held, .. } if *held > 0 => TypeRole::Partial,
            RoleCounts { standby, .. } if *standby > 0 => TypeRole::Standby,
            _ => TypeRole::Elsewhere,
        }
    }

    /// `holder`, `partial`, `standby`, `elsewhere`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeRole::Holder => "holder",
            TypeRole::Partial => "partial",
            TypeRole::Standby => "standby",
            TypeRole::Elsewhere => "elsewhere",
            TypeRole::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::partition::LaneId;

    /// Lanes of a 4-partition trade stream seen from instance `a`, with `b` and `c` alive:
    /// `a` holds the base lane and partition 0 (pending 12, 3 queued, one lease lost once),
    /// stands by behind `b` for partition 1 (being handed over), and partitions 2 and 3 are
    /// assigned elsewhere; orderbook is unpartitioned and held by `b`.
    pub(crate) fn fixture(now_ms: i64) -> Stats {
        use crate::pipeline::stats::MemberView;
        let s = Stats::new(now_ms - 60_000);
        s.set_nats_connected(true);
        s.set_clickhouse_up(true);
        s.set_instance("a");
        s.set_nats_server(Some("n1 127.0.0.1:4222".into()));
        let t = DataType::Trade;
        let base = s.lane(&LaneId::base(t, "trade_c"));
        base.set_owner("a");
        base.record_acquired(now_ms - 30_000);
        base.set_bound(true);
        let p0 = s.lane(&LaneId::partition(t, "trade_c", 0, 4));
        p0.set_owner("a");
        p0.record_acquired(now_ms - 50_000);
        p0.record_lost();
        p0.record_acquired(now_ms - 20_000);
        p0.set_bound(true);
        p0.set_consumer_pending(12);
        for _ in 0..3 {
            p0.record_received(100, now_ms - 1_000);
        }
        let p1 = s.lane(&LaneId::partition(t, "trade_c", 1, 4));
        p1.set_owner("a");
        p1.set_role(LaneRole::Standby("b".into()));
        for (k, owner) in [(2, "b"), (3, "c")] {
            let l = s.lane(&LaneId::partition(t, "trade_c", k, 4));
            l.set_owner(owner);
        }
        let ob = s.lane(&LaneId::base(DataType::Orderbook, "orderbook_c"));
        ob.set_owner("b");
        ob.record_acquired(now_ms - 90_000);
        ob.record_released();
        s.set_members(
            ["a", "b", "c"]
                .into_iter()
                .map(|i| MemberView {
                    instance: i.into(),
                    types: vec![t, DataType::Orderbook],
                    me: i == "a",
                })
                .collect(),
        );
        s
    }

    #[test]
    fn lanes_come_in_type_order_base_first_then_by_partition() {
        let s = fixture(1_000_000);
        let labels: Vec<String> = lanes(&s, &[DataType::Orderbook, DataType::Trade])
            .iter()
            .map(|l| l.id.label())
            .collect();
        assert_eq!(
            labels,
            [
                "orderbook",
                "trade",
                "trade 0/4",
                "trade 1/4",
                "trade 2/4",
                "trade 3/4"
            ]
        );
        assert_eq!(lanes(&s, &[DataType::Orderbook]).len(), 1);
    }

    #[test]
    fn roles_holders_and_counts() {
        let s = fixture(1_000_000);
        let all = lanes(&s, &[DataType::Trade, DataType::Orderbook]);
        let held: Vec<bool> = all.iter().map(is_held).collect();
        assert_eq!(held, [true, true, false, false, false, false]);
        let holders: Vec<Option<&str>> = all.iter().map(|l| holder(l, Some("a"))).collect();
        assert_eq!(holders, [Some("a"), Some("a"), Some("b"), None, None, None]);
        let trade = RoleCounts::of(all.iter().filter(|l| l.id.data_type == DataType::Trade));
        assert_eq!(
            trade,
            RoleCounts {
                lanes: 5,
                held: 2,
                standby: 1,
                elsewhere: 2
            }
        );
        assert_eq!(trade.summary(), "holder of 2 of 5 lanes, standby for 1");
        assert_eq!(TypeRole::of(&trade, true), TypeRole::Partial);
        let book = RoleCounts::of(all.iter().filter(|l| l.id.data_type == DataType::Orderbook));
        assert_eq!(TypeRole::of(&book, false), TypeRole::Elsewhere);
        assert_eq!(book.summary(), "elsewhere: none of 1 lane assigned here");
        assert_eq!(partition(&all[2]).as_deref(), Some("1/4"));
        assert_eq!(partition(&all[0]), None);
    }

    #[test]
    fn summaries_and_type_roles() {
        let c = |lanes, held, standby| RoleCounts {
            lanes,
            held,
            standby,
            elsewhere: lanes - held - standby,
        };
        for (counts, bound, summary, role) in [
            (c(0, 0, 0), true, "no lanes yet", TypeRole::Holder),
            (c(0, 0, 0), false, "no lanes yet", TypeRole::Unknown),
            (c(9, 9, 0), true, "holder of all 9 lanes", TypeRole::Holder),
            (
                c(9, 3, 0),
                true,
                "holder of 3 of 9 lanes",
                TypeRole::Partial,
            ),
            (
                c(9, 0, 9),
                false,
                "standby for 9 of 9 lanes",
                TypeRole::Standby,
            ),
            (
                c(1, 0, 1),
                false,
                "standby for 1 of 1 lane",
                TypeRole::Standby,
            ),
            (
                c(9, 0, 0),
                false,
                "elsewhere: none of 9 lanes assigned here",
                TypeRole::Elsewhere,
            ),
        ] {
            assert_eq!(counts.summary(), summary);
            assert_eq!(TypeRole::of(&counts, bound), role, "{summary}");
        }
    }

    #[test]
    fn a_lost_lease_is_not_held_until_taken_again() {
        let s = Stats::new(0);
        let l = s.lane(&LaneId::base(DataType::Trade, "t"));
        l.record_acquired(5);
        assert!(is_held(&l.view()));
        l.record_lost();
        let v = l.view();
        assert!(!is_held(&v));
        assert_eq!(holder(&v, Some("a")), None);
        assert_eq!(RoleCounts::of([&v]).standby, 1);
    }
}
