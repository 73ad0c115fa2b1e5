//! Prometheus text exposition (format 0.0.4), written by hand: a few dozen counters and gauges
//! read from the stats the nodes already keep, so no registry, no global state, no locks on the
//! packet path — a scrape reads the same numbers `/v1/stats` shows. Here too the cluster's own
//! metrics (`tree_*`), which the gateway and the relay binary both expose.

use std::fmt::Write;

use crate::histogram::HistogramSnapshot;
use crate::shell::cluster::ClusterStats;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape's text.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// A label value, escaped as the format wants (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter (a total since the process started); `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A metric with one sample per label set.
    pub fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    /// A histogram, one series per label set: cumulative `_bucket`s up to `+Inf`, `_sum`,
    /// `_count`.
    pub fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, &'a HistogramSnapshot)>,
    ) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (labels, h) in series {
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c;
                let le = match h.bounds.get(i) {
                    Some(b) => b.to_string(),
                    None => "+Inf".to_string(),
                };
                let mut l = labels.clone();
                l.push(("le", le.as_str()));
                self.sample(&bucket, &l, cumulative as f64);
            }
            self.sample(&format!("{name}_sum"), &labels, h.sum_seconds);
            self.sample(&format!("{name}_count"), &labels, cumulative as f64);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// The cluster node's metrics: its tree and its links.
    pub fn cluster(&mut self, s: &ClusterStats) {
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
            self.counter(name, help, value);
        }
        self.gauge(
            "tree_tracks",
            "Tracks this node carries (as origin, relay or for its viewers).",
            s.tracks.len() as f64,
        );
        self.gauge(
            "cluster_links",
            "Node links that are up.",
            s.links.len() as f64,
        );
        // One series per peer: bounded by the cluster's size, not by its traffic.
        self.family(
            "cluster_link_rtt_seconds",
            "gauge",
            "Round-trip time of each node link.",
            s.links
                .iter()
                .map(|l| (vec![("peer", l.peer.as_str())], l.rtt_ms / 1000.0)),
        );
        self.family(
            "cluster_link_packets_sent_total",
            "counter",
            "QUIC packets sent on each node link (media, control and acknowledgements).",
            s.links
                .iter()
                .map(|l| (vec![("peer", l.peer.as_str())], l.packets_sent as f64)),
        );
        self.family(
            "cluster_link_packets_lost_total",
            "counter",
            "QUIC packets each node link declared lost (its loss rate over the packets sent).",
            s.links
                .iter()
                .map(|l| (vec![("peer", l.peer.as_str())], l.packets_lost as f64)),
        );
        self.histogram(
            "tree_hop_duration_seconds",
            "What this node adds to a media datagram: from its arrival on a link to its hand-off to the children's links and local viewers.",
            [(vec![], &s.hop_latency)],
        );
        self.family(
            "cluster_link_datagrams_received_total",
            "counter",
            "Media datagrams received on each node link.",
            s.links
                .iter()
                .map(|l| (vec![("peer", l.peer.as_str())], l.datagrams_in as f64)),
        );
        self.family(
            "cluster_link_datagrams_sent_total",
            "counter",
            "Media datagrams sent on each node link.",
            s.links
                .iter()
                .map(|l| (vec![("peer", l.peer.as_str())], l.datagrams_out as f64)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_exposition_format() {
        let mut e = Exposition::new();
        e.counter("x_total", "Things.", 3);
        e.gauge("y", "Level.", 0.5);
        e.family(
            "z",
            "gauge",
            "Per peer.",
            vec![(vec![("peer", "a\"b\\c\nd")], 1.0)],
        );
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\
             # HELP y Level.\n# TYPE y gauge\ny 0.5\n\
             # HELP z Per peer.\n# TYPE z gauge\nz{peer=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = crate::histogram::Histogram::new(&[0.1, 1.0]);
        h.observe(std::time::Duration::from_millis(50));
        h.observe(std::time::Duration::from_millis(500));
        h.observe(std::time::Duration::from_secs(3));
        let snap = h.snapshot();
        let mut e = Exposition::new();
        e.histogram("t_seconds", "T.", [(vec![("phase", "ice")], &snap)]);
        assert_eq!(
            e.finish(),
            "# HELP t_seconds T.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{phase=\"ice\",le=\"0.1\"} 1\n\
             t_seconds_bucket{phase=\"ice\",le=\"1\"} 2\n\
             t_seconds_bucket{phase=\"ice\",le=\"+Inf\"} 3\n\
             t_seconds_sum{phase=\"ice\"} 3.55\n\
             t_seconds_count{phase=\"ice\"} 3\n"
        );
    }

    #[test]
    fn a_cluster_node_writes_every_tree_counter_once() {
        let mut e = Exposition::new();
        e.cluster(&ClusterStats::default());
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
