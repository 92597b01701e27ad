//! What a node tells the cluster about itself (its Redis registration), and
//! the sans-IO choice of a node for a new room.

use serde::{Deserialize, Serialize};

/// One node's registration: where to reach it and how loaded it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Base URL of its HTTP front door (`http://10.0.0.5:8080`).
    pub http_url: String,
    /// Media addresses its workers advertise (for operators).
    pub media: Vec<String>,
    pub region: Option<String>,
    /// Draining for shutdown: keeps its rooms, takes no new ones.
    pub draining: bool,
    pub load: NodeLoad,
}

/// A node's load as of its last heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub rooms: usize,
    pub participants: usize,
    /// Share of one core the process used over the last heartbeat interval.
    pub cpu: f64,
    pub egress_bps: u64,
}

impl NodeLoad {
    /// Lower is less loaded. Participants dominate (each costs a peer
    /// connection and its forwarding); CPU breaks ties between nodes with
    /// similar counts but different traffic.
    fn score(&self) -> f64 {
        self.participants as f64 + 2.0 * self.rooms as f64 + 10.0 * self.cpu
    }
}

/// Nodes whose load is within this of the least loaded count as equally
/// loaded: the choice among them is random, so a burst of new rooms (load
/// reports lag by a heartbeat) spreads instead of piling onto one node.
const SCORE_BAND: f64 = 1.0;

/// The node a new room goes to: not draining, in `region` when any such
/// node exists, among the least loaded (`pick` chooses which of the equally
/// loaded: given their count, it returns an index). None when no node can
/// take rooms.
pub fn choose_node<'a>(
    nodes: &'a [NodeInfo],
    region: Option<&str>,
    pick: impl FnOnce(usize) -> usize,
) -> Option<&'a NodeInfo> {
    let open: Vec<&NodeInfo> = nodes.iter().filter(|n| !n.draining).collect();
    let local: Vec<&NodeInfo> = open
        .iter()
        .copied()
        .filter(|n| region.is_some() && n.region.as_deref() == region)
        .collect();
    let pool = if local.is_empty() { open } else { local };
    let least = pool.iter().map(|n| n.load.score()).min_by(f64::total_cmp)?;
    let mut equal: Vec<&NodeInfo> = pool
        .into_iter()
        .filter(|n| n.load.score() <= least + SCORE_BAND)
        .collect();
    equal.sort_by(|a, b| a.id.cmp(&b.id));
    let i = pick(equal.len()).min(equal.len() - 1);
    Some(equal[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: Option<&str>, participants: usize, draining: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            http_url: format!("http://{id}"),
            media: vec![],
            region: region.map(str::to_string),
            draining,
            load: NodeLoad {
                participants,
                ..NodeLoad::default()
            },
        }
    }

    #[test]
    fn least_loaded_open_node_in_the_region_first() {
        let nodes = [
            node("a", Some("eu"), 10, false),
            node("b", Some("eu"), 3, true),
            node("c", Some("us"), 0, false),
            node("d", Some("eu"), 5, false),
        ];
        let pick = |r| choose_node(&nodes, r, |_| 0).map(|n| n.id.as_str());
        assert_eq!(pick(Some("eu")), Some("d"), "b is draining");
        assert_eq!(pick(Some("us")), Some("c"));
        assert_eq!(pick(Some("ap")), Some("c"), "no node there: any region");
        assert_eq!(pick(None), Some("c"));
    }

    #[test]
    fn none_when_every_node_drains_and_equal_nodes_share() {
        assert_eq!(choose_node(&[node("a", None, 0, true)], None, |_| 0), None);
        let nodes = [
            node("b", None, 1, false),
            node("a", None, 1, false),
            node("c", None, 9, false),
        ];
        let mut offered = 0;
        let second = choose_node(&nodes, None, |n| {
            offered = n;
            1
        });
        assert_eq!(offered, 2, "a and b are equally loaded, c is not");
        assert_eq!(second.map(|n| n.id.as_str()), Some("b"));
    }
}
