//! One node's cluster settings, the same for a gateway and a relay: where its links listen, the
//! id peers dial, the cluster's name and certificate, its members (static and from DNS) and its
//! trees' knobs. Each binary fills them from its own flags and environment (`GATEWAY_CLUSTER_*`,
//! `RELAY_*`; a gateway's TOML `[cluster]` too), checks them with [`ClusterSettings::validate`]
//! and turns them into the shell's [`ClusterConfig`] with [`ClusterSettings::config`], so the two
//! never read or check a setting differently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use relay_proto::tree::TreeConfig;
use serde::Deserialize;

use crate::cluster::ClusterConfig;
use crate::cluster_tls::{ClusterIdentity, LinkTiming};

/// A node's cluster settings (the gateway's TOML `[cluster]` table has these names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The UDP address of the node's QUIC listener.
    pub listen: SocketAddr,
    /// The address peers dial (default: `listen`; required when `listen` is a wildcard).
    #[serde(default)]
    pub node_id: Option<String>,
    /// Nodes of another cluster are refused.
    #[serde(default = "default_name")]
    pub name: String,
    /// The cluster certificate and key (PEM) every node holds.
    pub cert: PathBuf,
    /// The cluster key (PEM), the certificate's private key.
    pub key: PathBuf,
    /// Static members, `tier:host:port`.
    #[serde(default)]
    pub members: Vec<String>,
    /// Members from DNS, `tier:name:port` (a Kubernetes headless Service).
    #[serde(default)]
    pub members_dns: Vec<String>,
    /// How often DNS members are re-resolved (ms).
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh_ms: u64,
    /// A track nobody below wants any more is unsubscribed upward after this long (ms).
    #[serde(default = "default_prune_grace")]
    pub prune_grace_ms: u64,
    /// Children one node feeds per track at most; more are redirected.
    #[serde(default = "default_fanout_limit")]
    pub fanout_limit: usize,
    /// TEST ONLY: drop this fraction of outgoing media datagrams, seeded.
    #[serde(default)]
    pub test_drop_datagrams: f64,
    /// TEST ONLY: seed of which datagrams are dropped, so a lossy run can be repeated.
    #[serde(default = "default_seed")]
    pub test_seed: u64,
}

fn default_name() -> String {
    "default".into()
}

fn default_dns_refresh() -> u64 {
    2000
}

fn default_prune_grace() -> u64 {
    5000
}

fn default_fanout_limit() -> usize {
    100
}

fn default_seed() -> u64 {
    1
}

impl ClusterSettings {
    /// Settings with every default, listening on `listen` with the cluster's `cert` and `key`.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> ClusterSettings {
        ClusterSettings {
            listen,
            node_id: None,
            name: default_name(),
            cert,
            key,
            members: Vec::new(),
            members_dns: Vec::new(),
            dns_refresh_ms: default_dns_refresh(),
            prune_grace_ms: default_prune_grace(),
            fanout_limit: default_fanout_limit(),
            test_drop_datagrams: 0.0,
            test_seed: default_seed(),
        }
    }

    /// The id peers dial this node by.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// What a node refuses to start with, said so that an operator can fix it.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.is_none() && self.listen.ip().is_unspecified() {
            return Err("with a wildcard cluster listen address, set the node id to the address peers dial (in Kubernetes: $(POD_IP):port)".into());
        }
        for m in self.members.iter().chain(&self.members_dns) {
            parse_member(m)?;
        }
        if !(0.0..1.0).contains(&self.test_drop_datagrams) {
            return Err("test_drop_datagrams must be in [0, 1)".into());
        }
        Ok(())
    }

    /// The shell's configuration for a node of `tier` (0: gateways), its certificate loaded.
    pub fn config(&self, tier: u8) -> Result<ClusterConfig, String> {
        self.validate()?;
        let identity = ClusterIdentity::load(&self.cert, &self.key)?;
        let node_id = self.node_id();
        let members = |list: &[String]| -> Result<Vec<(u8, String)>, String> {
            list.iter().map(|m| parse_member(m)).collect()
        };
        let mut tree = TreeConfig::new(node_id.clone(), tier);
        tree.prune_grace = Duration::from_millis(self.prune_grace_ms);
        tree.fanout_limit = self.fanout_limit.max(1);
        Ok(ClusterConfig {
            node_id,
            tier,
            cluster: self.name.clone(),
            listen: self.listen,
            identity,
            members: members(&self.members)?,
            dns: members(&self.members_dns)?,
            dns_refresh: Duration::from_millis(self.dns_refresh_ms),
            timing: LinkTiming::default(),
            tree,
            drop_datagrams: self.test_drop_datagrams,
            drop_seed: self.test_seed,
        })
    }
}

/// `tier:host:port` (or `tier:name:port`); the host may be a bracketed IPv6 address.
pub fn parse_member(s: &str) -> Result<(u8, String), String> {
    let (tier, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected tier:host:port"))?;
    let tier: u8 = tier
        .parse()
        .map_err(|_| format!("{s:?}: tier {tier:?} is not a number 0-255"))?;
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((tier, addr.to_string()))
        }
        _ => Err(format!("{s:?}: expected tier:host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_tier_host_port() {
        assert_eq!(
            parse_member("1:10.0.0.1:7000"),
            Ok((1, "10.0.0.1:7000".into()))
        );
        assert_eq!(parse_member("0:[::1]:7000"), Ok((0, "[::1]:7000".into())));
        assert_eq!(
            parse_member("1:relay.wish.svc:7000"),
            Ok((1, "relay.wish.svc:7000".into()))
        );
        for bad in [
            "10.0.0.1:7000",
            "x:a:1",
            "1:nohost",
            "1::7000",
            "1:a:port",
            "300:a:1",
        ] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_listener_needs_a_node_id() {
        let mut s = ClusterSettings::new(
            "0.0.0.0:7000".parse().expect("addr"),
            "c".into(),
            "k".into(),
        );
        assert!(s.validate().is_err());
        s.node_id = Some("10.0.0.1:7000".into());
        assert_eq!(s.validate(), Ok(()));
        s.members.push("nonsense".into());
        assert!(s.validate().is_err());
    }
}
