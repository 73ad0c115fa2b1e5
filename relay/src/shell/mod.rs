//! The thin IO shell around the sans-IO media plane: QUIC links between nodes (quinn), cluster
//! membership proof, and the `relay` binary's runtime glue.

pub mod cluster;
pub mod cluster_tls;
pub mod drain;
pub mod links;
pub mod otlp_push;
