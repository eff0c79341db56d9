//! Which instance reads which lane: one pure function of the lanes and the live members.
//!
//! Every instance computes the same assignment from the same inputs — the lanes follow from
//! the streams' layouts and durables, the members from the lease bucket — so they agree without
//! talking to each other; the leases arbitrate the moments in between (a lane is read only by
//! the holder of its lease, whatever anyone computed).
//!
//! Lanes that carry traffic (a partition of the current layout, the base lane of an
//! unpartitioned type) are spread first, each to the eligible member (one that serves the
//! lane's type) with the fewest such lanes so far; the idle ones (the base lane of a
//! partitioned type, lanes of an earlier layout) after them, the same way. Ties go to the
//! member with the fewest lanes in all, then to the lowest instance id. So `p` busy lanes over
//! `m` members give each ⌊p/m⌋ or ⌈p/m⌉. A member that joins or leaves moves lanes until the
//! counts are even again (the order is by lane, not by stability, so a few more may move than
//! strictly needed): a move is a drain and a hand-over of the lease, never unsafe.

use std::collections::BTreeMap;

use crate::model::DataType;
use crate::source::partition::LaneId;

/// A lane to place, and whether it carries traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeable {
    /// The lane.
    pub id: LaneId,
    /// A partition of the current layout or the base lane of an unpartitioned type.
    pub busy: bool,
}

/// A live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its instance id.
    pub instance: String,
    /// The types it serves.
    pub types: Vec<DataType>,
}

/// The owner of each lane (by durable name) among `members`; a lane no member serves is left
/// out.
pub fn assign(lanes: &[Placeable], members: &[Member]) -> BTreeMap<String, String> {
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort_by(|a, b| a.instance.cmp(&b.instance));
    members.dedup_by(|a, b| a.instance == b.instance);
    // (busy lanes, all lanes) per member, in `members` order.
    let mut load = vec![(0usize, 0usize); members.len()];
    let mut out = BTreeMap::new();
    for busy in [true, false] {
        for lane in lanes.iter().filter(|l| l.busy == busy) {
            let best = members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.types.contains(&lane.id.data_type))
                .min_by_key(|(i, _)| (load[*i].0, load[*i].1, *i));
            if let Some((i, m)) = best {
                if busy {
                    load[i].0 += 1;
                }
                load[i].1 += 1;
                out.insert(lane.id.durable.clone(), m.instance.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::partition::lanes_of;

    fn placeable(t: DataType, base: &str, n: u32) -> Vec<Placeable> {
        lanes_of(t, base, n, &[])
            .into_iter()
            .map(|id| Placeable {
                busy: id.part.is_some() || n < 2,
                id,
            })
            .collect()
    }

    fn member(i: &str, types: &[DataType]) -> Member {
        Member {
            instance: i.into(),
            types: types.to_vec(),
        }
    }

    #[test]
    fn busy_lanes_spread_evenly_and_everyone_agrees() {
        let mut lanes = placeable(DataType::Trade, "t", 4);
        lanes.extend(placeable(DataType::Orderbook, "o", 4));
        lanes.extend(placeable(DataType::FundingRate, "f", 1));
        let all = DataType::ALL.to_vec();
        let ms = vec![member("c", &all), member("a", &all), member("b", &all)];
        let a = assign(&lanes, &ms);
        assert_eq!(a.len(), lanes.len(), "every lane placed");
        let mut reversed = ms.clone();
        reversed.reverse();
        assert_eq!(
            assign(&lanes, &reversed),
            a,
            "the order of the list does not matter"
        );
        let busy_of = |who: &str| {
            lanes
                .iter()
                .filter(|l| l.busy && a[&l.id.durable] == who)
                .count()
        };
        let counts = [busy_of("a"), busy_of("b"), busy_of("c")];
        assert_eq!(counts.iter().sum::<usize>(), 9);
        assert!(counts.iter().all(|c| *c == 3), "{counts:?}");
        // The partitions of one type are not stacked on one member.
        let trade_of_a = lanes
            .iter()
            .filter(|l| l.busy && l.id.data_type == DataType::Trade && a[&l.id.durable] == "a")
            .count();
        assert!(trade_of_a <= 2);
    }

    #[test]
    fn a_lane_goes_only_to_members_serving_its_type() {
        let mut lanes = placeable(DataType::Trade, "t", 2);
        lanes.extend(placeable(DataType::FundingRate, "f", 1));
        let ms = vec![
            member("a", &[DataType::Trade]),
            member("b", &[DataType::FundingRate]),
        ];
        let a = assign(&lanes, &ms);
        assert_eq!(a["t_p0of2"], "a");
        assert_eq!(a["t_p1of2"], "a");
        assert_eq!(a["t"], "a");
        assert_eq!(a["f"], "b");
        let only_b = assign(&lanes, &ms[1..]);
        assert_eq!(
            only_b.len(),
            1,
            "nobody serves trade: its lanes stay unplaced"
        );
    }

    #[test]
    fn one_member_takes_everything_and_a_second_takes_half() {
        let lanes = placeable(DataType::Trade, "t", 4);
        let all = DataType::ALL.to_vec();
        let one = assign(&lanes, &[member("a", &all)]);
        assert!(one.values().all(|m| m == "a"));
        let two = assign(&lanes, &[member("a", &all), member("b", &all)]);
        let of_b = lanes
            .iter()
            .filter(|l| l.busy && two[&l.id.durable] == "b")
            .count();
        assert_eq!(of_b, 2);
    }
}
