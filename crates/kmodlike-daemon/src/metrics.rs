//! Metrics: what the daemon counts, served through systemd's Varlink metrics interface
//! `io.systemd.Metrics` (`List`, `Describe`; both require `more`) on the control socket, and
//! rendered as OpenMetrics text by `kmodctl metrics` (for a node_exporter textfile collector).
//!
//! Families (Varlink name, OpenMetrics name): loads, unloads, calls, crashes (per module and
//! signal), timeouts, quarantines per module; calls in flight per module; connections; taint;
//! and a call-latency histogram per module with fixed buckets ([`BUCKETS`]). The systemd model has
//! no histogram type, so the histogram travels as three counter families (`...Bucket` with an
//! `le` field, `...Sum`, `...Count`) that `kmodctl metrics` folds back into one.
//!
//! Recording a call costs two clock reads, a read-locked map lookup and a few relaxed atomic
//! additions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The interface name.
pub const METRICS_INTERFACE: &str = "io.systemd.Metrics";

/// Its description, served by `GetInterfaceDescription`.
pub const METRICS_DESCRIPTION: &str = include_str!("varlink/io.systemd.Metrics.varlink");

/// Upper bounds of the call-latency buckets, in seconds (plus `+Inf`).
pub const BUCKETS: [f64; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0];

/// A metric family: its Varlink name, OpenMetrics name, type and help.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// `io.kmodlike.Loader.loadsTotal`.
    pub name: &'static str,
    /// `kmodlike_loads` (counters get `_total` on their samples).
    pub open_name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// What it counts.
    pub help: &'static str,
}

const P: &str = "io.kmodlike.Loader.";

macro_rules! family {
    ($name:literal, $open:literal, $kind:literal, $help:literal) => {
        Family {
            name: concat!("io.kmodlike.Loader.", $name),
            open_name: $open,
            kind: $kind,
            help: $help,
        }
    };
}

/// Every family, in the order Describe reports them.
pub const FAMILIES: &[Family] = &[
    family!("loadsTotal", "kmodlike_loads", "counter", "Modules loaded, per module"),
    family!("unloadsTotal", "kmodlike_unloads", "counter", "Modules unloaded, per module"),
    family!(
        "callsTotal",
        "kmodlike_calls",
        "counter",
        "Guarded calls made through Call, per module"
    ),
    family!("crashesTotal", "kmodlike_crashes", "counter", "Crashes, per module and signal"),
    family!(
        "timeoutsTotal",
        "kmodlike_timeouts",
        "counter",
        "Calls that passed their deadline, per module"
    ),
    family!(
        "quarantinesTotal",
        "kmodlike_quarantines",
        "counter",
        "Crash-loop quarantines, per module"
    ),
    family!("callsInFlight", "kmodlike_calls_in_flight", "gauge", "Calls running now, per module"),
    family!("connections", "kmodlike_connections", "gauge", "Client connections open now"),
    family!(
        "tainted",
        "kmodlike_tainted",
        "gauge",
        "1 when a crash tainted the process and it is not acknowledged"
    ),
    family!(
        "callDurationSecondsBucket",
        "kmodlike_call_duration_seconds",
        "counter",
        "Call latency histogram buckets (field le), per module"
    ),
    family!(
        "callDurationSecondsSum",
        "kmodlike_call_duration_seconds",
        "counter",
        "Total call time in seconds, per module"
    ),
    family!(
        "callDurationSecondsCount",
        "kmodlike_call_duration_seconds",
        "counter",
        "Calls timed, per module"
    ),
];

/// One module's counters.
#[derive(Default)]
pub struct ModuleStats {
    loads: AtomicU64,
    unloads: AtomicU64,
    calls: AtomicU64,
    timeouts: AtomicU64,
    quarantines: AtomicU64,
    in_flight: AtomicI64,
    /// Per bucket (not cumulative), the last one `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    crashes: Mutex<BTreeMap<String, u64>>,
}

/// The daemon's metrics.
#[derive(Default)]
pub struct Metrics {
    modules: RwLock<BTreeMap<String, Arc<ModuleStats>>>,
}

/// A call being timed: counted in flight until dropped, then recorded.
pub struct CallTimer {
    stats: Arc<ModuleStats>,
    start: Instant,
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        let s = &self.stats;
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
        let took = self.start.elapsed();
        let secs = took.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        s.buckets[i].fetch_add(1, Ordering::Relaxed);
        s.sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Metrics {
    /// The counters of `module`, created on first use.
    pub fn module(&self, module: &str) -> Arc<ModuleStats> {
        if let Some(s) = self.modules.read().unwrap_or_else(|e| e.into_inner()).get(module) {
            return s.clone();
        }
        self.modules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(module.to_owned())
            .or_default()
            .clone()
    }

    /// Count a load, an unload, a crash or a timed-out call.
    pub fn on_event(&self, event: &kmodlike::Event) {
        match event {
            kmodlike::Event::Loaded(m) => {
                self.module(&m.name).loads.fetch_add(1, Ordering::Relaxed);
            }
            kmodlike::Event::Unloaded { name } => {
                self.module(name).unloads.fetch_add(1, Ordering::Relaxed);
            }
            kmodlike::Event::Crashed(r) => {
                let stats = self.module(&r.module);
                *stats
                    .crashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(r.signal_name.clone())
                    .or_default() += 1;
            }
            kmodlike::Event::CallTimedOut(r) => self.timed_out(&r.module),
            // A slow call is still counted in flight; a hung module shows in Status.
            kmodlike::Event::CallSlow { .. } | kmodlike::Event::Hung { .. } => {}
        }
    }

    /// Count a quarantine of `module`.
    pub fn quarantined(&self, module: &str) {
        self.module(module).quarantines.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a call that passed its deadline.
    pub fn timed_out(&self, module: &str) {
        self.module(module).timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Start timing a call into `module` (counted as made and in flight).
    pub fn start_call(&self, module: &str) -> CallTimer {
        let stats = self.module(module);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        CallTimer { stats, start: Instant::now() }
    }

    /// Every sample, as `io.systemd.Metrics.List` replies, family by family.
    pub fn list(&self, connections: u64, tainted: bool) -> Vec<Value> {
        let modules = self.modules.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        let sample = |name: &str, value: Value, object: Option<&str>, fields: Option<Value>| {
            let mut m = Map::new();
            m.insert("name".into(), json!(format!("{P}{name}")));
            m.insert("value".into(), value);
            if let Some(o) = object {
                m.insert("object".into(), json!(o));
            }
            if let Some(f) = fields {
                m.insert("fields".into(), f);
            }
            Value::Object(m)
        };
        let per_module = |out: &mut Vec<Value>, name: &str, get: &dyn Fn(&ModuleStats) -> Value| {
            for (module, s) in &modules {
                out.push(sample(name, get(s), Some(module), None));
            }
        };
        let load = |a: &AtomicU64| json!(a.load(Ordering::Relaxed));
        per_module(&mut out, "loadsTotal", &|s| load(&s.loads));
        per_module(&mut out, "unloadsTotal", &|s| load(&s.unloads));
        per_module(&mut out, "callsTotal", &|s| load(&s.calls));
        for (module, s) in &modules {
            for (signal, n) in s.crashes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                out.push(sample(
                    "crashesTotal",
                    json!(n),
                    Some(module),
                    Some(json!({ "signal": signal })),
                ));
            }
        }
        per_module(&mut out, "timeoutsTotal", &|s| load(&s.timeouts));
        per_module(&mut out, "quarantinesTotal", &|s| load(&s.quarantines));
        per_module(&mut out, "callsInFlight", &|s| {
            json!(s.in_flight.load(Ordering::Relaxed).max(0))
        });
        out.push(sample("connections", json!(connections), None, None));
        out.push(sample("tainted", json!(u8::from(tainted)), None, None));
        for (module, s) in &modules {
            let mut cumulative = 0;
            for (i, b) in s.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map(|b| format!("{b}")).unwrap_or_else(|| "+Inf".into());
                out.push(sample(
                    "callDurationSecondsBucket",
                    json!(cumulative),
                    Some(module),
                    Some(json!({ "le": le })),
                ));
            }
            let sum = Duration::from_nanos(s.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
            out.push(sample("callDurationSecondsSum", json!(sum), Some(module), None));
            out.push(sample("callDurationSecondsCount", json!(cumulative), Some(module), None));
        }
        out
    }
}

/// `io.systemd.Metrics.Describe` replies: one per family.
pub fn describe() -> Vec<Value> {
    FAMILIES
        .iter()
        .map(|f| json!({ "name": f.name, "description": f.help, "type": f.kind }))
        .collect()
}

/// OpenMetrics text for `List` replies: families in [`FAMILIES`] order, `module` and the fields as
/// labels, the three latency families folded into one histogram, `# EOF` at the end.
pub fn openmetrics(samples: &[Value]) -> String {
    let mut out = String::new();
    let mut done_histogram = false;
    for f in FAMILIES {
        let histogram = f.name.contains("callDurationSeconds");
        if histogram && done_histogram {
            continue;
        }
        let (kind, help) = if histogram {
            ("histogram", "Call latency in seconds, per module")
        } else {
            (f.kind, f.help)
        };
        let _ = writeln!(out, "# TYPE {} {kind}", f.open_name);
        let _ = writeln!(out, "# HELP {} {help}.", f.open_name);
        let names: Vec<&str> = if histogram {
            done_histogram = true;
            FAMILIES
                .iter()
                .filter(|g| g.name.contains("callDurationSeconds"))
                .map(|g| g.name)
                .collect()
        } else {
            vec![f.name]
        };
        // The histogram's samples go module by module, as OpenMetrics wants them grouped.
        let mut lines: Vec<(String, String)> = Vec::new();
        for s in samples {
            let Some(name) = s["name"].as_str().filter(|n| names.contains(n)) else { continue };
            let suffix = match name.rsplit('.').next().unwrap_or_default() {
                "callDurationSecondsBucket" => "_bucket",
                "callDurationSecondsSum" => "_sum",
                "callDurationSecondsCount" => "_count",
                _ if f.kind == "counter" => "_total",
                _ => "",
            };
            let mut labels = Vec::new();
            if let Some(o) = s["object"].as_str() {
                labels.push(format!("module=\"{}\"", escape(o)));
            }
            if let Some(fields) = s["fields"].as_object() {
                for (k, v) in fields {
                    let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                    labels.push(format!("{k}=\"{}\"", escape(&v)));
                }
            }
            let labels =
                if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            let module = s["object"].as_str().unwrap_or_default().to_owned();
            lines.push((module, format!("{}{suffix}{labels} {}", f.open_name, s["value"])));
        }
        if histogram {
            lines.sort_by(|a, b| a.0.cmp(&b.0));
        }
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_fill_the_histogram_and_in_flight_returns_to_zero() {
        let m = Metrics::default();
        {
            let _t = m.start_call("a");
            assert_eq!(m.module("a").in_flight.load(Ordering::Relaxed), 1);
        }
        drop(m.start_call("a"));
        let list = m.list(3, false);
        let find = |name: &str, le: Option<&str>| {
            list.iter()
                .find(|s| {
                    s["name"] == format!("{P}{name}") && le.is_none_or(|le| s["fields"]["le"] == le)
                })
                .unwrap_or_else(|| panic!("{name} {le:?}: {list:#?}"))["value"]
                .clone()
        };
        assert_eq!(find("callsTotal", None), 2);
        assert_eq!(find("callsInFlight", None), 0);
        assert_eq!(find("callDurationSecondsBucket", Some("+Inf")), 2);
        assert_eq!(find("callDurationSecondsCount", None), 2);
        assert_eq!(find("connections", None), 3);
    }

    #[test]
    fn openmetrics_text_is_grouped_by_family_and_ends_with_eof() {
        let m = Metrics::default();
        drop(m.start_call("b"));
        m.quarantined("b");
        let text = openmetrics(&m.list(1, true));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE kmodlike_calls counter\n"), "{text}");
        assert!(text.contains("kmodlike_calls_total{module=\"b\"} 1\n"), "{text}");
        assert!(text.contains("kmodlike_quarantines_total{module=\"b\"} 1\n"), "{text}");
        assert!(text.contains("kmodlike_tainted 1\n"), "{text}");
        assert!(text.contains("# TYPE kmodlike_call_duration_seconds histogram\n"), "{text}");
        assert!(
            text.contains("kmodlike_call_duration_seconds_bucket{module=\"b\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE kmodlike_call_duration_seconds ").count(), 1, "{text}");
    }

    #[test]
    fn describe_names_every_family() {
        let d = describe();
        assert_eq!(d.len(), FAMILIES.len());
        assert!(d.iter().all(|f| f["name"].as_str().unwrap().starts_with(P)));
        assert!(d.iter().all(|f| f["type"] == "counter" || f["type"] == "gauge"));
    }
}
