//! The gateway's Prometheus metrics (`GET /metrics`): the node's counters and gauges as
//! `/v1/stats` has them, per-stream viewers for the busiest streams only (label cardinality stays
//! bounded however many streams there are; no session id is ever a label), and, in a cluster,
//! the tree's and links' metrics (`relay_proto::metrics`). Names follow Prometheus' conventions:
//! `_total` counters, base units.

use relay_proto::metrics::{Exposition, Kind};

use crate::join_metrics::{PHASES, Role};
use crate::node::Node;

/// Streams with a `stream` label at most: the ones with the most viewers.
pub const MAX_STREAM_SERIES: usize = 50;

/// The Prometheus text of [`gather`].
pub fn render(node: &Node) -> String {
    gather(node).finish()
}

/// Every metric of the node, once: for `/metrics` and for OTLP.
pub fn gather(node: &Node) -> Exposition {
    let s = node.stats();
    let mut e = Exposition::new();
    let gauges: [(&str, &str, usize); 5] = [
        (
            "gateway_publishers",
            "Sessions publishing media tracks on this node.",
            node.registry.publisher_count(),
        ),
        (
            "gateway_sessions",
            "Sessions (PeerConnections) on this node.",
            s.sessions,
        ),
        (
            "gateway_sessions_pending",
            "Sessions answered that have not connected yet.",
            s.pending_sessions,
        ),
        (
            "gateway_streams",
            "Streams published on this node.",
            s.streams,
        ),
        ("gateway_tracks", "Tracks published on this node.", s.tracks),
    ];
    for (name, help, value) in gauges {
        e.gauge(name, help, value as f64);
    }
    let mut counters: Vec<(&str, &str, u64)> = vec![
        (
            "gateway_udp_received_bytes_total",
            "UDP payload bytes received.",
            s.udp_received_bytes,
        ),
        (
            "gateway_data_channel_messages_received_total",
            "Data channel messages received from publishing sessions.",
            s.channel_messages_received,
        ),
        (
            "gateway_data_channel_messages_delivered_total",
            "Data channel messages written to subscribing sessions.",
            s.channel_messages_delivered,
        ),
        (
            "gateway_rtp_packets_received_total",
            "RTP packets received from publishers.",
            s.packets_in,
        ),
        (
            "gateway_rtp_packets_sent_total",
            "RTP packets sent to viewers.",
            s.packets_out,
        ),
        (
            "gateway_cross_worker_packets_total",
            "Packets handed from a publisher's worker to another worker.",
            s.cross_worker_packets,
        ),
        (
            "gateway_keyframe_runs_served_total",
            "Viewers started on a cached keyframe run.",
            s.keyframe_runs_served,
        ),
        (
            "gateway_keyframe_requests_received_total",
            "Keyframe requests (PLI/FIR) from viewers.",
            s.keyframe_requests_received,
        ),
        (
            "gateway_keyframe_requests_sent_total",
            "Keyframe requests sent to publishers (after aggregation).",
            s.keyframe_requests_sent,
        ),
        (
            "gateway_nacks_received_total",
            "Sequence numbers viewers without RTX asked for.",
            s.nacks_received,
        ),
        (
            "gateway_nacks_answered_total",
            "Of those, answered from the packet cache.",
            s.nacks_answered,
        ),
        (
            "gateway_nacks_missed_total",
            "Of those, no longer in the cache.",
            s.nacks_missed,
        ),
        (
            "gateway_nack_messages_rtx_total",
            "NACK messages from viewers with RTX (repaired by str0m).",
            s.nacks_rtx,
        ),
        (
            "gateway_layer_switches_total",
            "Simulcast layer switches for viewers.",
            s.layer_switches,
        ),
        (
            "gateway_worker_panics_total",
            "Panics caught in media workers (the session was closed).",
            s.panics,
        ),
        (
            "gateway_udp_datagrams_received_total",
            "UDP datagrams received.",
            s.udp_received,
        ),
        (
            "gateway_udp_datagrams_sent_total",
            "UDP datagrams sent.",
            s.udp_sent,
        ),
        (
            "gateway_udp_sent_bytes_total",
            "UDP payload bytes sent.",
            s.udp_sent_bytes,
        ),
        (
            "gateway_udp_send_calls_total",
            "Send syscalls that carried datagrams.",
            s.udp_send_calls,
        ),
        (
            "gateway_udp_send_errors_total",
            "UDP sends that failed.",
            s.udp_send_errors,
        ),
        (
            "gateway_udp_unrouted_total",
            "Datagrams from sources no session owns (dropped).",
            s.udp_unrouted,
        ),
        (
            "gateway_forwarded_datagrams_total",
            "Client datagrams sent on to the gateway that holds their session (one address).",
            s.forwarding.forwarded,
        ),
        (
            "gateway_probed_datagrams_total",
            "Client datagrams of an unknown flow probed to every other gateway (a moved flow).",
            s.forwarding.probed,
        ),
        (
            "gateway_tunnelled_in_datagrams_total",
            "Datagrams another gateway sent on that reached a session here.",
            s.forwarding.delivered,
        ),
        (
            "gateway_tunnelled_out_datagrams_total",
            "Datagrams of sessions other gateways hold, sent on from here to their clients.",
            s.forwarding.replied,
        ),
        (
            "gateway_tunnel_refused_total",
            "Tunnel frames refused: not made under the cluster's key, or malformed.",
            s.forwarding.refused,
        ),
        (
            "gateway_stun_integrity_failures_total",
            "STUN naming a session whose MESSAGE-INTEGRITY failed (dropped).",
            s.stun_integrity_failures,
        ),
        (
            "gateway_data_channel_drops_total",
            "Data channel messages a subscriber missed (not open, or too much unsent).",
            s.channel_drops,
        ),
        (
            "gateway_turn_tls_handshake_failures_total",
            "TLS connections to the TURN service whose handshake failed or timed out.",
            s.turn_tls_handshake_failures,
        ),
    ];
    if let Some(t) = s.ice_tcp {
        e.gauge(
            "gateway_ice_tcp_connections",
            "Open ICE-TCP connections.",
            t.connections as f64,
        );
        counters.extend([
            (
                "gateway_ice_tcp_connections_accepted_total",
                "ICE-TCP connections accepted.",
                t.accepted,
            ),
            (
                "gateway_ice_tcp_connections_refused_total",
                "ICE-TCP connections closed over the cap or for proving no session in time.",
                t.refused,
            ),
            (
                "gateway_ice_tcp_frames_received_total",
                "RFC 4571 frames received over ICE-TCP.",
                t.frames_received,
            ),
            (
                "gateway_ice_tcp_frames_sent_total",
                "RFC 4571 frames queued to ICE-TCP clients.",
                t.frames_sent,
            ),
            (
                "gateway_ice_tcp_drops_total",
                "ICE-TCP frames dropped: unrouted, forged STUN, or a full write queue.",
                t.dropped,
            ),
        ]);
    }
    for (name, help, value) in counters {
        e.counter(name, help, value);
    }
    let workers: Vec<String> = (0..s.worker_sessions.len())
        .map(|i| i.to_string())
        .collect();
    e.family(
        "gateway_worker_sessions",
        Kind::Gauge,
        "Sessions per media worker (its load).",
        workers
            .iter()
            .zip(&s.worker_sessions)
            .map(|(w, n)| (vec![("worker", w.as_str())], *n as f64)),
    );
    let mut viewers = node.registry.viewers_by_stream();
    viewers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    viewers.truncate(MAX_STREAM_SERIES);
    e.family(
        "gateway_stream_viewers",
        Kind::Gauge,
        "WHEP viewers on this node per stream (wherever it is published), for the streams \
         with the most (at most 50 series); sum over nodes for a stream's audience.",
        viewers
            .iter()
            .map(|(name, n)| (vec![("stream", name.as_str())], *n as f64)),
    );
    let mut streams = node.registry.streams();
    streams.sort_by(|a, b| b.viewers.cmp(&a.viewers).then_with(|| a.name.cmp(&b.name)));
    streams.truncate(MAX_STREAM_SERIES);
    join_histograms(&mut e, node);
    e.family(
        "gateway_stream_received_bits_per_second",
        Kind::Gauge,
        "Bitrate a stream's publisher on this node sends (all its tracks and layers), for the \
         50 streams with the most viewers here.",
        streams.iter().map(|st| {
            let bps: u64 = st.track_stats.iter().map(|t| t.bitrate_bps).sum();
            (vec![("stream", st.name.as_str())], bps as f64)
        }),
    );
    if let Some(cluster) = &s.cluster {
        relay_shell::cluster_metrics::write(&mut e, cluster);
    }
    e
}

fn join_histograms(e: &mut Exposition, node: &Node) {
    let per_role: Vec<_> = Role::ALL
        .iter()
        .map(|r| (r.label(), node.join.snapshot(*r)))
        .collect();
    e.histogram(
        "gateway_join_phase_seconds",
        "A client's join, phase by phase: answer (HTTP request → session made), ice, dtls, \
         first_packet (DTLS → first media packet sent to a viewer / received from a publisher).",
        per_role.iter().flat_map(|(role, (phases, _))| {
            PHASES
                .iter()
                .zip(phases.iter())
                .map(move |(p, h)| (vec![("role", *role), ("phase", *p)], h))
        }),
    );
    e.histogram(
        "gateway_join_seconds",
        "A client's whole join: its HTTP request (WHIP/WHEP POST, API call) → first media packet.",
        per_role
            .iter()
            .map(|(role, (_, total))| (vec![("role", *role)], total)),
    );
    let http = node.http_timing.snapshot();
    e.histogram(
        "gateway_http_request_duration_seconds",
        "HTTP requests by method and matched route.",
        http.iter()
            .map(|(m, r, h)| (vec![("method", m.as_str()), ("route", r.as_str())], h)),
    );
}
