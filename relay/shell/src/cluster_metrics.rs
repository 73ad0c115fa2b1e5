//! A cluster node's metrics (its trees' counters and its links'), written into the Prometheus
//! exposition both binaries serve: the gateway's `/metrics` and the relay's.

use relay_proto::metrics::{Exposition, Kind};

use crate::cluster::ClusterStats;

/// The cluster node's metrics, its tree's and its links', into `e` (the gateway's `/metrics`
/// and the relay's).
pub fn write(e: &mut Exposition, s: &ClusterStats) {
    let t = &s.tree;
    let counters: [(&str, &str, u64); 14] = [
        (
            "tree_packets_received_total",
            "Packets that entered this node's trees, once each (from a local publisher or a parent).",
            t.packets_in,
        ),
        (
            "tree_datagrams_sent_total",
            "Media datagrams sent to children on node links.",
            t.datagrams_out,
        ),
        (
            "tree_packets_delivered_total",
            "Packets handed to this node's own viewers (a gateway's workers).",
            t.delivered,
        ),
        (
            "tree_duplicates_total",
            "Packets that arrived twice (a repair that crossed the original).",
            t.duplicates,
        ),
        (
            "tree_nacks_received_total",
            "Sequence numbers children asked for.",
            t.nacks_received,
        ),
        (
            "tree_nacks_answered_total",
            "Sequence numbers answered from this node's caches (the NACK shield).",
            t.nacks_answered,
        ),
        (
            "tree_nacks_forwarded_total",
            "Sequence numbers older than this node's first packet, asked of the parent once.",
            t.nacks_forwarded,
        ),
        (
            "tree_nacks_sent_total",
            "Sequence numbers this node asked of its parents.",
            t.nacks_sent,
        ),
        (
            "tree_nacks_missed_total",
            "Sequence numbers asked for that no cache here held.",
            t.nacks_missed,
        ),
        (
            "tree_keyframe_requests_received_total",
            "Keyframe requests from children and local viewers.",
            t.keyframe_requests_received,
        ),
        (
            "tree_keyframe_requests_sent_total",
            "Keyframe requests sent toward publishers (after aggregation).",
            t.keyframe_requests_sent,
        ),
        (
            "tree_reparents_total",
            "Tracks moved to a new parent after theirs went away.",
            t.reparents,
        ),
        (
            "tree_bad_datagrams_total",
            "Media datagrams refused as malformed.",
            t.bad_datagrams,
        ),
        (
            "cluster_refused_handshakes_total",
            "Node-link handshakes refused on TLS or Hello (a stranger shows up here).",
            s.refused_handshakes,
        ),
    ];
    for (name, help, value) in counters {
        e.counter(name, help, value);
    }
    e.gauge(
        "tree_tracks",
        "Tracks this node carries (as origin, relay or for its viewers).",
        s.tracks.len() as f64,
    );
    e.gauge(
        "cluster_links",
        "Node links that are up.",
        s.links.len() as f64,
    );
    // One series per peer: bounded by the cluster's size, not by its traffic.
    e.family(
        "cluster_link_rtt_seconds",
        Kind::Gauge,
        "Round-trip time of each node link.",
        s.links
            .iter()
            .map(|l| (vec![("peer", l.peer.as_str())], l.rtt_ms / 1000.0)),
    );
    e.family(
        "cluster_link_packets_sent_total",
        Kind::Counter,
        "QUIC packets sent on each node link (media, control and acknowledgements).",
        s.links
            .iter()
            .map(|l| (vec![("peer", l.peer.as_str())], l.packets_sent as f64)),
    );
    e.family(
        "cluster_link_packets_lost_total",
        Kind::Counter,
        "QUIC packets each node link declared lost (its loss rate over the packets sent).",
        s.links
            .iter()
            .map(|l| (vec![("peer", l.peer.as_str())], l.packets_lost as f64)),
    );
    e.histogram(
        "tree_hop_duration_seconds",
        "What this node adds to a media datagram: from its arrival on a link to its hand-off to the children's links and local viewers.",
        [(vec![], &s.hop_latency)],
    );
    e.family(
        "cluster_link_datagrams_received_total",
        Kind::Counter,
        "Media datagrams received on each node link.",
        s.links
            .iter()
            .map(|l| (vec![("peer", l.peer.as_str())], l.datagrams_in as f64)),
    );
    e.family(
        "cluster_link_datagrams_sent_total",
        Kind::Counter,
        "Media datagrams sent on each node link.",
        s.links
            .iter()
            .map(|l| (vec![("peer", l.peer.as_str())], l.datagrams_out as f64)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_writes_every_tree_counter_once() {
        let mut e = Exposition::new();
        write(&mut e, &ClusterStats::default());
        let text = e.finish();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        assert_eq!(types.len(), 22);
        let mut names: Vec<&str> = types
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap_or(""))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 22, "no name twice");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("tree_") || n.starts_with("cluster_"))
        );
    }
}
