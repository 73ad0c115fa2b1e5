//! The Kubernetes deployment in `k8s/` agrees with the binaries and with itself.
//!
//! Every YAML document of `k8s/*.yaml` is parsed, with the ConfigMaps `k8s/kustomization.yaml`
//! generates: that is the default variant (`kubectl apply -k k8s/`). Each kustomize Component of
//! `k8s/alternatives/` (e.g. `hostnetwork/`) makes another variant: the default's objects with the
//! component's resources added and its patches applied (`$patch: delete`, map merges). Every
//! variant is checked as a whole:
//! - every workload (Deployment, StatefulSet, DaemonSet): readiness and liveness probes on
//!   `/healthz` at a port the binary serves HTTP on, resources (CPU and memory requests, a memory
//!   limit), a non-root security context, an explicit `command` naming a binary the Dockerfile
//!   builds, the cluster Secret mounted read-only with the cert/key env pointing into it, a grace
//!   period longer than any preStop sleep, hostNetwork only with `ClusterFirstWithHostNet` DNS and
//!   one pod per node;
//! - env names are ones the binary reads: they are grepped out of `gateway/src/config.rs` and
//!   `relay/src/main.rs` (`env = "…"`) at test time, so a renamed flag fails here; no test-only
//!   variables; `$(VAR)` only after VAR is defined; the node id is `$(pod IP):<cluster port>`;
//!   listen addresses match declared container ports; all nodes share one cluster name;
//! - the membership DNS names (`tier:name:port`) point at headless Services (`clusterIP: None`,
//!   `publishNotReadyAddresses`) that exist, select the workloads of that tier, carry the port,
//!   and every tier is listed by every node;
//! - Services select something and their target ports exist with the same protocol; the HPA
//!   (autoscaling/v2) targets a Deployment that leaves `replicas` to it, and scales on a Pods
//!   metric (the media) first with CPU as the fallback; PDBs select something; every object
//!   is in the one Namespace; Secrets referenced are made by `k8s/cluster-secret.sh`;
//!   `k8s/kustomization.yaml` lists every file, its images are used, and it enables no
//!   alternative; each alternative is a Component listing its files, whose patches apply;
//! - every Deployment running a node has an HPA and a PDB; no two workloads select each other's
//!   pods; no hostNetwork or hostPort under a `restricted`/`baseline` Pod Security namespace;
//! - gateways: all listen on the same fixed HTTP and UDP ports; LoadBalancer Services in front of
//!   them have no sessionAffinity and an explicit externalTrafficPolicy. In the default variant
//!   (one address) a gateway is a Deployment on the pod network with no hostPort, its candidate
//!   is `$(pod IP)`, `GATEWAY_PUBLIC_IPS` is set (not from a pod field), and every port its
//!   candidates name (UDP, ICE-TCP unless `GATEWAY_NO_ICE_TCP`) is a LoadBalancer port of the same
//!   number reaching it, its HTTP port behind one too; in the hostNetwork alternative it is on
//!   the host network. ConfigMap keys the env reads exist;
//! - monitoring (`k8s/monitoring/`, its own kustomization): every metric name the Grafana
//!   dashboard's PromQL and the prometheus-adapter rules use is one `gateway/src/metrics.rs` or
//!   `relay/shell/src/cluster_metrics.rs` writes (their quoted `"gateway_…"`, `"tree_…"`, `"cluster_…"` names are
//!   grepped at test time; `_bucket`/`_sum`/`_count` of a histogram count as its name); the
//!   dashboard parses, has the datasource/namespace/pod variables, and every panel has the
//!   datasource variable and targets whose selectors follow `$namespace` and `$pod`; the adapter
//!   rule maps `namespace`/`pod`, rates counters, and makes each HPA's Pods metric out of a metric
//!   the binary it scales exports; the Prometheus scrape jobs, run (pod discovery and relabelling, with a
//!   small RE2 subset) against every container port of the workloads, keep exactly the port each
//!   binary serves `/metrics` on, label targets with namespace/pod/container, and send the
//!   gateway's admin token.
//!
//! Problems are collected, not stopped at: the failure lists every one as
//! `k8s/<file>: <Kind>/<name>[, container <c>]: <what>`. The `breaking_*` tests apply one
//! breakage each to an in-memory copy and require the matching complaint, so the checks are
//! known to bite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The Secret holding the cluster certificate and key, mounted by every node.
const CLUSTER_SECRET: &str = "wish-cluster";
/// Env names that are not the binaries' own but are fine without being referenced (tracing's
/// filter; glibc's malloc tunables, read by the C library at start).
const AMBIENT_ENV: &[&str] = &["RUST_LOG", "GLIBC_TUNABLES"];

/// What the test knows about each binary; the names are also checked against the source.
struct Binary {
    name: &'static str,
    source: &'static str,
    prefix: &'static str,
    node_id: &'static str,
    cluster_listen: &'static str,
    cert: &'static str,
    key: &'static str,
    members_dns: &'static str,
    cluster_name: &'static str,
    /// Env holding the tier (None: always tier 0) and its default.
    tier: Option<(&'static str, u8)>,
    /// Listen-address env names and the protocol their port must be declared with.
    listens: &'static [(&'static str, &'static str)],
    /// Listen env whose port serves `/healthz` over HTTP.
    health: &'static str,
}

const BINARIES: &[Binary] = &[
    Binary {
        name: "gateway",
        source: "gateway/src/config.rs",
        prefix: "GATEWAY_",
        node_id: "GATEWAY_NODE_ID",
        cluster_listen: "GATEWAY_CLUSTER_LISTEN",
        cert: "GATEWAY_CLUSTER_CERT",
        key: "GATEWAY_CLUSTER_KEY",
        members_dns: "GATEWAY_CLUSTER_MEMBERS_DNS",
        cluster_name: "GATEWAY_CLUSTER_NAME",
        tier: None,
        listens: &[
            ("GATEWAY_HTTP_LISTEN", "TCP"),
            ("GATEWAY_UDP_LISTEN", "UDP"),
            ("GATEWAY_ICE_TCP_LISTEN", "TCP"),
            ("GATEWAY_CLUSTER_LISTEN", "UDP"),
            ("GATEWAY_TURN_LISTEN", "UDP"),
            ("GATEWAY_TURN_LISTEN_TCP", "TCP"),
            ("GATEWAY_TURN_LISTEN_TLS", "TCP"),
        ],
        health: "GATEWAY_HTTP_LISTEN",
    },
    Binary {
        name: "relay",
        source: "relay/src/main.rs",
        prefix: "RELAY_",
        node_id: "RELAY_NODE_ID",
        cluster_listen: "RELAY_LISTEN",
        cert: "RELAY_CLUSTER_CERT",
        key: "RELAY_CLUSTER_KEY",
        members_dns: "RELAY_MEMBERS_DNS",
        cluster_name: "RELAY_CLUSTER",
        tier: Some(("RELAY_TIER", 1)),
        listens: &[("RELAY_LISTEN", "UDP"), ("RELAY_STATS_LISTEN", "TCP")],
        health: "RELAY_STATS_LISTEN",
    },
];

/// Kustomize components, each another way to deploy: opt-in, never in `kubectl apply -k k8s/`.
const ALTERNATIVES_DIR: &str = "k8s/alternatives/";

/// How a variant runs its gateways.
#[derive(Clone, Copy, PartialEq, Debug)]
enum GatewayNetwork {
    /// On the pod network behind LoadBalancer Services, any gateway serving any session.
    OneAddress,
    /// On each node's network, each gateway its node's own address.
    HostNetwork,
}

/// The alternatives this test knows, and how each runs its gateways (k8s/ itself: one address).
const ALTERNATIVES: &[(&str, GatewayNetwork)] =
    &[("k8s/alternatives/hostnetwork/", GatewayNetwork::HostNetwork)];

const WORKLOAD_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];
/// Monitoring manifests: applied on their own (`kubectl apply -k k8s/monitoring/`).
const MONITORING: &str = "k8s/monitoring/";
const DASHBOARD: &str = "k8s/monitoring/grafana-dashboard.json";
/// Where the metric names are written, by binary. The relay binary exports what
/// `relay/shell/src/cluster_metrics.rs` writes; the gateway exports both files' metrics.
const METRICS_SOURCES: &[(&str, &str)] = &[
    ("gateway", "gateway/src/metrics.rs"),
    ("relay", "relay/shell/src/cluster_metrics.rs"),
];
const METRIC_PREFIXES: &[&str] = &["gateway_", "tree_", "cluster_"];
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
];

// ---------------------------------------------------------------------------------------------
// Inputs

/// The files the checks read, by repository-relative path (so tests can break copies of them).
#[derive(Clone)]
struct Inputs {
    files: BTreeMap<String, String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("whip-tests sits in the workspace root")
        .to_path_buf()
}

impl Inputs {
    fn load() -> Inputs {
        let root = repo_root();
        let mut files = BTreeMap::new();
        let k8s = root.join("k8s");
        let entries = std::fs::read_dir(&k8s)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", k8s.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".sh") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                files.insert(format!("k8s/{name}"), text);
            }
        }
        if let Ok(entries) = std::fs::read_dir(root.join(MONITORING)) {
            for entry in entries {
                let path = entry.expect("directory entry").path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                    files.insert(format!("{MONITORING}{name}"), text);
                }
            }
        }
        // The components of k8s/alternatives/, one directory each.
        if let Ok(dirs) = std::fs::read_dir(root.join(ALTERNATIVES_DIR)) {
            for dir in dirs {
                let dir = dir.expect("directory entry").path();
                let dname = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let dname = dname.to_string();
                for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                    let path = entry.expect("directory entry").path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.ends_with(".yaml") || name.ends_with(".yml") {
                        let text = std::fs::read_to_string(&path)
                            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                        files.insert(format!("{ALTERNATIVES_DIR}{dname}/{name}"), text);
                    }
                }
            }
        }
        for rel in [
            "Dockerfile",
            "gateway/src/config.rs",
            "relay/src/main.rs",
            "gateway/src/metrics.rs",
            "relay/shell/src/cluster_metrics.rs",
        ] {
            if let Ok(text) = std::fs::read_to_string(root.join(rel)) {
                files.insert(rel.to_string(), text);
            }
        }
        Inputs { files }
    }

    /// Replace the first `from` in `file` by `to`; the breakage must apply.
    fn broken(&self, file: &str, from: &str, to: &str) -> Inputs {
        let mut copy = self.clone();
        let text = copy
            .files
            .get_mut(file)
            .unwrap_or_else(|| panic!("no file {file} to break"));
        assert!(
            text.contains(from),
            "{file} no longer contains {from:?}: update this breaking test"
        );
        *text = text.replacen(from, to, 1);
        copy
    }

    /// Edit a copy of `file` as JSON; the edit must apply.
    fn edited_json(&self, file: &str, edit: impl FnOnce(&mut Value) -> bool) -> Inputs {
        let mut copy = self.clone();
        let text = copy
            .files
            .get_mut(file)
            .unwrap_or_else(|| panic!("no file {file} to break"));
        let mut v: Value = serde_json::from_str(text).expect("valid JSON to start from");
        assert!(
            edit(&mut v),
            "the edit of {file} no longer applies: update this breaking test"
        );
        *text = serde_json::to_string_pretty(&v).expect("JSON");
        copy
    }

    /// The manifests of `kubectl apply -k k8s/`: `k8s/*.yaml`, not the subdirectories.
    fn manifests(&self) -> impl Iterator<Item = (&String, &String)> {
        self.files.iter().filter(|(p, _)| {
            p.strip_prefix("k8s/")
                .is_some_and(|rest| !rest.contains('/'))
                && (p.ends_with(".yaml") || p.ends_with(".yml"))
                && !is_kustomization(p)
        })
    }

    /// The directories of k8s/alternatives/ (`k8s/alternatives/<name>/`).
    fn alternatives(&self) -> BTreeSet<String> {
        self.files
            .keys()
            .filter_map(|p| p.strip_prefix(ALTERNATIVES_DIR))
            .filter_map(|rest| rest.split_once('/'))
            .map(|(dir, _)| format!("{ALTERNATIVES_DIR}{dir}/"))
            .collect()
    }

    /// The manifests of `kubectl apply -k k8s/monitoring/`.
    fn monitoring_manifests(&self) -> impl Iterator<Item = (&String, &String)> {
        self.files.iter().filter(|(p, _)| {
            p.strip_prefix(MONITORING)
                .is_some_and(|rest| !rest.contains('/'))
                && (p.ends_with(".yaml") || p.ends_with(".yml"))
                && !is_kustomization(p)
        })
    }
}

fn is_kustomization(path: &str) -> bool {
    path.ends_with("/kustomization.yaml") || path.ends_with("/kustomization.yml")
}

// ---------------------------------------------------------------------------------------------
// YAML and objects

fn to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                m.insert(key, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
        Yaml::BadValue => return Err("bad YAML value".into()),
    })
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in &docs {
        let v = to_json(d)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

#[derive(Clone)]
struct Obj {
    file: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    v: Value,
}

impl Obj {
    fn at(&self) -> String {
        format!("{}: {}/{}", self.file, self.kind, self.name)
    }
    fn get(&self, pointer: &str) -> Option<&Value> {
        self.v.pointer(pointer)
    }
    fn str(&self, pointer: &str) -> Option<&str> {
        self.get(pointer).and_then(Value::as_str)
    }
    fn is_workload(&self) -> bool {
        WORKLOAD_KINDS.contains(&self.kind.as_str())
    }
    fn pod(&self) -> &Value {
        self.get("/spec/template/spec").unwrap_or(&Value::Null)
    }
    fn template_labels(&self) -> BTreeMap<String, String> {
        string_map(self.get("/spec/template/metadata/labels"))
    }
    fn containers(&self) -> Vec<&Value> {
        self.pod()
            .get("containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The names given as `env = "…"` in a clap source file.
fn env_names_in(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find("env = \"") {
        rest = &rest[i + 7..];
        if let Some(end) = rest.find('"') {
            names.insert(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    names
}

#[derive(Debug)]
enum EnvSrc {
    Literal(String),
    Field(String),
    Secret {
        name: String,
        key: String,
        optional: bool,
    },
    ConfigMap {
        name: String,
        key: String,
        optional: bool,
    },
    Other,
}

fn env_of(c: &Value) -> Vec<(String, EnvSrc)> {
    let Some(list) = c.get("env").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let name = e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let src = if let Some(v) = e.get("value") {
                EnvSrc::Literal(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            } else if let Some(f) = e
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                EnvSrc::Field(f.to_string())
            } else if let Some(s) = e.pointer("/valueFrom/secretKeyRef") {
                let (name, key, optional) = key_ref(s);
                EnvSrc::Secret {
                    name,
                    key,
                    optional,
                }
            } else if let Some(s) = e.pointer("/valueFrom/configMapKeyRef") {
                let (name, key, optional) = key_ref(s);
                EnvSrc::ConfigMap {
                    name,
                    key,
                    optional,
                }
            } else {
                EnvSrc::Other
            };
            (name, src)
        })
        .collect()
}

/// The name, key and `optional` of a `secretKeyRef` or `configMapKeyRef`.
fn key_ref(r: &Value) -> (String, String, bool) {
    let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
    (s("name"), s("key"), optional)
}

/// Listen addresses a flag turns off: not needed (and misleading) when that flag is "true".
const DISABLED_BY: &[(&str, &str)] = &[("GATEWAY_ICE_TCP_LISTEN", "GATEWAY_NO_ICE_TCP")];

fn disabled(env: &[(String, EnvSrc)], listen: &str) -> bool {
    DISABLED_BY
        .iter()
        .any(|(l, flag)| *l == listen && literal(env, flag) == Some("true"))
}

fn literal<'a>(env: &'a [(String, EnvSrc)], name: &str) -> Option<&'a str> {
    env.iter().find_map(|(n, s)| match s {
        EnvSrc::Literal(v) if n == name => Some(v.as_str()),
        _ => None,
    })
}

/// `$(VAR)` references in a Kubernetes env value (`$$(` is an escape).
fn references(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if bytes[i] == b'$'
            && bytes[i + 1] == b'('
            && let Some(end) = value[i + 2..].find(')')
        {
            out.push(value[i + 2..i + 2 + end].to_string());
            i += 3 + end;
            continue;
        }
        i += 1;
    }
    out
}

struct ContainerPort {
    name: Option<String>,
    port: u64,
    protocol: String,
    host_port: Option<u64>,
}

fn ports_of(c: &Value) -> Vec<ContainerPort> {
    c.get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| ContainerPort {
                    name: p.get("name").and_then(Value::as_str).map(str::to_string),
                    port: as_u64(p.get("containerPort")).unwrap_or(0),
                    protocol: p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                    host_port: as_u64(p.get("hostPort")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Service `targetPort` or probe `port` (a name or a number) against a container's ports.
fn resolve_port<'a>(ports: &'a [ContainerPort], target: &Value) -> Option<&'a ContainerPort> {
    match target {
        Value::String(name) => match name.parse::<u64>() {
            Ok(n) => ports.iter().find(|p| p.port == n),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str())),
        },
        Value::Number(n) => ports.iter().find(|p| Some(p.port) == n.as_u64()),
        _ => None,
    }
}

fn binary_of(c: &Value) -> Option<&'static Binary> {
    let cmd = c.pointer("/command/0").and_then(Value::as_str)?;
    let base = cmd.rsplit('/').next().unwrap_or(cmd);
    BINARIES.iter().find(|b| b.name == base)
}

// ---------------------------------------------------------------------------------------------
// The checks

#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn bad(&mut self, at: &str, what: impl std::fmt::Display) {
        self.0.push(format!("{at}: {what}"));
    }
}

fn check(inputs: &Inputs) -> Vec<String> {
    let mut r = Report::default();

    // Env names the binaries read, from their sources.
    let mut known_env: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for b in BINARIES {
        match inputs.files.get(b.source) {
            None => r.bad(
                b.source,
                "missing: cannot learn which env names the binary reads",
            ),
            Some(src) => {
                let names = env_names_in(src);
                if names.is_empty() {
                    r.bad(
                        b.source,
                        "no `env = \"…\"` attributes found: has the clap style changed?",
                    );
                }
                known_env.insert(b.name, names);
            }
        }
    }

    let objs = parse_objects(inputs.manifests(), &mut r);

    // Secrets and keys k8s/cluster-secret.sh creates.
    let script = inputs.files.get("k8s/cluster-secret.sh");
    if script.is_none() {
        r.bad(
            "k8s/cluster-secret.sh",
            "missing: nothing creates the cluster Secret",
        );
    }
    let script = script.map(String::as_str).unwrap_or("");
    // The word after each marker: `secret generic NAME`, `--from-file=KEY=…`, `--from-literal=KEY=…`.
    let words_after = |markers: &[&str]| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for marker in markers {
            for (i, _) in script.match_indices(marker) {
                let word: String = script[i + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                    .collect();
                if !word.is_empty() {
                    out.insert(word);
                }
            }
        }
        out
    };
    let script_secrets = words_after(&["secret generic ", "secret tls "]);
    let mut script_keys = words_after(&["--from-file=", "--from-literal="]);
    // `kubectl create secret tls` names its two keys itself.
    if script.contains("secret tls ") {
        script_keys.extend(["tls.crt".to_string(), "tls.key".to_string()]);
    }
    if !script.is_empty() && !script.contains("cluster-cert --out") {
        r.bad(
            "k8s/cluster-secret.sh",
            "does not run `relay cluster-cert --out DIR`",
        );
    }
    if !script.is_empty() && !script_secrets.contains(CLUSTER_SECRET) {
        r.bad(
            "k8s/cluster-secret.sh",
            format!("does not create the Secret {CLUSTER_SECRET}"),
        );
    }

    let dockerfile = inputs.files.get("Dockerfile").map(String::as_str);
    if dockerfile.is_none() {
        r.bad("Dockerfile", "missing");
    }
    let ctx = Ctx {
        known_env,
        script_secrets,
        script_keys,
        dockerfile,
    };

    let kpath = "k8s/kustomization.yaml";
    let kustomization: Option<Value> = match inputs.files.get(kpath) {
        None => {
            r.bad(kpath, "missing");
            None
        }
        Some(text) => match parse_yaml(text) {
            Err(e) => {
                r.bad(kpath, format!("not valid YAML: {e}"));
                None
            }
            Ok(docs) => Some(docs.into_iter().next().unwrap_or(Value::Null)),
        },
    };

    // The variants: k8s/ (with the ConfigMaps its kustomization generates), and k8s/ with each
    // alternative.
    let mut base = objs;
    if let Some(k) = &kustomization {
        base.extend(generated_config_maps(k, kpath));
    }
    let mut variants = alternatives(inputs, &base, &mut r);
    variants.insert(
        0,
        Variant {
            name: "k8s/".to_string(),
            network: GatewayNetwork::OneAddress,
            objs: base,
        },
    );
    let mut hpa_pod_metrics = Vec::new();
    for v in &variants {
        hpa_pod_metrics.extend(check_variant(v, &ctx, &mut r));
    }
    let mut seen = BTreeSet::new();
    let workloads: Vec<&Obj> = variants
        .iter()
        .flat_map(|v| &v.objs)
        .filter(|o| o.is_workload() && seen.insert(o.at()))
        .collect();

    // Kustomization: lists every manifest, nothing else, and its images are used (by every
    // variant: a component's objects get the images of the kustomization that includes it).
    // The alternatives are opt-in.
    if let Some(k) = &kustomization {
        for c in k
            .get("components")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            r.bad(kpath, format!("lists the component {c}: `kubectl apply -k k8s/` must deploy the Deployment variant only (alternatives are opt-in)"));
        }
        let listed = listed_resources(k, "k8s/");
        let files: BTreeSet<String> = inputs.manifests().map(|(p, _)| p.clone()).collect();
        for f in files.difference(&listed) {
            r.bad(kpath, format!("does not list {f} under resources"));
        }
        for f in listed.difference(&files) {
            r.bad(kpath, format!("lists {f}, which does not exist"));
        }
        let images: BTreeSet<String> = workloads
            .iter()
            .flat_map(|w| w.containers())
            .filter_map(|c| c.get("image").and_then(Value::as_str))
            .map(|i| i.split('@').next().unwrap_or(i))
            .map(|i| match i.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => name.to_string(),
                _ => i.to_string(),
            })
            .collect();
        let overridden: BTreeSet<String> = k
            .get("images")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for i in overridden.difference(&images) {
            r.bad(
                kpath,
                format!("images entry {i:?} matches no container image"),
            );
        }
        for i in images.difference(&overridden) {
            r.bad(kpath, format!("container image {i:?} has no images entry (it could not be pointed at a registry)"));
        }
    }

    check_monitoring(inputs, &workloads, &hpa_pod_metrics, &mut r);
    // A problem found once per port or per target is one problem.
    let mut seen = BTreeSet::new();
    r.0.retain(|p| seen.insert(p.clone()));
    r.0
}

/// What every variant's checks share: what the binaries read and what the script makes.
struct Ctx<'a> {
    known_env: BTreeMap<&'static str, BTreeSet<String>>,
    script_secrets: BTreeSet<String>,
    script_keys: BTreeSet<String>,
    dockerfile: Option<&'a str>,
}

/// One way to deploy: `kubectl apply -k k8s/`, or k8s/ with one component of k8s/alternatives/.
struct Variant {
    /// `k8s/`, or the alternative's directory.
    name: String,
    network: GatewayNetwork,
    objs: Vec<Obj>,
}

/// The checks of one variant's objects; returns its HPAs' Pods metrics (HPA, metric, binary).
fn check_variant(
    v: &Variant,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> Vec<(String, String, &'static str)> {
    let objs = &v.objs;
    let (known_env, script_secrets, script_keys, dockerfile) = (
        &ctx.known_env,
        &ctx.script_secrets,
        &ctx.script_keys,
        ctx.dockerfile,
    );
    let find = |kind: &str, name: &str, ns: &str| {
        objs.iter()
            .find(|o| o.kind == kind && o.name == name && o.namespace.as_deref() == Some(ns))
    };

    // One Namespace, and every namespaced object in it.
    let namespaces: Vec<&Obj> = objs.iter().filter(|o| o.kind == "Namespace").collect();
    let ns = match namespaces.as_slice() {
        [one] => one.name.clone(),
        _ => {
            r.bad(
                &v.name,
                format!("expected exactly one Namespace, found {}", namespaces.len()),
            );
            namespaces
                .first()
                .map(|o| o.name.clone())
                .unwrap_or_default()
        }
    };
    for o in objs {
        if !CLUSTER_SCOPED.contains(&o.kind.as_str()) && o.namespace.as_deref() != Some(ns.as_str())
        {
            r.bad(
                &o.at(),
                format!(
                    "metadata.namespace is {:?}, not the Namespace {ns:?}",
                    o.namespace
                ),
            );
        }
    }
    // Label, selector and annotation values are strings in the API (`"true"`, not `true`).
    for o in objs {
        for field in [
            "/metadata/labels",
            "/metadata/annotations",
            "/spec/selector",
            "/spec/selector/matchLabels",
            "/spec/template/metadata/labels",
            "/spec/template/spec/nodeSelector",
        ] {
            let Some(map) = o.get(field).and_then(Value::as_object) else {
                continue;
            };
            if field == "/spec/selector" && o.kind != "Service" {
                continue;
            }
            for (k, v) in map {
                if !v.is_string() {
                    r.bad(
                        &o.at(),
                        format!("{field}/{k} is {v}, not a string: quote it"),
                    );
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for o in objs {
        if !seen.insert((o.kind.clone(), o.namespace.clone(), o.name.clone())) {
            r.bad(&o.at(), "defined twice");
        }
    }

    // Workloads.
    let workloads: Vec<&Obj> = objs.iter().filter(|o| o.is_workload()).collect();
    if workloads.is_empty() {
        r.bad(&v.name, "no Deployment, StatefulSet or DaemonSet");
    }
    // One container running a cluster node: its tier, cluster port, DNS members, cluster name.
    struct Node<'a> {
        obj: &'a Obj,
        tier: u8,
        cluster_port: Option<u16>,
        members: Vec<(u8, String, u16)>,
        cluster_name: String,
    }
    let mut nodes: Vec<Node<'_>> = Vec::new();
    for w in &workloads {
        let at = w.at();
        let pod = w.pod();
        let labels = w.template_labels();
        let selector = string_map(w.get("/spec/selector/matchLabels"));
        if !selects(&selector, &labels) {
            r.bad(
                &at,
                "spec.selector.matchLabels does not match the pod template's labels",
            );
        }
        let host_network = pod
            .get("hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if host_network {
            if pod.get("dnsPolicy").and_then(Value::as_str) != Some("ClusterFirstWithHostNet") {
                r.bad(&at, "hostNetwork without dnsPolicy: ClusterFirstWithHostNet cannot resolve the membership Services");
            }
            let required_anti = pod
                .pointer("/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter().any(|t| {
                        t.get("topologyKey").and_then(Value::as_str)
                            == Some("kubernetes.io/hostname")
                    })
                });
            if w.kind != "DaemonSet" && !required_anti {
                r.bad(&at, "hostNetwork needs one pod per node: a DaemonSet or required pod anti-affinity on kubernetes.io/hostname");
            }
            if w.kind == "DaemonSet" {
                let surge = w.get("/spec/updateStrategy/rollingUpdate/maxSurge");
                if surge.is_some_and(|s| {
                    s != &Value::from(0) && s != &Value::from("0") && s != &Value::from("0%")
                }) {
                    r.bad(&at, "a hostNetwork DaemonSet cannot surge: the new pod needs the old one's host ports");
                }
            }
        }
        // Pod-level security context, inherited by containers.
        let pod_sc = pod.get("securityContext").cloned().unwrap_or(Value::Null);
        let grace = as_u64(pod.get("terminationGracePeriodSeconds"));
        if grace.is_none() {
            r.bad(
                &at,
                "no terminationGracePeriodSeconds: say how long a node gets to close its links",
            );
        }
        // The cluster Secret volume.
        let volumes = pod
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let secret_volume = volumes.iter().find(|v| {
            v.pointer("/secret/secretName").and_then(Value::as_str) == Some(CLUSTER_SECRET)
        });
        if secret_volume.is_none() {
            r.bad(&at, format!("no volume from the Secret {CLUSTER_SECRET}"));
        }
        for v in &volumes {
            let optional = v
                .pointer("/secret/optional")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(name) = v.pointer("/secret/secretName").and_then(Value::as_str)
                && !optional
                && !script_secrets.contains(name)
            {
                r.bad(
                    &at,
                    format!(
                        "mounts the Secret {name}, which k8s/cluster-secret.sh does not create"
                    ),
                );
            }
        }
        let secret_files: BTreeSet<String> = secret_volume
            .map(|v| match v.pointer("/secret/items").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .filter_map(|i| {
                        let key = i.get("key").and_then(Value::as_str)?;
                        if !script_keys.contains(key) {
                            r.bad(&at, format!("Secret {CLUSTER_SECRET} item {key:?} is not a key k8s/cluster-secret.sh creates"));
                        }
                        i.get("path").and_then(Value::as_str).map(str::to_string)
                    })
                    .collect(),
                None => script_keys.clone(),
            })
            .unwrap_or_default();
        let secret_volume_name = secret_volume
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str);

        let containers = w.containers();
        if containers.is_empty() {
            r.bad(&at, "no containers");
        }
        for c in containers {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
            let at = format!("{at}, container {cname}");
            let Some(bin) = binary_of(c) else {
                r.bad(
                    &at,
                    format!(
                        "command[0] must name the binary ({}); the image has no ENTRYPOINT",
                        BINARIES
                            .iter()
                            .map(|b| b.name)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                );
                continue;
            };
            if let Some(df) = dockerfile
                && (!df.contains(&format!("-p {}", bin.name))
                    || !df.contains(&format!("target/release/{}", bin.name)))
            {
                r.bad(
                    &at,
                    format!(
                        "runs `{}`, which the Dockerfile does not build and copy",
                        bin.name
                    ),
                );
            }
            let ports = ports_of(c);
            for p in &ports {
                if host_network && p.host_port.is_some_and(|h| h != p.port) {
                    r.bad(
                        &at,
                        format!(
                            "hostNetwork port {}: hostPort must equal containerPort",
                            p.port
                        ),
                    );
                }
            }
            let env = env_of(c);
            // The API takes strings only: an unquoted 1 or true is refused at apply time.
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if e.get("value").is_some_and(|v| !v.is_string()) {
                    let name = e.get("name").and_then(Value::as_str).unwrap_or("?");
                    r.bad(&at, format!("env {name} value is not a string: quote it"));
                }
            }
            if c.get("command")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| !x.is_string()))
            {
                r.bad(&at, "command has a non-string element: quote it");
            }

            // Env names.
            let known = known_env.get(bin.name);
            let mut defined: Vec<&str> = Vec::new();
            for (i, (name, src)) in env.iter().enumerate() {
                if let EnvSrc::Literal(value) = src {
                    for var in references(value) {
                        if !defined.contains(&var.as_str()) {
                            r.bad(&at, format!("{name} uses $({var}) before defining {var}: Kubernetes would pass the text literally"));
                        }
                    }
                }
                defined.push(name);
                if name.contains("_TEST_") {
                    r.bad(&at, format!("{name} is a test-only setting"));
                }
                if let Some(other) = BINARIES
                    .iter()
                    .find(|b| b.name != bin.name && name.starts_with(b.prefix))
                {
                    r.bad(
                        &at,
                        format!(
                            "{name} belongs to `{}`, but this container runs `{}`",
                            other.name, bin.name
                        ),
                    );
                } else if name.starts_with(bin.prefix) {
                    if known.is_some_and(|k| !k.contains(name)) {
                        r.bad(
                            &at,
                            format!(
                                "{name} is not read by `{}` (no `env = \"{name}\"` in {})",
                                bin.name, bin.source
                            ),
                        );
                    }
                } else if !AMBIENT_ENV.contains(&name.as_str()) {
                    let used = env[i + 1..].iter().any(|(_, s)| {
                        matches!(s, EnvSrc::Literal(v) if references(v).iter().any(|r| r == name))
                    });
                    if !used {
                        r.bad(&at, format!("{name} is read by nothing (not the binary's, not used as $({name}))"));
                    }
                }
                if let EnvSrc::ConfigMap {
                    name: cm,
                    key,
                    optional: false,
                } = src
                    && !objs.iter().any(|o| {
                        o.kind == "ConfigMap"
                            && &o.name == cm
                            && o.namespace == w.namespace
                            && o.get("/data").and_then(|d| d.get(key)).is_some()
                    })
                {
                    r.bad(
                        &at,
                        format!(
                            "{name} needs ConfigMap {cm} key {key}, which {} does not make",
                            v.name
                        ),
                    );
                }
                if let EnvSrc::Secret {
                    name: secret,
                    key,
                    optional: false,
                } = src
                    && !(script_secrets.contains(secret) && script_keys.contains(key))
                {
                    r.bad(&at, format!("{name} needs Secret {secret} key {key}, which k8s/cluster-secret.sh does not create"));
                }
            }
            let mut wanted = vec![
                bin.node_id,
                bin.cluster_listen,
                bin.cert,
                bin.key,
                bin.members_dns,
            ];
            wanted.extend(
                bin.listens
                    .iter()
                    .map(|(e, _)| *e)
                    .filter(|e| !disabled(&env, e)),
            );
            for (listen, flag) in DISABLED_BY {
                if disabled(&env, listen) && env.iter().any(|(n, _)| n == listen) {
                    r.bad(&at, format!("{listen} is set, but {flag} turns it off"));
                }
            }
            for name in wanted {
                if !env.iter().any(|(n, _)| n == name) {
                    r.bad(&at, format!("{name} is not set"));
                }
                if known.is_some_and(|k| !k.contains(name)) {
                    r.bad(&at, format!("{name} (expected by this test) is not read by `{}` any more: {} changed", bin.name, bin.source));
                }
            }

            // Listen addresses against declared ports.
            for (var, proto) in bin.listens {
                let Some(addr) = literal(&env, var) else {
                    continue;
                };
                match port_of(addr) {
                    None => r.bad(&at, format!("{var}={addr:?} is not host:port")),
                    Some(port) => {
                        if !ports
                            .iter()
                            .any(|p| p.port == u64::from(port) && p.protocol == *proto)
                        {
                            r.bad(&at, format!("{var} listens on {port}/{proto}, but no containerPort {port} {proto} is declared"));
                        }
                    }
                }
            }
            let cluster_port = literal(&env, bin.cluster_listen).and_then(port_of);

            // Node id: $(<pod IP var>):<cluster port>.
            match literal(&env, bin.node_id) {
                None => {}
                Some(id) => {
                    let ip_vars: Vec<&str> = env
                        .iter()
                        .filter_map(|(n, s)| match s {
                            EnvSrc::Field(f)
                                if f == "status.podIP"
                                    || (host_network && f == "status.hostIP") =>
                            {
                                Some(n.as_str())
                            }
                            _ => None,
                        })
                        .collect();
                    let ok = id.rsplit_once(':').is_some_and(|(host, port)| {
                        // IPv6 pods: `[$(POD_IP)]:7000`, as the resolver formats ip:port.
                        let host = host
                            .strip_prefix('[')
                            .and_then(|h| h.strip_suffix(']'))
                            .unwrap_or(host);
                        let var_ok = host
                            .strip_prefix("$(")
                            .and_then(|h| h.strip_suffix(')'))
                            .is_some_and(|v| ip_vars.contains(&v));
                        var_ok && port.parse::<u16>().ok() == cluster_port
                    });
                    if !ok {
                        r.bad(&at, format!(
                            "{}={id:?} must be $(<env from status.podIP>):<port of {}> so it equals what the headless Service resolves to",
                            bin.node_id, bin.cluster_listen
                        ));
                    }
                }
            }

            // Probes.
            let health_port = literal(&env, bin.health).and_then(port_of);
            for probe in ["readinessProbe", "livenessProbe"] {
                let Some(p) = c.get(probe) else {
                    r.bad(&at, format!("no {probe}"));
                    continue;
                };
                let path = p.pointer("/httpGet/path").and_then(Value::as_str);
                if path != Some("/healthz") {
                    r.bad(
                        &at,
                        format!("{probe} must be httpGet /healthz, is {path:?}"),
                    );
                }
                let target = p.pointer("/httpGet/port").unwrap_or(&Value::Null);
                match resolve_port(&ports, target) {
                    None => r.bad(
                        &at,
                        format!("{probe} port {target} is not a declared container port"),
                    ),
                    Some(cp) => {
                        if health_port.map(u64::from) != Some(cp.port) || cp.protocol != "TCP" {
                            r.bad(&at, format!(
                                "{probe} probes port {}, but `{}` serves /healthz on the port of {} ({health_port:?})",
                                cp.port, bin.name, bin.health
                            ));
                        }
                    }
                }
            }

            // Resources.
            for (field, what) in [
                ("/resources/requests/cpu", "CPU request"),
                ("/resources/requests/memory", "memory request"),
                ("/resources/limits/memory", "memory limit"),
            ] {
                if c.pointer(field).is_none() {
                    r.bad(&at, format!("no {what} ({field})"));
                }
            }

            // Security context: container settings override the pod's.
            let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
            let eff = |field: &str| sc.get(field).or_else(|| pod_sc.get(field)).cloned();
            if eff("runAsNonRoot") != Some(Value::Bool(true)) {
                r.bad(&at, "runAsNonRoot is not true");
            }
            if eff("runAsUser").is_some_and(|u| u == 0) {
                r.bad(&at, "runAsUser is 0 (root)");
            }
            if sc.get("allowPrivilegeEscalation") != Some(&Value::Bool(false)) {
                r.bad(&at, "allowPrivilegeEscalation is not false");
            }
            if sc.get("privileged") == Some(&Value::Bool(true)) {
                r.bad(&at, "privileged");
            }
            let drops_all = sc
                .pointer("/capabilities/drop")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "ALL"));
            if !drops_all {
                r.bad(&at, "capabilities.drop does not contain ALL");
            }

            // The cluster Secret mounted read-only, cert and key env pointing into it.
            let mount = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .and_then(|m| {
                    m.iter().find(|m| {
                        m.get("name").and_then(Value::as_str) == secret_volume_name
                            && secret_volume_name.is_some()
                    })
                });
            match mount {
                None => r.bad(
                    &at,
                    format!("does not mount the {CLUSTER_SECRET} Secret volume"),
                ),
                Some(m) => {
                    if m.get("readOnly") != Some(&Value::Bool(true)) {
                        r.bad(
                            &at,
                            format!("mounts {CLUSTER_SECRET} without readOnly: true"),
                        );
                    }
                    let dir = m
                        .get("mountPath")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .trim_end_matches('/');
                    for var in [bin.cert, bin.key] {
                        let Some(path) = literal(&env, var) else {
                            continue;
                        };
                        let ok = path
                            .strip_prefix(dir)
                            .and_then(|p| p.strip_prefix('/'))
                            .is_some_and(|file| secret_files.contains(file));
                        if !ok {
                            r.bad(&at, format!("{var}={path:?} is not a file of the {CLUSTER_SECRET} mount at {dir:?} (files: {secret_files:?})"));
                        }
                    }
                }
            }

            // Graceful stop: the grace period outlasts a preStop sleep.
            if let Some(cmd) = c
                .pointer("/lifecycle/preStop/exec/command")
                .and_then(Value::as_array)
            {
                let sleep = match cmd.as_slice() {
                    [s, n] if s == "sleep" => as_u64(Some(n)),
                    _ => None,
                };
                if let (Some(sleep), Some(grace)) = (sleep, grace)
                    && grace <= sleep
                {
                    r.bad(&at, format!("terminationGracePeriodSeconds {grace} does not outlast preStop sleep {sleep}"));
                }
            }

            // Membership.
            let mut members = Vec::new();
            if let Some(list) = literal(&env, bin.members_dns) {
                for m in list.split(',').filter(|m| !m.is_empty()) {
                    let parts: Vec<&str> = m.splitn(2, ':').collect();
                    let parsed = match parts.as_slice() {
                        [tier, rest] => tier.parse::<u8>().ok().and_then(|t| {
                            let (host, port) = rest.rsplit_once(':')?;
                            Some((t, host.to_string(), port.parse::<u16>().ok()?))
                        }),
                        _ => None,
                    };
                    match parsed {
                        Some(p) => members.push(p),
                        None => r.bad(
                            &at,
                            format!("{} entry {m:?} is not tier:name:port", bin.members_dns),
                        ),
                    }
                }
            }
            let tier = match bin.tier {
                None => 0,
                Some((var, default)) => match literal(&env, var) {
                    None => default,
                    Some(t) => t.parse().unwrap_or_else(|_| {
                        r.bad(&at, format!("{var}={t:?} is not a tier number"));
                        default
                    }),
                },
            };
            let cluster_name = literal(&env, bin.cluster_name)
                .unwrap_or("default")
                .to_string();
            nodes.push(Node {
                obj: w,
                tier,
                cluster_port,
                members,
                cluster_name,
            });
        }
    }

    // All nodes: one cluster name; every tier listed; DNS names are headless Services that
    // select exactly the nodes of that tier, on their cluster port.
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.cluster_name.as_str()).collect();
    if names.len() > 1 {
        let list: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} = {:?}", n.obj.at(), n.cluster_name))
            .collect();
        r.bad(
            &v.name,
            format!(
                "nodes disagree on the cluster name (they would refuse each other): {}",
                list.join("; ")
            ),
        );
    }
    let tiers: BTreeSet<u8> = nodes.iter().map(|n| n.tier).collect();
    for n in &nodes {
        let at = n.obj.at();
        let listed: BTreeSet<u8> = n.members.iter().map(|(t, _, _)| *t).collect();
        for t in tiers.difference(&listed) {
            r.bad(
                &at,
                format!("its members DNS list has no tier {t}, which a workload here runs"),
            );
        }
        for (tier, host, port) in &n.members {
            let parts: Vec<&str> = host.trim_end_matches('.').split('.').collect();
            if parts.len() > 2 && parts[2] != "svc" {
                r.bad(
                    &at,
                    format!("member {host:?} is not a Service DNS name (<svc>.<ns>.svc…)"),
                );
                continue;
            }
            let svc_name = parts[0];
            let svc_ns = parts
                .get(1)
                .copied()
                .unwrap_or(n.obj.namespace.as_deref().unwrap_or(""));
            let Some(svc) = find("Service", svc_name, svc_ns) else {
                r.bad(
                    &at,
                    format!(
                        "member {host:?}: no Service {svc_ns}/{svc_name} in {}",
                        v.name
                    ),
                );
                continue;
            };
            let sat = svc.at();
            if svc.str("/spec/clusterIP") != Some("None") {
                r.bad(&sat, format!("is a membership DNS name (tier {tier}) but not headless: set clusterIP: None"));
            }
            if svc.get("/spec/publishNotReadyAddresses") != Some(&Value::Bool(true)) {
                r.bad(&sat, "membership Service without publishNotReadyAddresses: true (membership would flap with readiness)");
            }
            let has_port = svc
                .get("/spec/ports")
                .and_then(Value::as_array)
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        as_u64(p.get("port")) == Some(u64::from(*port))
                            && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "UDP"
                    })
                });
            if !has_port {
                r.bad(
                    &sat,
                    format!(
                        "has no UDP port {port}, which {} uses for tier {tier}",
                        n.obj.at()
                    ),
                );
            }
            let selector = string_map(svc.get("/spec/selector"));
            let selected: Vec<&Node<'_>> = nodes
                .iter()
                .filter(|m| selects(&selector, &m.obj.template_labels()))
                .collect();
            if selected.is_empty() {
                r.bad(
                    &sat,
                    format!("selects no workload, so tier {tier} has no members"),
                );
            }
            for m in selected {
                if m.tier != *tier {
                    r.bad(
                        &sat,
                        format!(
                            "is tier {tier}'s membership but selects {} (tier {})",
                            m.obj.at(),
                            m.tier
                        ),
                    );
                }
                if m.cluster_port != Some(*port) {
                    r.bad(&sat, format!(
                        "members resolve to ip:{port}, but {} listens for the cluster on {:?}: node ids would not match",
                        m.obj.at(), m.cluster_port
                    ));
                }
            }
        }
    }

    // Services: select a workload, target ports exist with the same protocol.
    for svc in objs.iter().filter(|o| o.kind == "Service") {
        let at = svc.at();
        let selector = string_map(svc.get("/spec/selector"));
        let selected: Vec<&&Obj> = workloads
            .iter()
            .filter(|w| selects(&selector, &w.template_labels()))
            .collect();
        if selected.is_empty() {
            r.bad(&at, format!("selects no workload in {}", v.name));
        }
        let headless = svc.str("/spec/clusterIP") == Some("None");
        for p in svc
            .get("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            let port = as_u64(p.get("port"));
            let target = p
                .get("targetPort")
                .or_else(|| p.get("port"))
                .unwrap_or(&Value::Null);
            for w in &selected {
                let found: Vec<u64> = w
                    .containers()
                    .iter()
                    .filter_map(|c| {
                        let ports = ports_of(c);
                        resolve_port(&ports, target)
                            .filter(|cp| cp.protocol == proto)
                            .map(|cp| cp.port)
                    })
                    .collect();
                match found.first() {
                    None => r.bad(&at, format!("targetPort {target} ({proto}) is not a container port of {}", w.at())),
                    // DNS of a headless Service gives pod IPs: clients dial `port` on the pod itself.
                    Some(cp) if headless && Some(*cp) != port => r.bad(&at, format!(
                        "headless, so clients dial port {port:?} on the pod, but {} has it on {cp}",
                        w.at()
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    // Autoscaling: every Deployment running a node has an HPA (autoscaling/v2) that drives it on
    // the media it handles (a Pods metric, from prometheus-adapter), with CPU as the fallback.
    let mut hpa_pod_metrics: Vec<(String, String, &'static str)> = Vec::new();
    let mut scaled: BTreeSet<String> = BTreeSet::new();
    for h in objs.iter().filter(|o| o.kind == "HorizontalPodAutoscaler") {
        let at = h.at();
        if h.str("/apiVersion") != Some("autoscaling/v2") {
            r.bad(&at, "apiVersion must be autoscaling/v2");
        }
        let kind = h.str("/spec/scaleTargetRef/kind").unwrap_or("");
        let name = h.str("/spec/scaleTargetRef/name").unwrap_or("");
        let Some(target) = find(kind, name, h.namespace.as_deref().unwrap_or("")) else {
            r.bad(
                &at,
                format!("scaleTargetRef {kind}/{name} is not defined in {}", v.name),
            );
            continue;
        };
        if h.str("/spec/scaleTargetRef/apiVersion") != Some("apps/v1") {
            r.bad(&at, "scaleTargetRef.apiVersion must be apps/v1");
        }
        scaled.insert(target.at());
        if target.get("/spec/replicas").is_some() {
            r.bad(
                &target.at(),
                format!("sets spec.replicas, which fights {at} on every apply"),
            );
        }
        let metrics = h
            .get("/spec/metrics")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let cpu = metrics.iter().any(|m| {
            m.get("type").and_then(Value::as_str) == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        });
        if !cpu {
            r.bad(
                &at,
                "no CPU resource metric (the fallback while the custom metric cannot be read)",
            );
        }
        if let Some(bin) = target.containers().into_iter().find_map(binary_of) {
            let pods: Vec<&Value> = metrics
                .iter()
                .filter(|m| m.get("type").and_then(Value::as_str) == Some("Pods"))
                .collect();
            if pods.is_empty() {
                r.bad(&at, format!("no Pods metric: `{}` pods scale on the media they send (a per-pod custom metric from prometheus-adapter, AverageValue target), CPU only as the fallback", bin.name));
            } else if metrics
                .first()
                .and_then(|m| m.get("type"))
                .and_then(Value::as_str)
                != Some("Pods")
            {
                r.bad(
                    &at,
                    "the Pods metric (the media) should come first, CPU after it as the fallback",
                );
            }
            for m in pods {
                let name = m
                    .pointer("/pods/metric/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if name.is_empty() {
                    r.bad(&at, "a Pods metric without pods.metric.name");
                    continue;
                }
                if m.pointer("/pods/target/type").and_then(Value::as_str) != Some("AverageValue")
                    || m.pointer("/pods/target/averageValue").is_none()
                {
                    r.bad(&at, format!("Pods metric {name}: the target must be type AverageValue with an averageValue (per pod)"));
                }
                hpa_pod_metrics.push((at.clone(), name.to_string(), bin.name));
            }
        }
        let (min, max) = (
            as_u64(h.get("/spec/minReplicas")).unwrap_or(1),
            as_u64(h.get("/spec/maxReplicas")).unwrap_or(0),
        );
        if min > max {
            r.bad(&at, format!("minReplicas {min} > maxReplicas {max}"));
        }
    }
    let runs_node = |w: &Obj| w.containers().into_iter().any(|c| binary_of(c).is_some());
    for w in workloads
        .iter()
        .filter(|w| w.kind == "Deployment" && runs_node(w))
    {
        if !scaled.contains(&w.at()) {
            r.bad(&w.at(), "no HorizontalPodAutoscaler targets it");
        }
        let budgeted = objs
            .iter()
            .filter(|o| o.kind == "PodDisruptionBudget")
            .any(|pdb| {
                selects(
                    &string_map(pdb.get("/spec/selector/matchLabels")),
                    &w.template_labels(),
                )
            });
        if !budgeted {
            r.bad(
                &w.at(),
                "no PodDisruptionBudget selects its pods: a node drain could stop them all at once",
            );
        }
    }
    // PodDisruptionBudgets select something.
    for pdb in objs.iter().filter(|o| o.kind == "PodDisruptionBudget") {
        let selector = string_map(pdb.get("/spec/selector/matchLabels"));
        if !workloads
            .iter()
            .any(|w| selects(&selector, &w.template_labels()))
        {
            r.bad(&pdb.at(), "selects no workload");
        }
    }

    // Two controllers over one set of pods fight over them (e.g. an alternative that adds its
    // gateways without removing the Deployment).
    for a in &workloads {
        let selector = string_map(a.get("/spec/selector/matchLabels"));
        for b in workloads.iter().filter(|b| b.at() != a.at()) {
            if selects(&selector, &b.template_labels()) {
                r.bad(&a.at(), format!("its selector also matches the pods of {}: the two controllers would fight over them", b.at()));
            }
        }
    }

    // Pod Security: the host's network and ports only where the Namespace admits them.
    let level = objs
        .iter()
        .find(|o| o.kind == "Namespace")
        .and_then(|n| n.str("/metadata/labels/pod-security.kubernetes.io~1enforce"));
    if let Some(level @ ("restricted" | "baseline")) = level {
        for w in &workloads {
            let host_ports = w
                .containers()
                .iter()
                .any(|c| ports_of(c).iter().any(|p| p.host_port.is_some()));
            if w.pod().get("hostNetwork") == Some(&Value::Bool(true)) || host_ports {
                r.bad(&w.at(), format!("uses hostNetwork or hostPort, which the Namespace's Pod Security level {level:?} refuses (in {})", v.name));
            }
        }
    }

    // Gateways: any gateway takes any session's HTTP request and datagrams, so all listen on the
    // same fixed ports; LoadBalancer Services in front of them need no affinity; and on the pod
    // network (one address) they advertise the media load balancer's address.
    let gateway_lbs: Vec<&Obj> = objs
        .iter()
        .filter(|o| o.kind == "Service" && o.str("/spec/type") == Some("LoadBalancer"))
        .filter(|s| {
            let selector = string_map(s.get("/spec/selector"));
            workloads.iter().any(|w| {
                selects(&selector, &w.template_labels())
                    && w.containers()
                        .into_iter()
                        .any(|c| binary_of(c).is_some_and(|b| b.name == "gateway"))
            })
        })
        .collect();
    for s in &gateway_lbs {
        if let Some(a) = s.str("/spec/sessionAffinity").filter(|a| *a != "None") {
            r.bad(&s.at(), format!("sessionAffinity {a}: none is needed (a gateway forwards a session's requests and datagrams to the gateway that holds it), and it would pile every client behind one NAT onto one gateway"));
        }
        if s.get("/spec/externalTrafficPolicy").is_none() {
            r.bad(&s.at(), "no externalTrafficPolicy: choose it (Local keeps the client's address, Cluster SNATs it)");
        }
    }
    let mut gateway_ports: BTreeMap<(Option<u16>, Option<u16>), Vec<String>> = BTreeMap::new();
    for w in &workloads {
        let host_network = w.pod().get("hostNetwork") == Some(&Value::Bool(true));
        for c in w.containers() {
            if binary_of(c).is_none_or(|b| b.name != "gateway") {
                continue;
            }
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
            let at = format!("{}, container {cname}", w.at());
            let env = env_of(c);
            let ports = ports_of(c);
            let http = literal(&env, "GATEWAY_HTTP_LISTEN").and_then(port_of);
            let udp = literal(&env, "GATEWAY_UDP_LISTEN").and_then(port_of);
            for (var, port) in [("GATEWAY_HTTP_LISTEN", http), ("GATEWAY_UDP_LISTEN", udp)] {
                if port.is_none_or(|p| p == 0) {
                    r.bad(&at, format!("{var} is not a fixed port: every gateway listens on the same HTTP and UDP ports"));
                }
            }
            gateway_ports
                .entry((http, udp))
                .or_default()
                .push(at.clone());
            if v.network == GatewayNetwork::HostNetwork {
                if !host_network {
                    r.bad(
                        &w.at(),
                        format!("runs `gateway` off the host network, in {}", v.name),
                    );
                }
                continue;
            }
            if w.kind != "Deployment" || host_network {
                r.bad(&w.at(), "one address: gateways are a Deployment on the pod network (no hostNetwork), behind LoadBalancer Services");
            }
            for p in ports.iter().filter(|p| p.host_port.is_some()) {
                r.bad(&at, format!("port {} has a hostPort: one address needs none (clients come through the LoadBalancer Services), and it ties pods to nodes", p.port));
            }
            let pod_ip_vars: Vec<&str> = env
                .iter()
                .filter_map(|(n, s)| match s {
                    EnvSrc::Field(f) if f == "status.podIP" => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            let candidate = literal(&env, "GATEWAY_CANDIDATE_IPS");
            let pod_ip = candidate
                .and_then(|c| c.strip_prefix("$(")?.strip_suffix(')'))
                .is_some_and(|var| pod_ip_vars.contains(&var));
            if !pod_ip {
                r.bad(&at, format!("GATEWAY_CANDIDATE_IPS is {candidate:?}, not $(<env from status.podIP>): the balancer's datagrams arrive at the pod IP, which ICE matches against the candidates"));
            }
            match env.iter().find(|(n, _)| n == "GATEWAY_PUBLIC_IPS") {
                None => r.bad(&at, "GATEWAY_PUBLIC_IPS is not set: gateways must advertise the media load balancer's external address"),
                Some((_, EnvSrc::Literal(s))) if !references(s).is_empty() => r.bad(&at, format!("GATEWAY_PUBLIC_IPS={s:?}: it is the media load balancer's external address, which no pod field holds")),
                Some(_) => {}
            }
            // Each port a candidate at the public address carries must reach this container on
            // a LoadBalancer port of the same number: the candidate names that port.
            let mut advertised = vec![("GATEWAY_UDP_LISTEN", udp, "UDP")];
            if !disabled(&env, "GATEWAY_ICE_TCP_LISTEN") {
                let ice_tcp = literal(&env, "GATEWAY_ICE_TCP_LISTEN")
                    .and_then(port_of)
                    .or(udp);
                advertised.push((
                    "ICE-TCP (GATEWAY_NO_ICE_TCP is not \"true\")",
                    ice_tcp,
                    "TCP",
                ));
            }
            let carries = |port: u16, proto: &str, same_number: bool| {
                gateway_lbs.iter().any(|s| {
                    selects(&string_map(s.get("/spec/selector")), &w.template_labels())
                        && s.get("/spec/ports")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .any(|sp| {
                                let target = sp
                                    .get("targetPort")
                                    .or_else(|| sp.get("port"))
                                    .unwrap_or(&Value::Null);
                                sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == proto
                                    && (!same_number
                                        || as_u64(sp.get("port")) == Some(u64::from(port)))
                                    && resolve_port(&ports, target).is_some_and(|cp| {
                                        cp.port == u64::from(port) && cp.protocol == proto
                                    })
                            })
                })
            };
            for (what, port, proto) in advertised {
                if let Some(port) = port
                    && !carries(port, proto, true)
                {
                    r.bad(&at, format!("{what}: no LoadBalancer Service selecting it carries {port}/{proto} on port {port}, the port its candidates at GATEWAY_PUBLIC_IPS name"));
                }
            }
            if let Some(http) = http
                && !carries(http, "TCP", false)
            {
                r.bad(
                    &at,
                    format!("no LoadBalancer Service selecting it carries its HTTP port {http}"),
                );
            }
        }
    }
    if gateway_ports.len() > 1 {
        r.bad(&v.name, format!("gateways listen on different (HTTP, UDP) ports: {gateway_ports:?}; any gateway must take any session's requests and datagrams"));
    }
    hpa_pod_metrics
}

/// The objects of some manifest files, each problem reported.
fn parse_objects<'a>(
    files: impl Iterator<Item = (&'a String, &'a String)>,
    r: &mut Report,
) -> Vec<Obj> {
    let mut objs: Vec<Obj> = Vec::new();
    for (file, text) in files {
        let docs = match parse_yaml(text) {
            Ok(d) => d,
            Err(e) => {
                r.bad(file, format!("not valid YAML: {e}"));
                continue;
            }
        };
        if docs.is_empty() {
            r.bad(file, "has no YAML document");
        }
        for (i, v) in docs.into_iter().enumerate() {
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if kind.is_empty() || name.is_empty() || v.get("apiVersion").is_none() {
                r.bad(
                    file,
                    format!("document {} lacks apiVersion, kind or metadata.name", i + 1),
                );
                continue;
            }
            let namespace = v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            objs.push(Obj {
                file: file.clone(),
                kind,
                name,
                namespace,
                v,
            });
        }
    }
    objs
}

/// The ConfigMaps a kustomization's configMapGenerator makes, by their names before the hash
/// (kustomize rewrites the references to them).
fn generated_config_maps(k: &Value, file: &str) -> Vec<Obj> {
    let strs = |g: &Value, field: &str| -> Vec<String> {
        g.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    k.get("configMapGenerator")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let name = g.get("name").and_then(Value::as_str)?.to_string();
            let namespace = g
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            let mut data = Map::new();
            for l in strs(g, "literals") {
                let (key, value) = l.split_once('=').unwrap_or((&l, ""));
                data.insert(key.to_string(), Value::from(value));
            }
            for f in strs(g, "files") {
                let key = f
                    .split_once('=')
                    .map_or(f.rsplit('/').next().unwrap_or(&f), |(k, _)| k);
                data.insert(key.to_string(), Value::from(""));
            }
            let v = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": data,
            });
            Some(Obj {
                file: file.to_string(),
                kind: "ConfigMap".to_string(),
                name,
                namespace,
                v,
            })
        })
        .collect()
}

/// k8s/ with each component of k8s/alternatives/: its resources added, its patches applied
/// (`$patch: delete` removes an object; otherwise maps merge into it and anything else
/// replaces, which is all the patches here need of strategic merge).
fn alternatives(inputs: &Inputs, base: &[Obj], r: &mut Report) -> Vec<Variant> {
    let mut out = Vec::new();
    for dir in inputs.alternatives() {
        let Some(&(_, network)) = ALTERNATIVES.iter().find(|(d, _)| *d == dir) else {
            r.bad(
                &dir,
                "an alternative this test does not know: add it to ALTERNATIVES",
            );
            continue;
        };
        let kpath = format!("{dir}kustomization.yaml");
        let k = match inputs.files.get(&kpath).map(|t| parse_yaml(t)) {
            None => {
                r.bad(&kpath, "missing");
                continue;
            }
            Some(Err(e)) => {
                r.bad(&kpath, format!("not valid YAML: {e}"));
                continue;
            }
            Some(Ok(docs)) => docs.into_iter().next().unwrap_or(Value::Null),
        };
        if k.get("kind").and_then(Value::as_str) != Some("Component") {
            r.bad(&kpath, "not a kustomize Component (kind: Component): an overlay inside k8s/ is refused by kustomize (a cycle), and k8s/ must not deploy it");
        }
        let listed = listed_resources(&k, &dir);
        let files: BTreeSet<String> = inputs
            .files
            .keys()
            .filter(|p| p.starts_with(&dir) && !is_kustomization(p))
            .cloned()
            .collect();
        for f in files.difference(&listed) {
            r.bad(&kpath, format!("does not list {f} under resources"));
        }
        for f in listed.difference(&files) {
            r.bad(&kpath, format!("lists {f}, which does not exist"));
        }
        let mut objs = base.to_vec();
        objs.extend(parse_objects(
            inputs.files.iter().filter(|(p, _)| files.contains(*p)),
            r,
        ));
        let patches = k.get("patches").and_then(Value::as_array).cloned();
        for (i, patch) in patches.into_iter().flatten().enumerate() {
            let at = format!("{kpath}: patch {}", i + 1);
            let text = match (
                patch.get("patch").and_then(Value::as_str),
                patch.get("path").and_then(Value::as_str),
            ) {
                (Some(text), _) => text.to_string(),
                (None, Some(path)) => match inputs.files.get(&format!("{dir}{path}")) {
                    Some(text) => text.clone(),
                    None => {
                        r.bad(&at, format!("reads {dir}{path}, which does not exist"));
                        continue;
                    }
                },
                (None, None) => {
                    r.bad(&at, "has neither patch nor path");
                    continue;
                }
            };
            let docs = match parse_yaml(&text) {
                Ok(docs) => docs,
                Err(e) => {
                    r.bad(&at, format!("not valid YAML: {e}"));
                    continue;
                }
            };
            for d in docs {
                let kind = d.get("kind").and_then(Value::as_str).unwrap_or("");
                let name = d
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(pos) = objs.iter().position(|o| o.kind == kind && o.name == name) else {
                    r.bad(
                        &at,
                        format!("patches {kind}/{name}, which is not in k8s/ (kustomize fails)"),
                    );
                    continue;
                };
                if d.get("$patch").and_then(Value::as_str) == Some("delete") {
                    objs.remove(pos);
                } else {
                    merge(&mut objs[pos].v, &d);
                }
            }
        }
        out.push(Variant {
            name: dir,
            network,
            objs,
        });
    }
    out
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, value) in p {
                merge(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Metric names, PromQL and relabelling

/// The metric names quoted in a metrics source: `"gateway_…"`, `"tree_…"`, `"cluster_…"`.
fn metric_names_in(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in source.match_indices('"') {
        let rest = &source[i + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        if rest[len..].starts_with('"') && METRIC_PREFIXES.iter().any(|p| word.starts_with(p)) {
            names.insert(word.to_string());
        }
    }
    names
}

/// A name a query may use: a metric, or a histogram's `_bucket`/`_sum`/`_count` series.
fn is_known_metric(name: &str, known: &BTreeSet<String>) -> bool {
    known.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| known.contains(base))
        })
}

/// A metric a PromQL expression selects, with the text of its `{…}` matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: String,
}

/// PromQL keywords, aggregation operators and binary operators that look like names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const PROMQL_GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index after the string literal starting at `i` (`"…"`, `'…'` with escapes, `` `…` ``).
fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if c[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    c.len()
}

/// The index after the bracket closing the one at `i`, skipping string literals.
fn skip_balanced(c: &[char], i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < c.len() {
        match c[j] {
            '"' | '\'' | '`' => {
                j = skip_string(c, j);
                continue;
            }
            ch if ch == open => depth += 1,
            ch if ch == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    c.len()
}

/// `__name__` matchers in a `{…}` block: the names they select (`=~"a|b"` gives both).
fn name_matchers(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = block;
    while let Some(i) = rest.find("__name__") {
        rest = rest[i + 8..].trim_start();
        let rest2 = rest.trim_start_matches(['=', '~', '!']).trim_start();
        if let Some(q) = rest2
            .chars()
            .next()
            .filter(|q| matches!(q, '"' | '\'' | '`'))
            && let Some(end) = rest2[1..].find(q)
        {
            out.extend(rest2[1..1 + end].split('|').map(str::to_string));
        }
    }
    out
}

/// The metrics a PromQL expression (a Grafana target, an adapter query) selects. Functions,
/// keywords, label lists after `by`/`on`/…, string literals, ranges `[…]`, Grafana variables
/// (`$x`, `${x}`) and prometheus-adapter templates (`<<.Series>>`) are not metric names.
fn promql_selectors(expr: &str) -> Vec<Selector> {
    let c: Vec<char> = expr.chars().collect();
    let ident_start = |ch: char| ch.is_ascii_alphabetic() || ch == '_' || ch == ':';
    let ident_char = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    let skip_ws = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let text = |from: usize, to: usize| -> String {
        c[from.min(c.len())..to.min(c.len())].iter().collect()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(&c, i);
        } else if ch == '$' {
            i += 1;
            if c.get(i) == Some(&'{') {
                i = skip_balanced(&c, i, '{', '}');
            } else {
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch == '<' && c.get(i + 1) == Some(&'<') {
            i = (i + 2..c.len().saturating_sub(1))
                .find(|&j| c[j] == '>' && c[j + 1] == '>')
                .map_or(c.len(), |j| j + 2);
        } else if ch == '[' {
            i = skip_balanced(&c, i, '[', ']');
        } else if ch == '{' {
            let end = skip_balanced(&c, i, '{', '}');
            let block = text(i + 1, end.saturating_sub(1));
            for name in name_matchers(&block) {
                out.push(Selector {
                    name,
                    matchers: block.clone(),
                });
            }
            i = end;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word = text(start, i);
            let lower = word.to_ascii_lowercase();
            let next = skip_ws(i);
            if PROMQL_GROUPING.contains(&lower.as_str()) {
                if c.get(next) == Some(&'(') {
                    i = skip_balanced(&c, next, '(', ')');
                }
            } else if !PROMQL_WORDS.contains(&lower.as_str()) && c.get(next) != Some(&'(') {
                let mut matchers = String::new();
                if c.get(next) == Some(&'{') {
                    let end = skip_balanced(&c, next, '{', '}');
                    matchers = text(next + 1, end.saturating_sub(1));
                    i = end;
                }
                out.push(Selector {
                    name: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The PromQL of a Grafana query variable: `label_values(expr, label)` → `expr`;
/// `query_result(expr)` → `expr`; `label_values(label)`, `label_names()`, `metrics(…)` → none.
fn variable_expr(query: &str) -> Option<String> {
    let q = query.trim();
    for f in ["label_values(", "query_result("] {
        if let Some(inner) = q.strip_prefix(f).and_then(|r| r.strip_suffix(')')) {
            if f == "query_result(" {
                return Some(inner.to_string());
            }
            let c: Vec<char> = inner.chars().collect();
            let (mut j, mut last_comma) = (0, None);
            while j < c.len() {
                match c[j] {
                    '"' | '\'' | '`' => {
                        j = skip_string(&c, j);
                        continue;
                    }
                    '(' => j = skip_balanced(&c, j, '(', ')') - 1,
                    '{' => j = skip_balanced(&c, j, '{', '}') - 1,
                    '[' => j = skip_balanced(&c, j, '[', ']') - 1,
                    ',' => last_comma = Some(j),
                    _ => {}
                }
                j += 1;
            }
            return last_comma.map(|k| c[..k].iter().collect());
        }
    }
    if q.starts_with("label_names(") || q.starts_with("metrics(") {
        return None;
    }
    Some(q.to_string())
}

/// A regular expression as relabel rules (RE2, anchored) and prometheus-adapter (`name.matches`,
/// unanchored) use it, as far as these configs need: literals, escapes, `.`, classes, groups,
/// `|`, `* + ? {n,m}`, `^ $`. Only whether it matches, not what it captures.
#[derive(Debug, Clone)]
enum Re {
    Char(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Start,
    End,
    Alt(Vec<Vec<Re>>),
    Repeat(Box<Re>, usize, Option<usize>),
}

struct Regex(Re);

impl Regex {
    fn new(pattern: &str) -> Result<Regex, String> {
        let c: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let alts = re_alt(&c, &mut pos)?;
        if pos != c.len() {
            return Err(format!("unbalanced ')' in {pattern:?}"));
        }
        Ok(Regex(Re::Alt(alts)))
    }

    /// The whole string (relabelling anchors its regexes at both ends).
    fn full_match(&self, s: &str) -> bool {
        let c: Vec<char> = s.chars().collect();
        re_match(&self.0, &c, 0, &mut |j| j == c.len())
    }

    /// Anywhere in the string.
    fn is_match(&self, s: &str) -> bool {
        let c: Vec<char> = s.chars().collect();
        (0..=c.len()).any(|start| re_match(&self.0, &c, start, &mut |_| true))
    }
}

fn re_alt(c: &[char], pos: &mut usize) -> Result<Vec<Vec<Re>>, String> {
    let mut alts = vec![Vec::new()];
    while *pos < c.len() {
        match c[*pos] {
            ')' => break,
            '|' => {
                *pos += 1;
                alts.push(Vec::new());
            }
            _ => {
                let mut atom = re_atom(c, pos)?;
                loop {
                    let (min, max, len) = match c.get(*pos) {
                        Some('*') => (0, None, 1),
                        Some('+') => (1, None, 1),
                        Some('?') => (0, Some(1), 1),
                        Some('{') => {
                            let close = c[*pos..].iter().position(|&x| x == '}');
                            let body: Option<String> =
                                close.map(|e| c[*pos + 1..*pos + e].iter().collect());
                            let parsed = body.as_deref().and_then(|b| match b.split_once(',') {
                                None => b.parse().ok().map(|n: usize| (n, Some(n))),
                                Some((lo, "")) => lo.parse().ok().map(|n| (n, None)),
                                Some((lo, hi)) => Some((lo.parse().ok()?, Some(hi.parse().ok()?))),
                            });
                            match (parsed, close) {
                                (Some((lo, hi)), Some(e)) => (lo, hi, e + 1),
                                _ => break,
                            }
                        }
                        _ => break,
                    };
                    *pos += len;
                    if c.get(*pos) == Some(&'?') {
                        *pos += 1; // lazy: the same strings match
                    }
                    atom = Re::Repeat(Box::new(atom), min, max);
                }
                alts.last_mut().expect("one alternative").push(atom);
            }
        }
    }
    Ok(alts)
}

fn re_escape(e: char) -> Re {
    let digit = vec![('0', '9')];
    let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
    let space = vec![(' ', ' '), ('\t', '\r')];
    match e {
        'd' => Re::Class(digit, false),
        'D' => Re::Class(digit, true),
        'w' => Re::Class(word, false),
        'W' => Re::Class(word, true),
        's' => Re::Class(space, false),
        'S' => Re::Class(space, true),
        'n' => Re::Char('\n'),
        't' => Re::Char('\t'),
        other => Re::Char(other),
    }
}

fn re_atom(c: &[char], pos: &mut usize) -> Result<Re, String> {
    let ch = c[*pos];
    *pos += 1;
    Ok(match ch {
        '.' => Re::Any,
        '^' => Re::Start,
        '$' => Re::End,
        '(' => {
            if c.get(*pos) == Some(&'?') {
                if c.get(*pos + 1) != Some(&':') {
                    return Err("only (?:…) groups are supported".into());
                }
                *pos += 2;
            }
            let alts = re_alt(c, pos)?;
            if c.get(*pos) != Some(&')') {
                return Err("missing ')'".into());
            }
            *pos += 1;
            Re::Alt(alts)
        }
        '[' => {
            let negated = c.get(*pos) == Some(&'^');
            if negated {
                *pos += 1;
            }
            let mut ranges = Vec::new();
            let mut first = true;
            loop {
                let Some(&x) = c.get(*pos) else {
                    return Err("unterminated '['".into());
                };
                *pos += 1;
                if x == ']' && !first {
                    break;
                }
                first = false;
                let lo = if x == '\\' {
                    let e = *c.get(*pos).ok_or("trailing '\\'")?;
                    *pos += 1;
                    match re_escape(e) {
                        Re::Class(r, false) => {
                            ranges.extend(r);
                            continue;
                        }
                        Re::Char(x) => x,
                        _ => return Err(format!("\\{e} in a class is not supported")),
                    }
                } else {
                    x
                };
                if c.get(*pos) == Some(&'-') && c.get(*pos + 1).is_some_and(|&n| n != ']') {
                    ranges.push((lo, c[*pos + 1]));
                    *pos += 2;
                } else {
                    ranges.push((lo, lo));
                }
            }
            Re::Class(ranges, negated)
        }
        '\\' => {
            let e = *c.get(*pos).ok_or("trailing '\\'")?;
            *pos += 1;
            re_escape(e)
        }
        '*' | '+' | '?' => return Err(format!("nothing to repeat before '{ch}'")),
        other => Re::Char(other),
    })
}

/// Does `re` match at `i`, with `k` accepting where it ends (backtracking)?
fn re_match(re: &Re, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match re {
        Re::Char(x) => s.get(i) == Some(x) && k(i + 1),
        Re::Any => s.get(i).is_some_and(|x| *x != '\n') && k(i + 1),
        Re::Class(ranges, negated) => {
            s.get(i)
                .is_some_and(|x| ranges.iter().any(|(lo, hi)| lo <= x && x <= hi) != *negated)
                && k(i + 1)
        }
        Re::Start => i == 0 && k(i),
        Re::End => i == s.len() && k(i),
        Re::Alt(alts) => alts.iter().any(|seq| re_seq(seq, s, i, k)),
        Re::Repeat(inner, min, max) => {
            if *max != Some(0)
                && re_match(inner, s, i, &mut |j| {
                    (j > i || *min > 0)
                        && re_match(
                            &Re::Repeat(inner.clone(), min.saturating_sub(1), max.map(|m| m - 1)),
                            s,
                            j,
                            k,
                        )
                })
            {
                return true;
            }
            *min == 0 && k(i)
        }
    }
}

fn re_seq(seq: &[Re], s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match seq.split_first() {
        None => k(i),
        Some((first, rest)) => re_match(first, s, i, &mut |j| re_seq(rest, s, j, k)),
    }
}

/// Prometheus' label name for a Kubernetes label or annotation key.
fn sanitize_label(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The labels Prometheus' Kubernetes discovery (`role: pod`) gives the target of one container
/// port of a workload's pod.
fn discovered_labels(w: &Obj, container: &Value, port: &ContainerPort) -> BTreeMap<String, String> {
    let pod_ip = "10.0.0.10";
    let mut l = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        l.insert(k.to_string(), v.to_string());
    };
    set("__address__", &format!("{pod_ip}:{}", port.port));
    set("__scheme__", "http");
    set("__metrics_path__", "/metrics");
    set(
        "__meta_kubernetes_namespace",
        w.namespace.as_deref().unwrap_or(""),
    );
    set("__meta_kubernetes_pod_name", &format!("{}-x1y2z", w.name));
    set("__meta_kubernetes_pod_ip", pod_ip);
    set("__meta_kubernetes_pod_node_name", "node-1");
    set("__meta_kubernetes_pod_host_ip", "10.0.0.1");
    set("__meta_kubernetes_pod_ready", "true");
    set("__meta_kubernetes_pod_phase", "Running");
    set(
        "__meta_kubernetes_pod_controller_kind",
        if w.kind == "Deployment" {
            "ReplicaSet"
        } else {
            w.kind.as_str()
        },
    );
    let cname = container.get("name").and_then(Value::as_str).unwrap_or("");
    set("__meta_kubernetes_pod_container_name", cname);
    set("__meta_kubernetes_pod_container_init", "false");
    set(
        "__meta_kubernetes_pod_container_port_name",
        port.name.as_deref().unwrap_or(""),
    );
    set(
        "__meta_kubernetes_pod_container_port_number",
        &port.port.to_string(),
    );
    set(
        "__meta_kubernetes_pod_container_port_protocol",
        &port.protocol,
    );
    for (k, v) in w.template_labels() {
        let k = sanitize_label(&k);
        set(&format!("__meta_kubernetes_pod_label_{k}"), &v);
        set(&format!("__meta_kubernetes_pod_labelpresent_{k}"), "true");
    }
    for (k, v) in string_map(w.get("/spec/template/metadata/annotations")) {
        let k = sanitize_label(&k);
        set(&format!("__meta_kubernetes_pod_annotation_{k}"), &v);
        set(
            &format!("__meta_kubernetes_pod_annotationpresent_{k}"),
            "true",
        );
    }
    l
}

/// Applies `relabel_configs`; Ok(None) when the target is dropped. Rules this test cannot
/// evaluate (regex captures other than `$1` of `(.*)`, hashmod, labelmap) are an error.
fn relabel(
    rules: &[Value],
    mut labels: BTreeMap<String, String>,
) -> Result<Option<BTreeMap<String, String>>, String> {
    for rule in rules {
        let action = rule
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("replace")
            .to_ascii_lowercase();
        let separator = rule.get("separator").and_then(Value::as_str).unwrap_or(";");
        let pattern = rule.get("regex").and_then(Value::as_str).unwrap_or("(.*)");
        let regex = Regex::new(pattern).map_err(|e| format!("regex {pattern:?}: {e}"))?;
        let value = rule
            .get("source_labels")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|n| {
                        n.as_str()
                            .and_then(|n| labels.get(n))
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(separator)
            })
            .unwrap_or_default();
        match action.as_str() {
            "keep" => {
                if !regex.full_match(&value) {
                    return Ok(None);
                }
            }
            "drop" => {
                if regex.full_match(&value) {
                    return Ok(None);
                }
            }
            "labeldrop" => labels.retain(|k, _| !regex.full_match(k)),
            "labelkeep" => labels.retain(|k, _| regex.full_match(k)),
            "replace" => {
                let Some(target) = rule.get("target_label").and_then(Value::as_str) else {
                    return Err("a replace rule without target_label".into());
                };
                let replacement = rule
                    .get("replacement")
                    .and_then(Value::as_str)
                    .unwrap_or("$1");
                if !regex.full_match(&value) {
                    continue;
                }
                let new = if !replacement.contains('$') {
                    replacement.to_string()
                } else if pattern == "(.*)" && matches!(replacement, "$1" | "${1}") {
                    value
                } else {
                    return Err(format!(
                        "replace with regex {pattern:?} and replacement {replacement:?} is beyond this test's relabelling"
                    ));
                };
                if new.is_empty() {
                    labels.remove(target);
                } else {
                    labels.insert(target.to_string(), new);
                }
            }
            other => {
                return Err(format!(
                    "relabel action {other:?} is beyond this test's relabelling"
                ));
            }
        }
    }
    Ok(Some(labels))
}

// ---------------------------------------------------------------------------------------------
// Monitoring: the dashboard, the adapter rules, the scrape config

/// A Grafana datasource reference that follows the `datasource` variable.
fn is_datasource_variable(v: Option<&Value>) -> bool {
    let uid = match v {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(o)) => o.get("uid").and_then(Value::as_str),
        _ => None,
    };
    matches!(uid, Some("${datasource}" | "$datasource"))
}

fn check_monitoring(
    inputs: &Inputs,
    workloads: &[&Obj],
    hpa_pod_metrics: &[(String, String, &'static str)],
    r: &mut Report,
) {
    // The names each binary writes.
    let mut exported: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (bin, src) in METRICS_SOURCES {
        match inputs.files.get(*src) {
            None => r.bad(
                src,
                "missing: cannot learn which metrics the binaries export",
            ),
            Some(text) => {
                let names = metric_names_in(text);
                if names.is_empty() {
                    r.bad(src, "no quoted \"gateway_…\", \"tree_…\" or \"cluster_…\" names found: has the metrics code changed?");
                }
                exported.insert(*bin, names);
            }
        }
    }
    let known: BTreeSet<String> = exported.values().flatten().cloned().collect();
    // The gateway exports both files' metrics, the relay only its own.
    let exported_by = |bin: &str| match bin {
        "gateway" => known.clone(),
        _ => exported.get(bin).cloned().unwrap_or_default(),
    };

    // The dashboard.
    match inputs.files.get(DASHBOARD) {
        None => r.bad(DASHBOARD, "missing"),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Err(e) => r.bad(DASHBOARD, format!("not valid JSON: {e}")),
            Ok(d) => check_dashboard(&d, &known, r),
        },
    }

    // The monitoring objects.
    let objs = parse_objects(inputs.monitoring_manifests(), r);
    // ConfigMap files of a given key, parsed.
    let config_files = |key: &str, r: &mut Report| -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for o in objs.iter().filter(|o| o.kind == "ConfigMap") {
            let Some(text) = o
                .get("/data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let at = format!("{}, {key}", o.at());
            match parse_yaml(text) {
                Err(e) => r.bad(&at, format!("not valid YAML: {e}")),
                Ok(docs) => out.push((at, docs.into_iter().next().unwrap_or(Value::Null))),
            }
        }
        out
    };

    // prometheus-adapter rules: what they make, from which series.
    let adapter = config_files("config.yaml", r);
    if adapter.is_empty() {
        r.bad(
            MONITORING,
            "no prometheus-adapter configuration (a ConfigMap with a config.yaml of rules:)",
        );
    }
    let mut produced: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (at, cfg) in &adapter {
        let rules = cfg
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if rules.is_empty() {
            r.bad(at, "no rules");
        }
        for (n, rule) in rules.iter().enumerate() {
            let at = format!("{at}: rule {}", n + 1);
            let series_query = rule
                .get("seriesQuery")
                .and_then(Value::as_str)
                .unwrap_or("");
            let series: Vec<String> = promql_selectors(series_query)
                .into_iter()
                .map(|s| s.name)
                .collect();
            if series.is_empty() {
                r.bad(&at, "seriesQuery names no metric");
            }
            let metrics_query = rule
                .get("metricsQuery")
                .and_then(Value::as_str)
                .unwrap_or("");
            for (what, query) in [
                ("seriesQuery", series_query),
                ("metricsQuery", metrics_query),
            ] {
                for s in promql_selectors(query) {
                    if !is_known_metric(&s.name, &known) {
                        r.bad(&at, format!("{what} uses {}, which is not a metric gateway/src/metrics.rs or relay/shell/src/cluster_metrics.rs writes", s.name));
                    }
                }
            }
            for template in ["<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"] {
                if !metrics_query.contains(template) {
                    r.bad(&at, format!("metricsQuery lacks {template}: the adapter could not narrow it to the pods the HPA asks about"));
                }
            }
            if series.iter().all(|s| s.ends_with("_total"))
                && !["rate(", "irate(", "increase("]
                    .iter()
                    .any(|f| metrics_query.contains(f))
            {
                r.bad(
                    &at,
                    "metricsQuery serves a counter's running total: take its rate",
                );
            }
            let overrides = rule.pointer("/resources/overrides");
            let maps = |label: &str, resource: &str| {
                overrides
                    .and_then(|o| o.get(label))
                    .and_then(|o| o.get("resource"))
                    .and_then(Value::as_str)
                    .is_some_and(|res| res == resource)
            };
            let template = rule
                .pointer("/resources/template")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("<<.Resource>>"));
            let mapped = template || (maps("namespace", "namespace") && maps("pod", "pod"));
            if !mapped {
                r.bad(&at, "resources do not map the labels namespace and pod to their resources: a Pods metric would find no series");
            }
            let Some(made) = rule.pointer("/name/as").and_then(Value::as_str) else {
                r.bad(&at, "no name.as: say which metric the rule makes");
                continue;
            };
            if let Some(matches) = rule.pointer("/name/matches").and_then(Value::as_str) {
                match Regex::new(matches) {
                    Err(e) => r.bad(&at, format!("name.matches {matches:?}: {e}")),
                    Ok(re) => {
                        for s in &series {
                            if !re.is_match(s) {
                                r.bad(&at, format!("name.matches {matches:?} does not match {s}: the rule makes nothing"));
                            }
                        }
                    }
                }
            }
            produced.insert(made.to_string(), (at.clone(), series));
        }
    }
    for (hpa, metric, bin) in hpa_pod_metrics {
        match produced.get(metric) {
            None => r.bad(hpa, format!(
                "its Pods metric {metric} is made by no prometheus-adapter rule in {MONITORING} (they make {:?})",
                produced.keys().collect::<Vec<_>>()
            )),
            Some((at, series)) => {
                let exports = exported_by(bin);
                for s in series {
                    if !exports.contains(s) {
                        r.bad(at, format!("makes {metric}, which scales `{bin}`, from {s}, which `{bin}` does not export"));
                    }
                }
            }
        }
    }

    // Prometheus scrape jobs against every container port of every workload.
    let scrape = config_files("prometheus.yml", r);
    if scrape.is_empty() {
        r.bad(
            MONITORING,
            "no Prometheus scrape configuration (a ConfigMap with a prometheus.yml)",
        );
    }
    let jobs: Vec<(String, Value)> = scrape
        .iter()
        .flat_map(|(at, cfg)| {
            cfg.get("scrape_configs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |j| {
                    let name = j
                        .get("job_name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string();
                    (format!("{at}: job {name}"), j)
                })
        })
        .collect();
    for w in workloads {
        let ns = w.namespace.as_deref().unwrap_or("");
        let pod_containers = w.containers();
        for c in &pod_containers {
            let Some(bin) = binary_of(c) else { continue };
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
            let env = env_of(c);
            // /metrics is served where /healthz is: the HTTP port, the relay's stats port.
            let metrics_port = literal(&env, bin.health).and_then(port_of).map(u64::from);
            let needs_token = env.iter().any(|(n, _)| n == "GATEWAY_ADMIN_TOKENS");
            for pc in &pod_containers {
                let pc_name = pc.get("name").and_then(Value::as_str).unwrap_or("?");
                for port in ports_of(pc) {
                    let serves_metrics = pc_name == cname
                        && Some(port.port) == metrics_port
                        && port.protocol == "TCP";
                    let what = format!(
                        "port {}/{} ({}) of {}, container {pc_name}",
                        port.port,
                        port.protocol,
                        port.name.as_deref().unwrap_or("unnamed"),
                        w.at()
                    );
                    let mut kept_by = Vec::new();
                    for (jat, job) in &jobs {
                        let sd = job
                            .get("kubernetes_sd_configs")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        let discovers = sd.iter().any(|s| {
                            s.get("role").and_then(Value::as_str) == Some("pod")
                                && s.pointer("/namespaces/names")
                                    .and_then(Value::as_array)
                                    .is_none_or(|names| names.iter().any(|n| n == ns))
                        });
                        if !discovers {
                            continue;
                        }
                        let rules = job
                            .get("relabel_configs")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        match relabel(&rules, discovered_labels(w, pc, &port)) {
                            Err(e) => r.bad(jat, e),
                            Ok(None) => {}
                            Ok(Some(labels)) => kept_by.push((jat, job, labels)),
                        }
                    }
                    if !serves_metrics {
                        for (jat, _, _) in &kept_by {
                            r.bad(jat, format!("scrapes {what}, which serves no /metrics"));
                        }
                        continue;
                    }
                    match kept_by.as_slice() {
                        [] => r.bad(
                            MONITORING,
                            format!(
                                "no Prometheus scrape job keeps {what}, where `{}` serves /metrics",
                                bin.name
                            ),
                        ),
                        [_] => {}
                        more => r.bad(
                            MONITORING,
                            format!(
                                "{what} is scraped by {} jobs: every sum would count it {} times",
                                more.len(),
                                more.len()
                            ),
                        ),
                    }
                    for (jat, job, labels) in &kept_by {
                        let path = job
                            .get("metrics_path")
                            .and_then(Value::as_str)
                            .unwrap_or("/metrics");
                        if path != "/metrics" {
                            r.bad(
                                jat,
                                format!("metrics_path is {path:?}, the binaries serve /metrics"),
                            );
                        }
                        for label in ["namespace", "pod", "container"] {
                            if labels.get(label).is_none_or(String::is_empty) {
                                r.bad(jat, format!("gives {what} no `{label}` label (the dashboard and prometheus-adapter need namespace, pod and container)"));
                            }
                        }
                        let credentials = job.pointer("/authorization/credentials_file").is_some()
                            || job.pointer("/authorization/credentials").is_some()
                            || job.get("bearer_token_file").is_some();
                        if needs_token && !credentials {
                            r.bad(jat, format!("scrapes {what} without credentials: GATEWAY_ADMIN_TOKENS is set, so /metrics needs an admin token (authorization.credentials_file)"));
                        }
                    }
                }
            }
        }
    }

    // The monitoring kustomization: every manifest, the dashboard through a generator.
    let kpath = format!("{MONITORING}kustomization.yaml");
    match inputs.files.get(&kpath) {
        None => r.bad(&kpath, "missing"),
        Some(text) => match parse_yaml(text) {
            Err(e) => r.bad(&kpath, format!("not valid YAML: {e}")),
            Ok(docs) => {
                let k = docs.into_iter().next().unwrap_or(Value::Null);
                let listed = listed_resources(&k, MONITORING);
                let files: BTreeSet<String> = inputs
                    .monitoring_manifests()
                    .map(|(p, _)| p.clone())
                    .collect();
                for f in files.difference(&listed) {
                    r.bad(&kpath, format!("does not list {f} under resources"));
                }
                for f in listed.difference(&files) {
                    r.bad(&kpath, format!("lists {f}, which does not exist"));
                }
                let generated: BTreeSet<String> = k
                    .get("configMapGenerator")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.get("files").and_then(Value::as_array))
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|f| format!("{MONITORING}{}", f.rsplit_once('=').map_or(f, |(_, p)| p)))
                    .collect();
                for f in &generated {
                    if !inputs.files.contains_key(f) {
                        r.bad(
                            &kpath,
                            format!("configMapGenerator reads {f}, which does not exist"),
                        );
                    }
                }
                for f in inputs
                    .files
                    .keys()
                    .filter(|p| p.starts_with(MONITORING) && p.ends_with(".json"))
                {
                    if !generated.contains(f) {
                        r.bad(&kpath, format!("{f} is in no configMapGenerator"));
                    }
                }
                if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
                    for o in &objs {
                        if o.namespace.as_deref() != Some(ns) {
                            r.bad(
                                &o.at(),
                                format!(
                                    "metadata.namespace is {:?}, but {kpath} puts it in {ns:?}",
                                    o.namespace
                                ),
                            );
                        }
                    }
                }
            }
        },
    }
}

fn check_dashboard(d: &Value, known: &BTreeSet<String>, r: &mut Report) {
    let schema = as_u64(d.get("schemaVersion")).unwrap_or(0);
    if schema < 38 {
        r.bad(
            DASHBOARD,
            format!("schemaVersion {schema} < 38 (Grafana 10)"),
        );
    }
    let vars = d
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    };
    match var("datasource") {
        Some(v)
            if v.get("type").and_then(Value::as_str) == Some("datasource")
                && v.get("query").and_then(Value::as_str) == Some("prometheus") => {}
        _ => r.bad(
            DASHBOARD,
            "no variable `datasource` of type datasource, query prometheus",
        ),
    }
    for name in ["namespace", "pod"] {
        if var(name)
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
            != Some("query")
        {
            r.bad(DASHBOARD, format!("no query variable `{name}`"));
        }
    }
    for v in &vars {
        if v.get("type").and_then(Value::as_str) != Some("query") {
            continue;
        }
        let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
        let at = format!("{DASHBOARD}: variable {name}");
        if !is_datasource_variable(v.get("datasource")) {
            r.bad(&at, "its datasource is not the ${datasource} variable");
        }
        let query = match v.get("query") {
            Some(Value::String(q)) => q.clone(),
            Some(q) => q
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        };
        for s in variable_expr(&query)
            .map(|e| promql_selectors(&e))
            .unwrap_or_default()
        {
            if !is_known_metric(&s.name, known) {
                r.bad(&at, format!("uses {}, which is not a metric gateway/src/metrics.rs or relay/shell/src/cluster_metrics.rs writes", s.name));
            }
        }
    }

    // Panels, and the panels of collapsed rows.
    let mut panels: Vec<Value> = Vec::new();
    let mut stack: Vec<Value> = d
        .get("panels")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    stack.reverse();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            stack.extend(inner.iter().rev().cloned());
        }
        panels.push(p);
    }
    if !panels
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) != Some("row"))
    {
        r.bad(DASHBOARD, "no panels");
    }
    let mut ids = BTreeSet::new();
    for p in &panels {
        let id = as_u64(p.get("id"));
        let title = p.get("title").and_then(Value::as_str).unwrap_or("");
        let at = format!(
            "{DASHBOARD}: panel {} {title:?}",
            id.map_or("without id".to_string(), |i| i.to_string())
        );
        match id {
            None => r.bad(&at, "no id"),
            Some(i) if !ids.insert(i) => r.bad(&at, "id used twice"),
            Some(_) => {}
        }
        if p.get("gridPos").is_none() {
            r.bad(&at, "no gridPos");
        }
        if p.get("type").and_then(Value::as_str) == Some("row") {
            continue;
        }
        if title.is_empty() {
            r.bad(&at, "no title");
        }
        if p.get("datasource").is_none() {
            r.bad(&at, "no datasource");
        } else if !is_datasource_variable(p.get("datasource")) {
            r.bad(&at, "its datasource is not the ${datasource} variable");
        }
        let targets = p
            .get("targets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if targets.is_empty() {
            r.bad(&at, "no targets");
        }
        for t in &targets {
            let ref_id = t.get("refId").and_then(Value::as_str).unwrap_or("?");
            let at = format!("{at}, target {ref_id}");
            if t.get("datasource").is_some() && !is_datasource_variable(t.get("datasource")) {
                r.bad(&at, "its datasource is not the ${datasource} variable");
            }
            let expr = t.get("expr").and_then(Value::as_str).unwrap_or("");
            let selectors = promql_selectors(expr);
            if selectors.is_empty() {
                r.bad(&at, format!("expr {expr:?} selects no metric"));
            }
            for s in selectors {
                if !is_known_metric(&s.name, known) {
                    r.bad(&at, format!("uses {}, which is not a metric gateway/src/metrics.rs or relay/shell/src/cluster_metrics.rs writes", s.name));
                }
                if !(s.matchers.contains("$namespace") && s.matchers.contains("$pod")) {
                    r.bad(
                        &at,
                        format!(
                            "selects {}{{{}}} without filtering on $namespace and $pod",
                            s.name, s.matchers
                        ),
                    );
                }
            }
        }
    }
}

fn assert_clean(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in the Kubernetes manifests:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn assert_complains(inputs: &Inputs, needles: &[&str]) {
    let problems = check(inputs);
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "expected a complaint containing {needles:?}, got:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn manifests_agree_with_the_binaries_and_each_other() {
    assert_clean(&check(&Inputs::load()));
}

#[test]
fn the_env_names_come_from_the_sources() {
    let inputs = Inputs::load();
    let gateway = env_names_in(&inputs.files["gateway/src/config.rs"]);
    let relay = env_names_in(&inputs.files["relay/src/main.rs"]);
    assert!(
        gateway.contains("GATEWAY_CLUSTER_MEMBERS_DNS"),
        "{gateway:?}"
    );
    assert!(relay.contains("RELAY_MEMBERS_DNS"), "{relay:?}");
}

#[test]
fn breaking_an_env_name_is_caught() {
    let i = Inputs::load().broken(
        "k8s/gateway.yaml",
        "name: GATEWAY_CLUSTER_MEMBERS_DNS",
        "name: GATEWAY_CLUSTER_MEMBER_DNS",
    );
    assert_complains(
        &i,
        &[
            "k8s/gateway.yaml: Deployment/gateway, container gateway",
            "GATEWAY_CLUSTER_MEMBER_DNS is not read by `gateway`",
        ],
    );
}

#[test]
fn renaming_a_flag_in_the_source_is_caught() {
    let i = Inputs::load().broken(
        "relay/src/main.rs",
        "env = \"RELAY_NODE_ID\"",
        "env = \"RELAY_ID\"",
    );
    assert_complains(
        &i,
        &["Deployment/relay", "RELAY_NODE_ID is not read by `relay`"],
    );
}

#[test]
fn breaking_a_headless_service_is_caught() {
    let i = Inputs::load().broken("k8s/relay.yaml", "  clusterIP: None\n", "");
    assert_complains(&i, &["Service/relay-cluster", "clusterIP: None"]);
    let i = Inputs::load().broken(
        "k8s/gateway.yaml",
        "0:gateway-cluster.wish.svc.cluster.local:7000",
        "0:gateways.wish.svc.cluster.local:7000",
    );
    assert_complains(&i, &["Deployment/gateway", "no Service wish/gateways"]);
}

#[test]
fn breaking_probes_resources_or_security_is_caught() {
    let i = Inputs::load().broken("k8s/relay.yaml", "value: \"2000\"", "value: 2000");
    assert_complains(
        &i,
        &[
            "Deployment/relay, container relay",
            "RELAY_DNS_REFRESH_MS value is not a string",
        ],
    );
    let i = Inputs::load().broken(HOSTNETWORK, "wish/gateway: \"true\"", "wish/gateway: true");
    assert_complains(
        &i,
        &[
            "k8s/alternatives/hostnetwork/gateway.yaml: DaemonSet/gateway",
            "nodeSelector/wish/gateway is true, not a string",
        ],
    );
    let i = Inputs::load().broken("k8s/gateway.yaml", "readinessProbe:", "startupProbe:");
    assert_complains(
        &i,
        &["Deployment/gateway, container gateway", "no readinessProbe"],
    );
    let i = Inputs::load().broken("k8s/relay.yaml", "              memory: 1Gi\n", "");
    assert_complains(
        &i,
        &["Deployment/relay, container relay", "no memory limit"],
    );
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "runAsNonRoot: true",
        "runAsNonRoot: false",
    );
    assert_complains(
        &i,
        &[
            "Deployment/relay, container relay",
            "runAsNonRoot is not true",
        ],
    );
    let i = Inputs::load().broken(
        HOSTNETWORK,
        "dnsPolicy: ClusterFirstWithHostNet",
        "dnsPolicy: ClusterFirst",
    );
    assert_complains(&i, &["DaemonSet/gateway", "ClusterFirstWithHostNet"]);
}

#[test]
fn breaking_ports_is_caught() {
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "containerPort: 7080",
        "containerPort: 7081",
    );
    assert_complains(
        &i,
        &[
            "Deployment/relay, container relay",
            "RELAY_STATS_LISTEN listens on 7080/TCP",
        ],
    );
    assert_complains(
        &i,
        &[
            "Service/relay-cluster",
            "headless, so clients dial port Some(7080)",
        ],
    );
    let i = Inputs::load().broken(
        "k8s/gateway.yaml",
        "value: $(POD_IP):7000",
        "value: $(POD_IP):7001",
    );
    assert_complains(&i, &["Deployment/gateway", "GATEWAY_NODE_ID"]);
}

#[test]
fn breaking_the_secret_is_caught() {
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "secretName: wish-cluster",
        "secretName: wish-clusters",
    );
    assert_complains(
        &i,
        &["Deployment/relay", "no volume from the Secret wish-cluster"],
    );
    let i = Inputs::load().broken(
        "k8s/gateway.yaml",
        "/etc/wish/cluster/cluster.key",
        "/etc/wish/cluster.key",
    );
    assert_complains(
        &i,
        &[
            "Deployment/gateway",
            "GATEWAY_CLUSTER_KEY=\"/etc/wish/cluster.key\"",
        ],
    );
}

#[test]
fn breaking_the_autoscaler_or_kustomization_is_caught() {
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "    kind: Deployment\n    name: relay\n",
        "    kind: Deployment\n    name: relays\n",
    );
    assert_complains(
        &i,
        &[
            "HorizontalPodAutoscaler/relay",
            "scaleTargetRef Deployment/relays",
        ],
    );
    let i = Inputs::load().broken("k8s/kustomization.yaml", "  - relay.yaml\n", "");
    assert_complains(
        &i,
        &["k8s/kustomization.yaml", "does not list k8s/relay.yaml"],
    );
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "          value: wish\n",
        "          value: other\n",
    );
    assert_complains(&i, &["disagree on the cluster name"]);
}

/// The hostNetwork alternative's DaemonSet.
const HOSTNETWORK: &str = "k8s/alternatives/hostnetwork/gateway.yaml";
const HOSTNETWORK_KUSTOMIZATION: &str = "k8s/alternatives/hostnetwork/kustomization.yaml";

#[test]
fn breaking_one_address_is_caught() {
    let gateway = "k8s/gateway.yaml";
    // On the host network, the Deployment would need one pod per node, and a privileged
    // namespace.
    let i = Inputs::load().broken(
        gateway,
        "      serviceAccountName: gateway\n",
        "      serviceAccountName: gateway\n      hostNetwork: true\n      dnsPolicy: ClusterFirstWithHostNet\n",
    );
    assert_complains(&i, &["k8s/gateway.yaml: Deployment/gateway", "one address"]);
    assert_complains(
        &i,
        &["Deployment/gateway", "Pod Security level \"restricted\""],
    );
    let i = Inputs::load().broken(
        gateway,
        "containerPort: 8189\n",
        "containerPort: 8189\n              hostPort: 8189\n",
    );
    assert_complains(
        &i,
        &[
            "Deployment/gateway, container gateway",
            "port 8189 has a hostPort",
        ],
    );
    // Affinity on the HTTP Service (the first LoadBalancer in the file).
    let i = Inputs::load().broken(
        gateway,
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  sessionAffinity: ClientIP\n",
    );
    assert_complains(
        &i,
        &[
            "Service/gateway",
            "sessionAffinity ClientIP: none is needed",
        ],
    );
    let i = Inputs::load().broken(gateway, "  externalTrafficPolicy: Local\n", "");
    assert_complains(&i, &["Service/gateway", "no externalTrafficPolicy"]);
    // The media Service on another port than the one the candidates name.
    let i = Inputs::load().broken(gateway, "      port: 8189\n", "      port: 443\n");
    assert_complains(
        &i,
        &[
            "Deployment/gateway, container gateway",
            "GATEWAY_UDP_LISTEN: no LoadBalancer Service selecting it carries 8189/UDP on port 8189",
        ],
    );
    // ICE-TCP on: its candidates would name TCP 8189 at the balancer, which carries no TCP 8189.
    let i = Inputs::load().broken(
        gateway,
        "            - name: GATEWAY_NO_ICE_TCP\n              value: \"true\"\n",
        "",
    );
    assert_complains(&i, &["ICE-TCP", "carries 8189/TCP on port 8189"]);
    let i = Inputs::load().broken(
        gateway,
        "              value: $(POD_IP)\n",
        "              value: 0.0.0.0\n",
    );
    assert_complains(
        &i,
        &[
            "Deployment/gateway",
            "GATEWAY_CANDIDATE_IPS is Some(\"0.0.0.0\")",
        ],
    );
    let i = Inputs::load().broken(
        gateway,
        "            - name: GATEWAY_PUBLIC_IPS\n              valueFrom:\n                configMapKeyRef:\n                  name: wish-gateway\n                  key: public-ips\n",
        "",
    );
    assert_complains(&i, &["Deployment/gateway", "GATEWAY_PUBLIC_IPS is not set"]);
    let i = Inputs::load().broken("k8s/kustomization.yaml", "- public-ips=", "- public-ip=");
    assert_complains(
        &i,
        &[
            "Deployment/gateway",
            "needs ConfigMap wish-gateway key public-ips",
        ],
    );
    // Gateways on different ports: a second gateway Deployment, HTTP on 8081.
    let text = &Inputs::load().files[gateway];
    let start = text
        .find("apiVersion: apps/v1\nkind: Deployment")
        .expect("the Deployment");
    let end = start + text[start..].find("\n---\n").expect("a document after it");
    let second = text[start..end]
        .replacen("  name: gateway\n", "  name: gateway-b\n", 1)
        .replace(
            "app.kubernetes.io/component: gateway",
            "app.kubernetes.io/component: gateway-b",
        )
        .replace("0.0.0.0:8080", "0.0.0.0:8081")
        .replace("containerPort: 8080", "containerPort: 8081");
    let mut i = Inputs::load();
    i.files
        .get_mut(gateway)
        .expect("gateway.yaml")
        .push_str(&format!("---\n{second}\n"));
    assert_complains(
        &i,
        &["k8s/", "gateways listen on different (HTTP, UDP) ports"],
    );
}

#[test]
fn breaking_the_hostnetwork_alternative_is_caught() {
    // Without its Namespace patch, the restricted level refuses the DaemonSet.
    let i = Inputs::load().broken(
        HOSTNETWORK_KUSTOMIZATION,
        "          pod-security.kubernetes.io/enforce: privileged\n",
        "          pod-security.kubernetes.io/enforce: restricted\n",
    );
    assert_complains(
        &i,
        &[
            "DaemonSet/gateway",
            "uses hostNetwork or hostPort",
            "k8s/alternatives/hostnetwork/",
        ],
    );
    // Without removing the Deployment, two controllers would own the gateway pods.
    let i = Inputs::load().broken(
        HOSTNETWORK_KUSTOMIZATION,
        "      $patch: delete\n      apiVersion: apps/v1\n      kind: Deployment\n",
        "      apiVersion: apps/v1\n      kind: Deployment\n",
    );
    assert_complains(
        &i,
        &[
            "k8s/alternatives/hostnetwork/gateway.yaml: DaemonSet/gateway",
            "also matches the pods of k8s/gateway.yaml: Deployment/gateway",
        ],
    );
    let i = Inputs::load().broken(HOSTNETWORK, "      hostNetwork: true\n", "");
    assert_complains(&i, &["DaemonSet/gateway", "off the host network"]);
    let i = Inputs::load().broken(
        HOSTNETWORK_KUSTOMIZATION,
        "        name: gateway-media\n",
        "        name: gateway-udp\n",
    );
    assert_complains(
        &i,
        &[
            "patch 4",
            "patches Service/gateway-udp, which is not in k8s/",
        ],
    );
    // Deployed by default, or not a component.
    let i = Inputs::load().broken(
        "k8s/kustomization.yaml",
        "configMapGenerator:",
        "components:\n  - alternatives/hostnetwork\nconfigMapGenerator:",
    );
    assert_complains(&i, &["k8s/kustomization.yaml", "lists the component"]);
    let i = Inputs::load().broken(
        HOSTNETWORK_KUSTOMIZATION,
        "kind: Component",
        "kind: Kustomization",
    );
    assert_complains(
        &i,
        &[HOSTNETWORK_KUSTOMIZATION, "not a kustomize Component"],
    );
}

/// The image build sees only what the Dockerfile copies: every local path the workspace manifest
/// names (path dependencies, `[patch]` entries such as the vendored dimpl) must be copied, or
/// `docker build` fails although every test here passes.
#[test]
fn the_dockerfile_copies_every_local_path_the_workspace_needs() {
    let root = repo_root();
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    };
    let (manifest, dockerfile) = (read("Cargo.toml"), read("Dockerfile"));
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let paths: Vec<&str> = manifest
        .split("path = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(
        paths.contains(&"vendor/dimpl"),
        "the manifest parse found no vendor/dimpl: {paths:?}"
    );
    for path in paths {
        assert!(
            copied
                .iter()
                .any(|c| *c == path || path.starts_with(&format!("{c}/"))),
            "the Dockerfile does not COPY {path} (it copies {copied:?})"
        );
    }
}

#[test]
fn the_metric_names_come_from_the_sources() {
    let inputs = Inputs::load();
    let gateway = metric_names_in(&inputs.files["gateway/src/metrics.rs"]);
    let relay = metric_names_in(&inputs.files["relay/shell/src/cluster_metrics.rs"]);
    for name in [
        "gateway_sessions",
        "gateway_join_seconds",
        "gateway_worker_sessions",
    ] {
        assert!(gateway.contains(name), "{name} not in {gateway:?}");
    }
    for name in [
        "tree_datagrams_sent_total",
        "tree_hop_duration_seconds",
        "cluster_link_rtt_seconds",
    ] {
        assert!(relay.contains(name), "{name} not in {relay:?}");
    }
    // The dashboard is read, not skipped: it selects most of what the binaries export.
    let dashboard: Value = serde_json::from_str(&inputs.files[DASHBOARD]).expect("JSON");
    let mut used = BTreeSet::new();
    let mut stack = vec![&dashboard];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(expr)) = o.get("expr") {
                    used.extend(promql_selectors(expr).into_iter().map(|s| s.name));
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    for name in [
        "gateway_stream_viewers",
        "gateway_join_phase_seconds_bucket",
        "tree_nacks_forwarded_total",
        "cluster_link_packets_lost_total",
    ] {
        assert!(
            used.contains(name),
            "the dashboard does not use {name}: {used:?}"
        );
    }
}

#[test]
fn promql_names_and_relabel_regexes_are_read_as_prometheus_reads_them() {
    let names =
        |e: &str| -> Vec<String> { promql_selectors(e).into_iter().map(|s| s.name).collect() };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route="/whep/{stream}", pod=~"$pod"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum(rate(b_total[5m])) by (pod) / on(pod) group_left(node) c offset 1h > bool 1e3"),
        ["b_total", "c"]
    );
    assert_eq!(
        names(r#"sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)"#),
        Vec::<String>::new()
    );
    assert_eq!(names(r#"{__name__=~"d|e", ns="x"}"#), ["d", "e"]);
    assert_eq!(
        variable_expr("label_values(f{a=\"1,2\"}, pod)").as_deref(),
        Some("f{a=\"1,2\"}")
    );
    assert_eq!(variable_expr("label_values(pod)"), None);
    let re = |p: &str| Regex::new(p).expect("regex");
    assert!(re("wish;gateway;http").full_match("wish;gateway;http"));
    assert!(!re("wish;gateway;http").full_match("wish;gateway;https"));
    assert!(re("Pending|Succeeded|Failed").full_match("Failed"));
    assert!(!re("Pending|Succeeded|Failed").full_match("Running"));
    assert!(re("(.*)").full_match(""));
    assert!(re(r"[a-z]+-\d{2,3}(?:x|y)?").full_match("relay-123y"));
    assert!(!re(r"[a-z]+-\d{2,3}").full_match("relay-1234"));
    assert!(re("^tree_datagrams_sent_total$").is_match("tree_datagrams_sent_total"));
    assert!(!re("^tree_datagrams_sent$").is_match("tree_datagrams_sent_total"));
    assert!(re("sent").is_match("tree_datagrams_sent_total"));
}

#[test]
fn breaking_the_dashboard_is_caught() {
    let i = Inputs::load().broken(
        DASHBOARD,
        "rate(gateway_nacks_answered_total{",
        "rate(gateway_nacks_answerd_total{",
    );
    assert_complains(
        &i,
        &[
            "k8s/monitoring/grafana-dashboard.json: panel",
            "uses gateway_nacks_answerd_total, which is not a metric",
        ],
    );
    let i = Inputs::load().broken(
        DASHBOARD,
        "gateway_streams{namespace=~\\\"$namespace\\\", pod=~\\\"$pod\\\"}",
        "gateway_streams{namespace=~\\\"$namespace\\\"}",
    );
    assert_complains(
        &i,
        &[
            "\"Streams\", target A",
            "gateway_streams{namespace=~\"$namespace\"} without filtering on $namespace and $pod",
        ],
    );
    let title = |v: &Value| v.get("title").and_then(Value::as_str).map(str::to_string);
    let i = Inputs::load().edited_json(DASHBOARD, |d| {
        let panels = d["panels"].as_array_mut().expect("panels");
        let p = panels
            .iter_mut()
            .find(|p| title(p).as_deref() == Some("Link RTT"))
            .expect("a Link RTT panel");
        p.as_object_mut()
            .expect("panel")
            .remove("datasource")
            .is_some()
    });
    assert_complains(&i, &["panel", "\"Link RTT\": no datasource"]);
    let i = Inputs::load().edited_json(DASHBOARD, |d| {
        let panels = d["panels"].as_array_mut().expect("panels");
        let p = panels
            .iter_mut()
            .find(|p| title(p).as_deref() == Some("Keyframe cache hits"))
            .expect("a Keyframe cache hits panel");
        p["targets"] = Value::Array(vec![]);
        true
    });
    assert_complains(&i, &["\"Keyframe cache hits\": no targets"]);
    let i = Inputs::load().edited_json(DASHBOARD, |d| {
        let vars = d["templating"]["list"].as_array_mut().expect("variables");
        let before = vars.len();
        vars.retain(|v| v["name"] != "pod");
        vars.len() < before
    });
    assert_complains(&i, &[DASHBOARD, "no query variable `pod`"]);
    let i = Inputs::load().broken(DASHBOARD, "\"panels\": [", "\"panels\": [[");
    assert_complains(&i, &[DASHBOARD, "not valid JSON"]);
}

#[test]
fn breaking_the_autoscaler_metrics_is_caught() {
    // No Pods metric: the relays would scale on CPU only.
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "    - type: Pods\n      pods:\n",
        "    - type: External\n      external:\n",
    );
    assert_complains(&i, &["HorizontalPodAutoscaler/relay", "no Pods metric"]);
    // A Pods metric no adapter rule makes.
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "name: relay_tree_datagrams_sent_per_second",
        "name: relay_datagrams_out_per_second",
    );
    assert_complains(
        &i,
        &[
            "HorizontalPodAutoscaler/relay",
            "relay_datagrams_out_per_second is made by no prometheus-adapter rule",
        ],
    );
    let i = Inputs::load().broken("k8s/relay.yaml", "type: AverageValue", "type: Value");
    assert_complains(&i, &["HorizontalPodAutoscaler/relay", "AverageValue"]);
    let i = Inputs::load().broken(
        "k8s/relay.yaml",
        "        name: cpu\n",
        "        name: memory\n",
    );
    assert_complains(
        &i,
        &["HorizontalPodAutoscaler/relay", "no CPU resource metric"],
    );
}

#[test]
fn breaking_the_adapter_rule_is_caught() {
    let adapter = "k8s/monitoring/prometheus-adapter.yaml";
    let i = Inputs::load().broken(
        adapter,
        "as: relay_tree_datagrams_sent_per_second",
        "as: relay_datagrams_per_second",
    );
    assert_complains(
        &i,
        &[
            "HorizontalPodAutoscaler/relay",
            "made by no prometheus-adapter rule",
        ],
    );
    let i = Inputs::load().broken(
        adapter,
        "seriesQuery: 'tree_datagrams_sent_total{",
        "seriesQuery: 'tree_datagram_sent_total{",
    );
    assert_complains(
        &i,
        &[
            "ConfigMap/wish-prometheus-adapter, config.yaml: rule 1",
            "seriesQuery uses tree_datagram_sent_total, which is not a metric",
        ],
    );
    let i = Inputs::load().broken(
        adapter,
        "sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m]))",
        "sum(<<.Series>>{<<.LabelMatchers>>})",
    );
    assert_complains(&i, &["rule 1", "counter's running total"]);
    let i = Inputs::load().broken(adapter, "            pod: {resource: pod}\n", "");
    assert_complains(&i, &["rule 1", "namespace and pod"]);
    // A gateway-only metric cannot drive the relays.
    let i = Inputs::load()
        .broken(
            adapter,
            "'tree_datagrams_sent_total{",
            "'gateway_udp_sent_bytes_total{",
        )
        .broken(
            adapter,
            "^tree_datagrams_sent_total$",
            "^gateway_udp_sent_bytes_total$",
        );
    assert_complains(&i, &["rule 1", "which `relay` does not export"]);
}

#[test]
fn breaking_the_scrape_config_is_caught() {
    let scrape = "k8s/monitoring/prometheus-scrape.yaml";
    let i = Inputs::load().broken(
        scrape,
        "regex: wish;gateway;http",
        "regex: wish;gateway;webrtc",
    );
    // Both variants' gateways: the Deployment and the alternative's DaemonSet.
    for gateway in ["k8s/gateway.yaml: Deployment/gateway", "DaemonSet/gateway"] {
        assert_complains(
            &i,
            &[
                "no Prometheus scrape job keeps port 8080/TCP (http) of",
                gateway,
            ],
        );
    }
    assert_complains(
        &i,
        &[
            "job wish-gateway",
            "scrapes port 8189/UDP (webrtc)",
            "serves no /metrics",
        ],
    );
    let i = Inputs::load().broken(scrape, "regex: wish;relay;stats", "regex: wish;relay;.*");
    assert_complains(
        &i,
        &[
            "job wish-relay",
            "scrapes port 7000/UDP (cluster) of",
            "Deployment/relay",
        ],
    );
    let i = Inputs::load().broken(
        scrape,
        "        authorization:\n          type: Bearer\n          credentials_file: /etc/prometheus/secrets/wish-metrics/admin-token\n",
        "",
    );
    assert_complains(
        &i,
        &[
            "job wish-gateway",
            "without credentials",
            "GATEWAY_ADMIN_TOKENS",
        ],
    );
    let i = Inputs::load().broken(
        scrape,
        "            target_label: pod\n",
        "            target_label: pod_name\n",
    );
    assert_complains(&i, &["job wish-gateway", "no `pod` label"]);
    let i = Inputs::load().broken(scrape, "names: [wish]", "names: [default]");
    assert_complains(&i, &["no Prometheus scrape job keeps port 8080/TCP (http)"]);
}

#[test]
fn renaming_a_metric_in_the_source_is_caught() {
    let i = Inputs::load().broken(
        "relay/shell/src/cluster_metrics.rs",
        "\"tree_datagrams_sent_total\"",
        "\"tree_datagrams_out_total\"",
    );
    assert_complains(
        &i,
        &[
            DASHBOARD,
            "uses tree_datagrams_sent_total, which is not a metric",
        ],
    );
    assert_complains(
        &i,
        &[
            "config.yaml: rule 1",
            "uses tree_datagrams_sent_total, which is not a metric",
        ],
    );
}

#[test]
fn breaking_the_monitoring_kustomization_is_caught() {
    let k = "k8s/monitoring/kustomization.yaml";
    let i = Inputs::load().broken(k, "  - prometheus-adapter.yaml\n", "");
    assert_complains(
        &i,
        &[k, "does not list k8s/monitoring/prometheus-adapter.yaml"],
    );
    let i = Inputs::load().broken(
        k,
        "wish.json=grafana-dashboard.json",
        "wish.json=dashboard.json",
    );
    assert_complains(
        &i,
        &[k, "grafana-dashboard.json is in no configMapGenerator"],
    );
    // The monitoring manifests are not part of `kubectl apply -k k8s/`, nor checked as if they were.
    let problems = check(&Inputs::load());
    assert!(problems.is_empty(), "{problems:?}");
}

/// The `resources` a kustomization lists, as repository paths (`prefix` + each entry).
fn listed_resources(kustomization: &Value, prefix: &str) -> BTreeSet<String> {
    kustomization
        .get("resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| format!("{prefix}{s}"))
                .collect()
        })
        .unwrap_or_default()
}
