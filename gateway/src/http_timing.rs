//! How long HTTP requests take, per route and method (the route as the router matched it, e.g.
//! `/whep/{stream}`, so label sets are bounded by the route table). The node keeps these
//! histograms; the HTTP front's middleware fills them (`front::timing`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use relay_proto::histogram::{Histogram, HistogramSnapshot, JOIN_BUCKETS};

/// Route label of requests no route matched (scanners, typos): one series for all of them.
pub const UNMATCHED: &str = "unmatched";

/// Per (method, route): the durations.
#[derive(Debug, Default)]
pub struct HttpTiming {
    by_route: Mutex<BTreeMap<(String, String), Arc<Histogram>>>,
}

impl HttpTiming {
    pub(crate) fn histogram(&self, method: &str, route: &str) -> Arc<Histogram> {
        let mut map = match self.by_route.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((method.to_string(), route.to_string()))
            .or_insert_with(|| Arc::new(Histogram::new(JOIN_BUCKETS)))
            .clone()
    }

    /// (method, route, durations), sorted.
    pub fn snapshot(&self) -> Vec<(String, String, HistogramSnapshot)> {
        let map = match self.by_route.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|((m, r), h)| (m.clone(), r.clone(), h.snapshot()))
            .collect()
    }
}
