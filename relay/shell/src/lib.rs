//! The thin IO shell around `relay-proto`, shared by the gateway and the `relay` binary: QUIC
//! links between nodes (quinn) and the cluster's proof of membership (mutual TLS pinned to the
//! cluster certificate), the task that drives one node's `TreeNode` (`cluster`), drain on
//! SIGTERM, and telemetry out (the cluster's metrics, OTLP/HTTP push).

#![warn(missing_docs)]

pub mod cluster;
pub mod cluster_metrics;
pub mod cluster_tls;
pub mod drain;
pub mod links;
pub mod otlp;
pub mod otlp_push;
pub mod settings;
