//! The one summary table: figures read back from criterion's estimates (or measured directly,
//! for memory), printed at the end of the run and written to `target/bench/summary.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

/// What a figure's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds per operation.
    Nanos,
    /// Bytes.
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Nanos => "ns",
            Unit::Bytes => "bytes",
        }
    }

    /// `value` for a person: `12.3 ns`, `45.6 µs`, `1.23 ms`, `5.2 MiB`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Nanos if value < 1e3 => format!("{value:.1} ns"),
            Unit::Nanos if value < 1e6 => format!("{:.2} µs", value / 1e3),
            Unit::Nanos if value < 1e9 => format!("{:.2} ms", value / 1e6),
            Unit::Nanos => format!("{:.2} s", value / 1e9),
            Unit::Bytes if value.abs() < 1024.0 * 1024.0 => format!("{:.1} KiB", value / 1024.0),
            Unit::Bytes => format!("{:.2} MiB", value / (1024.0 * 1024.0)),
        }
    }
}

/// A figure's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The ratio must be at most this.
    RatioAtMost(f64),
    /// The ratio must be at least this.
    RatioAtLeast(f64),
    /// Our value (no baseline) must be at most this, in the figure's unit.
    ValueAtMost(f64),
    /// Reported only.
    None,
}

/// How a figure's ratio is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioOf {
    /// ours / baseline: lower is better (a cost factor).
    OursOverBaseline,
    /// baseline / ours: higher is better (a speed-up).
    BaselineOverOurs,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable key for scripts (`load_cycle`, `guarded_call_vs_direct`, ...).
    pub key: &'static str,
    /// What is measured, for people.
    pub figure: String,
    /// Our value (`None`: not measured in this run).
    pub ours: Option<f64>,
    /// What ours is compared with, for people (`libloading open + 3 dlsym + close`).
    pub baseline_name: String,
    /// The baseline's value.
    pub baseline: Option<f64>,
    /// The unit of both values.
    pub unit: Unit,
    /// How the ratio is formed.
    pub ratio_of: RatioOf,
    /// The target.
    pub target: Target,
    /// A remark (why a figure is missing, what it includes).
    pub note: String,
}

impl Figure {
    /// A timing figure compared with a baseline, ratio ours / baseline.
    pub fn cost(key: &'static str, figure: &str, baseline_name: &str, target: Target) -> Figure {
        Figure {
            key,
            figure: figure.to_owned(),
            ours: None,
            baseline_name: baseline_name.to_owned(),
            baseline: None,
            unit: Unit::Nanos,
            ratio_of: RatioOf::OursOverBaseline,
            target,
            note: String::new(),
        }
    }

    /// Set both values.
    pub fn values(mut self, ours: Option<f64>, baseline: Option<f64>) -> Figure {
        self.ours = ours;
        self.baseline = baseline;
        self
    }

    /// Form the ratio the other way round (a speed-up: higher is better).
    pub fn speedup(mut self) -> Figure {
        self.ratio_of = RatioOf::BaselineOverOurs;
        self
    }

    /// Set the unit.
    pub fn unit(mut self, unit: Unit) -> Figure {
        self.unit = unit;
        self
    }

    /// Add a remark.
    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    /// The ratio, when both values are there.
    pub fn ratio(&self) -> Option<f64> {
        let (o, b) = (self.ours?, self.baseline?);
        match self.ratio_of {
            RatioOf::OursOverBaseline if b > 0.0 => Some(o / b),
            RatioOf::BaselineOverOurs if o > 0.0 => Some(b / o),
            _ => None,
        }
    }

    /// Whether the target is met (`None`: no target, or not measured).
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtMost(t) => self.ratio().map(|r| r <= t),
            Target::RatioAtLeast(t) => self.ratio().map(|r| r >= t),
            Target::ValueAtMost(t) => self.ours.map(|v| v <= t),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtMost(t) => format!("<= {t}x"),
            Target::RatioAtLeast(t) => format!(">= {t}x"),
            Target::ValueAtMost(t) => format!("<= {}", self.unit.format(t)),
            Target::None => "-".to_owned(),
        }
    }

    fn ratio_text(&self) -> String {
        match (self.ratio(), self.ratio_of) {
            (Some(r), RatioOf::OursOverBaseline) => format!("{r:.2}x"),
            (Some(r), RatioOf::BaselineOverOurs) => format!("{r:.1}x faster"),
            (None, _) => "-".to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "figure": self.figure,
            "unit": self.unit.name(),
            "ours": self.ours,
            "baseline_name": self.baseline_name,
            "baseline": self.baseline,
            "ratio": self.ratio(),
            "ratio_of": match self.ratio_of {
                RatioOf::OursOverBaseline => "ours/baseline",
                RatioOf::BaselineOverOurs => "baseline/ours",
            },
            "target": match self.target {
                Target::RatioAtMost(t) => json!({"ratio_at_most": t}),
                Target::RatioAtLeast(t) => json!({"ratio_at_least": t}),
                Target::ValueAtMost(t) => json!({"value_at_most": t}),
                Target::None => Value::Null,
            },
            "met": self.met(),
            "note": self.note,
        })
    }
}

/// Reads criterion's estimates of the benchmarks run by this process.
pub struct Estimates {
    dir: PathBuf,
    since: SystemTime,
}

impl Estimates {
    /// Estimates under criterion's output directory `dir`, ignoring files older than `since`
    /// (the start of this run: a benchmark filtered out of this run must not show an old
    /// figure).
    pub fn new(dir: &Path, since: SystemTime) -> Estimates {
        Estimates { dir: dir.to_owned(), since }
    }

    /// The median time per iteration, in nanoseconds, of benchmark `id` (`group/function` or
    /// `group/function/parameter`), when it ran in this run.
    pub fn median_ns(&self, id: &str) -> Option<f64> {
        let file = self.dir.join(id).join("new/estimates.json");
        let meta = std::fs::metadata(&file).ok()?;
        if meta.modified().ok()? < self.since {
            return None;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        v["median"]["point_estimate"].as_f64()
    }
}

/// Render the table as text.
pub fn render(figures: &[Figure]) -> String {
    let header = ["figure", "ours", "baseline", "ratio", "target", "met?"];
    let rows: Vec<[String; 6]> = figures
        .iter()
        .map(|f| {
            let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| f.unit.format(v));
            let baseline = match f.baseline {
                Some(b) => format!("{} ({})", f.unit.format(b), f.baseline_name),
                None if f.baseline_name.is_empty() => "-".to_owned(),
                None => format!("- ({})", f.baseline_name),
            };
            let met = match f.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None if f.ours.is_none() => "not run",
                None => "-",
            };
            [
                f.figure.clone(),
                fmt(f.ours),
                baseline,
                f.ratio_text(),
                f.target_text(),
                met.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(widths.iter()) {
            let pad = w - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        out.push_str(&s);
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for r in &rows {
        line(&mut out, r);
    }
    let notes: Vec<String> = figures
        .iter()
        .filter(|f| !f.note.is_empty())
        .map(|f| format!("- {}: {}", f.figure, f.note))
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

/// Write the figures to `path` as JSON (creating its directory).
pub fn write_json(path: &Path, figures: &[Figure], context: Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let generated =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let doc = json!({
        "generated_at_unix": generated,
        "context": context,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_ratio_and_target() {
        let f =
            Figure::cost("k", "f", "b", Target::RatioAtMost(1.1)).values(Some(11.0), Some(10.0));
        assert!((f.ratio().unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(f.met(), Some(true));
        let f = f.values(Some(12.0), Some(10.0));
        assert_eq!(f.met(), Some(false));
    }

    #[test]
    fn speedup_is_baseline_over_ours() {
        let f = Figure::cost("k", "f", "b", Target::RatioAtLeast(20.0))
            .values(Some(5.0), Some(150.0))
            .speedup();
        assert_eq!(f.ratio(), Some(30.0));
        assert_eq!(f.met(), Some(true));
    }

    #[test]
    fn missing_value_is_not_run() {
        let f = Figure::cost("k", "f", "b", Target::RatioAtMost(1.0)).values(None, Some(1.0));
        assert_eq!(f.met(), None);
        assert!(render(&[f]).contains("not run"));
    }

    #[test]
    fn value_target_uses_ours() {
        let f = Figure::cost("rss", "rss", "", Target::ValueAtMost(8.0 * 1048576.0))
            .unit(Unit::Bytes)
            .values(Some(9.0 * 1048576.0), None);
        assert_eq!(f.met(), Some(false));
        assert!(render(&[f]).contains("9.00 MiB"));
    }

    #[test]
    fn old_estimates_are_ignored() {
        let dir = std::env::temp_dir().join(format!("kmlb-est-{}", std::process::id()));
        let file = dir.join("g/f/new/estimates.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, r#"{"median":{"point_estimate":42.5}}"#).unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(Estimates::new(&dir, before).median_ns("g/f"), Some(42.5));
        let after = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(Estimates::new(&dir, after).median_ns("g/f"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
