//! Prometheus text exposition (format 0.0.4), written by hand: a few dozen counters and gauges
//! read from the stats the nodes already keep, so no registry, no global state, no locks on the
//! packet path — a scrape reads the same numbers `/v1/stats` shows. Here too the cluster's own
//! metrics (`tree_*`), which the gateway and the relay binary both expose.

use std::fmt::Write;

use crate::histogram::HistogramSnapshot;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A total since the process started; the name ends in `_total`.
    Counter,
    /// A value that can go up and down.
    Gauge,
    /// Observations in buckets; written as cumulative `_bucket`s, `_sum` and `_count`.
    Histogram,
}

/// One series' value.
#[derive(Debug, Clone)]
pub enum Value {
    /// A counter's or a gauge's value.
    Number(f64),
    /// A histogram's buckets and sum.
    Histogram(HistogramSnapshot),
}

/// One metric: its name, help, kind and series (label pairs, value).
#[derive(Debug, Clone)]
pub struct Family {
    /// The metric's name, as exposed.
    pub name: String,
    /// The `# HELP` text.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// One value per label set: the labels as (name, value) pairs, and the value.
    pub series: Vec<(Vec<(String, String)>, Value)>,
}

/// One scrape's (or one push's) metrics: gathered once, written as Prometheus text
/// ([`Exposition::finish`]) or as OTLP (`relay_shell::otlp`).
#[derive(Debug, Default)]
pub struct Exposition {
    /// The metrics, in the order they are written.
    pub families: Vec<Family>,
}

/// A label value, escaped as the format wants (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        series: Vec<(Vec<(String, String)>, Value)>,
    ) {
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            series,
        });
    }

    /// A counter (a total since the process started); `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.push(
            name,
            help,
            Kind::Counter,
            vec![(vec![], Value::Number(value as f64))],
        );
    }

    /// A gauge (a value that can go up and down), without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.push(
            name,
            help,
            Kind::Gauge,
            vec![(vec![], Value::Number(value))],
        );
    }

    /// A metric with one sample per label set.
    pub fn family<'a>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        let series = samples
            .into_iter()
            .map(|(l, v)| (owned(&l), Value::Number(v)))
            .collect();
        self.push(name, help, kind, series);
    }

    /// A histogram, one series per label set.
    pub fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, &'a HistogramSnapshot)>,
    ) {
        let series = series
            .into_iter()
            .map(|(l, h)| (owned(&l), Value::Histogram(h.clone())))
            .collect();
        self.push(name, help, Kind::Histogram, series);
    }

    /// The Prometheus text: histograms as cumulative `_bucket`s up to `+Inf`, `_sum`, `_count`.
    pub fn finish(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (labels, value) in &f.series {
                match value {
                    Value::Number(v) => sample(&mut out, &f.name, labels, None, *v),
                    Value::Histogram(h) => {
                        let bucket = format!("{}_bucket", f.name);
                        let mut cumulative = 0;
                        for (i, c) in h.counts.iter().enumerate() {
                            cumulative += c;
                            let le = match h.bounds.get(i) {
                                Some(b) => b.to_string(),
                                None => "+Inf".to_string(),
                            };
                            sample(&mut out, &bucket, labels, Some(&le), cumulative as f64);
                        }
                        sample(
                            &mut out,
                            &format!("{}_sum", f.name),
                            labels,
                            None,
                            h.sum_seconds,
                        );
                        sample(
                            &mut out,
                            &format!("{}_count", f.name),
                            labels,
                            None,
                            cumulative as f64,
                        );
                    }
                }
            }
        }
        out
    }
}

/// One line: `name{labels,le="…"} value`.
fn sample(out: &mut String, name: &str, labels: &[(String, String)], le: Option<&str>, value: f64) {
    out.push_str(name);
    let extra = le.map(|le| ("le", le));
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let all = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra);
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
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
            Kind::Gauge,
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
}
