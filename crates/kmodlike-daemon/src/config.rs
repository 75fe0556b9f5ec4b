//! The daemon's configuration: `/etc/kmodlike/kmodlike.toml` (or `--config FILE`) and the
//! `modules.d/*.conf` directory next to it, which lists modules to load at start, as
//! modules-load.d(5) does for the kernel.
//!
//! `kmodlike.toml` (every key optional; options given on the command line win, and
//! `--module-path` directories are searched before the file's):
//!
//! ```toml
//! module_path = ["/opt/acme/modules"]
//! state_dir = "/var/lib/kmodlike"
//! probe = true
//! strict = false
//! max_connections = 64
//! read_timeout = 10.0
//! call_timeout = 30.0  # the default deadline of a Call (0: none)
//! [crash_loop]
//! max_crashes = 5     # 0 turns the policy off
//! window_secs = 60
//! [trust]             # read at start (a reload does not change it)
//! signature_policy = "enforce"        # off, warn or enforce
//! trusted_keys = "/etc/kmodlike/keys"
//! revoked = "/etc/kmodlike/revoked"
//! allow_untrusted_paths = false
//! ```
//!
//! `modules.d/*.conf`, read in file-name order: one module a line, a spec or a path, then
//! options; `#` or `;` starts a comment.
//!
//! ```text
//! misc/hello                      # required (the default): the start fails without it
//! acme/telemetry optional         # a failure is only a warning
//! /opt/x/parser.so isolated timeout=2.5 crash-loop=3/60
//! /opt/x/math.so isolated seccomp     # its process under the seccomp allow-list
//! ```
//!
//! Options: `required` or `optional`; `isolated` (run the module in its own process);
//! `seccomp` (isolated, and its process confined by the seccomp allow-list of computation
//! modules: docs/isolation.md, "seccomp"; implies `isolated`);
//! `timeout=SECS` (its calls' deadline); `crash-loop=N/SECS` or `crash-loop=off` (its own
//! quarantine policy, applied by the daemon). `isolated` loads the module in its own process
//! (docs/isolation.md), with `timeout` as its calls' deadline; in process, `timeout` is the
//! deadline of a Call into it that names none (before the daemon's `call_timeout`).
//!
//! Everything is read and checked before anything is applied: one bad line fails the whole read
//! with `FILE:LINE: what is wrong`, and a reload that fails keeps the running configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/kmodlike/kmodlike.toml";

/// The directory of module lists, next to the configuration file.
pub const MODULES_DIR: &str = "modules.d";

/// `kmodlike.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Directories searched for specs, after `--module-path`.
    #[serde(default)]
    pub module_path: Vec<PathBuf>,
    /// The state directory.
    pub state_dir: Option<PathBuf>,
    /// Probe modules in a child process first.
    pub probe: Option<bool>,
    /// Refuse legacy modules.
    pub strict: Option<bool>,
    /// Connection bound.
    pub max_connections: Option<u32>,
    /// Seconds a request may take to arrive.
    pub read_timeout: Option<f64>,
    /// The default deadline of a Call, in seconds (0: none); `--call-timeout` wins.
    pub call_timeout: Option<f64>,
    /// The crash-loop policy.
    pub crash_loop: Option<CrashLoopSetting>,
    /// Module trust.
    pub trust: Option<TrustSetting>,
}

/// `[trust]`: the options `--signature-policy`, `--trusted-keys`, `--revoked` and
/// `--allow-untrusted-paths`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSetting {
    /// `off`, `warn` or `enforce`.
    pub signature_policy: Option<String>,
    /// The directory of trusted minisign public keys.
    pub trusted_keys: Option<PathBuf>,
    /// The revocation list.
    pub revoked: Option<PathBuf>,
    /// Load untrusted paths (with a taint) instead of refusing them.
    pub allow_untrusted_paths: Option<bool>,
}

/// `[crash_loop]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashLoopSetting {
    /// Crashes that quarantine a module (0: off).
    pub max_crashes: u32,
    /// Within this many seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
}

fn default_window() -> u64 {
    60
}

/// One module listed in `modules.d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// The spec or path to load.
    pub spec: String,
    /// A failure to load it at start fails the start (else it is a warning).
    pub required: bool,
    /// Run it in its own process.
    pub isolated: bool,
    /// Its process confined by the seccomp allow-list (implies `isolated`).
    #[serde(default)]
    pub seccomp: bool,
    /// Its calls' deadline, in seconds.
    pub call_timeout_secs: Option<f64>,
    /// Its own crash-loop policy: `(max crashes, window seconds)`, `(0, 0)` for off.
    pub crash_loop: Option<(u32, u64)>,
    /// Where it is listed: `FILE:LINE`.
    pub origin: String,
}

/// Everything read: the file's settings and the listed modules, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The configuration file, when one was read.
    pub file: Option<PathBuf>,
    /// Its settings.
    pub settings: FileSettings,
    /// The modules of `modules.d`, in file then line order.
    pub modules: Vec<ModuleEntry>,
}

/// A configuration problem: `FILE[:LINE]: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key or option.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Let the file's settings fill what the command line left at its defaults: `explicit` holds
/// the ids of the options given on the command line (see [`crate::cli::DaemonArgs::explicit`]).
/// The file's `module_path` comes after `--module-path`'s directories.
pub fn apply_to_args(args: &mut crate::cli::DaemonArgs, s: &FileSettings) {
    let given = |id: &str| args.explicit.iter().any(|e| e == id);
    args.module_path.extend(s.module_path.iter().cloned());
    if !given("state_dir") && s.state_dir.is_some() {
        args.state_dir.clone_from(&s.state_dir);
    }
    if let (false, Some(probe)) = (given("no_probe"), s.probe) {
        args.no_probe = !probe;
    }
    if let (false, Some(strict)) = (given("strict"), s.strict) {
        args.strict = strict;
    }
    if let (false, Some(n)) = (given("max_connections"), s.max_connections) {
        args.max_connections = n;
    }
    if let (false, Some(t)) = (given("read_timeout"), s.read_timeout) {
        args.read_timeout = t;
    }
    if let Some(t) = &s.trust {
        if !given("signature_policy") && t.signature_policy.is_some() {
            args.signature_policy.clone_from(&t.signature_policy);
        }
        if let (false, Some(dir)) = (given("trusted_keys"), &t.trusted_keys) {
            args.trusted_keys.clone_from(dir);
        }
        if let (false, Some(file)) = (given("revoked"), &t.revoked) {
            args.revoked.clone_from(file);
        }
        if let (false, Some(allow)) = (given("allow_untrusted_paths"), t.allow_untrusted_paths) {
            args.allow_untrusted_paths = allow;
        }
    }
    if let (false, Some(t)) = (given("call_timeout"), s.call_timeout) {
        args.call_timeout = t;
    }
    if let Some(c) = s.crash_loop {
        if !given("crash_loop_max") {
            args.crash_loop_max = c.max_crashes;
        }
        if !given("crash_loop_window") {
            args.crash_loop_window = c.window_secs;
        }
    }
}

/// Read the configuration: `explicit` (`--config`, which must exist), else [`DEFAULT_CONFIG`]
/// when it exists, else nothing (defaults). `modules.d` is read next to the file, whether the
/// file itself exists or not.
pub fn read(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let path = explicit.map(Path::to_owned).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let settings = match read_trusted(&path)? {
        Some(text) => Some(parse_settings(&path, &text)?),
        None if explicit.is_none() => None,
        None => {
            return Err(ConfigError {
                file: path,
                line: None,
                message: "cannot read the configuration: it does not exist".into(),
            })
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/")).join(MODULES_DIR);
    let modules = read_modules_dir(&dir)?;
    Ok(Config {
        file: settings.is_some().then_some(path),
        settings: settings.unwrap_or_default(),
        modules,
    })
}

/// Read a configuration file after checking who may change it: whoever can write it chooses
/// code this daemon runs, so it must belong to root or the daemon's user and be writable by no
/// one else. `Ok(None)`: it does not exist.
fn read_trusted(file: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let err = |message: String| ConfigError { file: file.to_owned(), line: None, message };
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read the configuration: {e}"))),
    };
    let meta = f.metadata().map_err(|e| err(format!("cannot read the configuration: {e}")))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(err(format!(
            "owned by uid {}, neither root nor this daemon's uid {me}: whoever owns it chooses \
             the code this daemon runs; chown it to root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(err(format!(
            "writable by its group or others (mode {:04o}): they could choose the code this \
             daemon runs; chmod go-w {}",
            meta.mode() & 0o7777,
            file.display()
        )));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| err(format!("cannot read the configuration: {e}")))?;
    Ok(Some(text))
}

/// Parse `kmodlike.toml`'s text.
pub fn parse_settings(file: &Path, text: &str) -> Result<FileSettings, ConfigError> {
    let settings: FileSettings = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim_end().to_owned(),
    })?;
    let err = |key: &str, message: String| {
        let line = text.lines().position(|l| l.trim_start().starts_with(key)).map(|n| n + 1);
        ConfigError { file: file.to_owned(), line, message }
    };
    if let Some(bad) = settings.module_path.iter().find(|d| !d.is_absolute()) {
        return Err(err(
            "module_path",
            format!("module_path: {} is not an absolute path", bad.display()),
        ));
    }
    if let Some(bad) = settings.state_dir.as_ref().filter(|d| !d.is_absolute()) {
        return Err(err(
            "state_dir",
            format!("state_dir: {} is not an absolute path", bad.display()),
        ));
    }
    if let Some(n) = settings.max_connections.filter(|n| !(1..=4096).contains(n)) {
        return Err(err("max_connections", format!("max_connections: {n} is not in 1..=4096")));
    }
    if let Some(t) = settings.read_timeout.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(err("read_timeout", format!("read_timeout: {t} is not a positive number")));
    }
    if let Some(t) = &settings.trust {
        if let Some(p) = t
            .signature_policy
            .as_deref()
            .filter(|p| p.parse::<kmodlike::SignaturePolicy>().is_err())
        {
            return Err(err(
                "signature_policy",
                format!("trust.signature_policy: {p:?} is not off, warn or enforce"),
            ));
        }
        for (key, path) in [("trusted_keys", &t.trusted_keys), ("revoked", &t.revoked)] {
            if let Some(bad) = path.as_ref().filter(|d| !d.is_absolute()) {
                return Err(err(
                    key,
                    format!("trust.{key}: {} is not an absolute path", bad.display()),
                ));
            }
        }
    }
    if let Some(t) = settings.call_timeout.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return Err(err("call_timeout", format!("call_timeout: {t} is not a number of seconds")));
    }
    if settings.crash_loop.is_some_and(|c| c.window_secs == 0) {
        return Err(err("window_secs", "crash_loop.window_secs: must be at least 1".into()));
    }
    Ok(settings)
}

/// Read every `*.conf` of `dir` in file-name order (a missing directory lists nothing).
pub fn read_modules_dir(dir: &Path) -> Result<Vec<ModuleEntry>, ConfigError> {
    let io_err = |file: &Path, e: std::io::Error| ConfigError {
        file: file.to_owned(),
        line: None,
        message: format!("cannot read: {e}"),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut out: Vec<ModuleEntry> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let Some(text) = read_trusted(&file)? else { continue };
        for entry in parse_modules_file(&file, &text)? {
            if let Some(first) = seen.get(&entry.spec) {
                return Err(ConfigError {
                    file: file.clone(),
                    line: entry.origin.rsplit(':').next().and_then(|l| l.parse().ok()),
                    message: format!("{} is listed already, at {first}", entry.spec),
                });
            }
            seen.insert(entry.spec.clone(), entry.origin.clone());
            out.push(entry);
        }
    }
    Ok(out)
}

/// Parse one `modules.d` file.
pub fn parse_modules_file(file: &Path, text: &str) -> Result<Vec<ModuleEntry>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split(['#', ';']).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let err =
            |message: String| ConfigError { file: file.to_owned(), line: Some(line), message };
        let mut words = content.split_whitespace();
        let spec = words.next().unwrap_or_default().to_owned();
        if !spec.starts_with('/') && spec.contains("./") {
            return Err(err(format!(
                "{spec}: a relative path; give an absolute path or a spec such as misc/name"
            )));
        }
        let mut entry = ModuleEntry {
            spec,
            required: true,
            isolated: false,
            seccomp: false,
            call_timeout_secs: None,
            crash_loop: None,
            origin: format!("{}:{line}", file.display()),
        };
        let (mut required, mut optional) = (false, false);
        for word in words {
            match word.split_once('=') {
                None if word == "required" => required = true,
                None if word == "optional" => optional = true,
                None if word == "isolated" => entry.isolated = true,
                None if word == "seccomp" => {
                    entry.seccomp = true;
                    entry.isolated = true;
                }
                Some(("timeout", v)) => {
                    let secs: f64 =
                        v.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).ok_or_else(
                            || {
                                err(format!(
                                    "timeout={v}: give a positive number of seconds (timeout=2.5)"
                                ))
                            },
                        )?;
                    entry.call_timeout_secs = Some(secs);
                }
                Some(("crash-loop", "off")) => entry.crash_loop = Some((0, 0)),
                Some(("crash-loop", v)) => {
                    let parsed = v.split_once('/').and_then(|(n, w)| {
                        Some((n.parse::<u32>().ok()?, w.parse::<u64>().ok().filter(|w| *w > 0)?))
                    });
                    entry.crash_loop = Some(parsed.ok_or_else(|| {
                        err(format!(
                            "crash-loop={v}: give CRASHES/SECONDS (crash-loop=3/60) or crash-loop=off"
                        ))
                    })?);
                }
                _ => {
                    return Err(err(format!(
                        "unknown option {word:?}; the options are required, optional, isolated, \
                         seccomp, timeout=SECS and crash-loop=N/SECS|off"
                    )))
                }
            }
        }
        if required && optional {
            return Err(err(format!("{}: both required and optional", entry.spec)));
        }
        entry.required = !optional;
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_keys_name_file_line_and_key() {
        let f = Path::new("/etc/kmodlike/kmodlike.toml");
        let s = parse_settings(
            f,
            "module_path = [\"/opt/m\"]\nprobe = false\n[crash_loop]\nmax_crashes = 3\n",
        )
        .unwrap();
        assert_eq!(s.module_path, [PathBuf::from("/opt/m")]);
        assert_eq!(s.probe, Some(false));
        assert_eq!(s.crash_loop, Some(CrashLoopSetting { max_crashes: 3, window_secs: 60 }));

        let s = parse_settings(f, "call_timeout = 2.5\n").unwrap();
        assert_eq!(s.call_timeout, Some(2.5));
        let e = parse_settings(f, "call_timeout = -1\n").unwrap_err();
        assert!(e.to_string().contains("call_timeout: -1 is not a number of seconds"), "{e}");

        let e = parse_settings(f, "probe = true\nmodul_path = []\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(
            e.to_string().starts_with("/etc/kmodlike/kmodlike.toml:2: unknown field `modul_path`"),
            "{e}"
        );

        let e = parse_settings(f, "\nprobe = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("bool"), "{e}");

        let s = parse_settings(
            f,
            "[trust]\nsignature_policy = \"enforce\"\ntrusted_keys = \"/k\"\nallow_untrusted_paths = true\n",
        )
        .unwrap();
        let t = s.trust.clone().unwrap();
        assert_eq!(t.signature_policy.as_deref(), Some("enforce"));
        assert_eq!(t.trusted_keys, Some(PathBuf::from("/k")));
        let mut args = <crate::cli::DaemonArgs as clap::Parser>::parse_from(["kmodlike"]);
        apply_to_args(&mut args, &s);
        assert_eq!(args.signature_policy.as_deref(), Some("enforce"));
        assert_eq!(args.trusted_keys, PathBuf::from("/k"));
        assert!(args.allow_untrusted_paths);
        let e = parse_settings(f, "[trust]\nsignature_policy = \"strict\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("not off, warn or enforce"), "{e}");

        let e = parse_settings(f, "module_path = [\"rel\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (Some(1), "module_path: rel is not an absolute path")
        );
    }

    #[test]
    fn module_lists_take_options_and_comments() {
        let f = Path::new("/c/modules.d/10-a.conf");
        let m = parse_modules_file(
            f,
            "# comment\nmisc/hello\n\nacme/t optional ; why\n/opt/p.so isolated timeout=2.5 crash-loop=3/60\nx crash-loop=off\n/opt/m.so seccomp\n",
        )
        .unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(
            (m[0].spec.as_str(), m[0].required, m[0].origin.as_str()),
            ("misc/hello", true, "/c/modules.d/10-a.conf:2")
        );
        assert!(!m[1].required);
        assert!(m[2].isolated);
        assert_eq!(m[2].call_timeout_secs, Some(2.5));
        assert_eq!(m[2].crash_loop, Some((3, 60)));
        assert_eq!(m[3].crash_loop, Some((0, 0)));
        assert!(!m[2].seccomp, "isolated alone is not confined by seccomp");
        assert!(m[4].seccomp && m[4].isolated, "seccomp implies isolated");
    }

    #[test]
    fn bad_module_lines_name_file_line_and_option() {
        let f = Path::new("/c/modules.d/a.conf");
        let e = parse_modules_file(f, "ok\nm timeout=soon\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("/c/modules.d/a.conf:2: timeout=soon"), "{e}");
        let e = parse_modules_file(f, "m bogus\n").unwrap_err();
        assert!(e.message.contains("unknown option \"bogus\""), "{e}");
        let e = parse_modules_file(f, "m required optional\n").unwrap_err();
        assert!(e.message.contains("both"), "{e}");
        let e = parse_modules_file(f, "m crash-loop=3\n").unwrap_err();
        assert!(e.message.contains("CRASHES/SECONDS"), "{e}");
        let e = parse_modules_file(f, "./m.so\n").unwrap_err();
        assert!(e.message.contains("relative path"), "{e}");
    }

    #[test]
    fn modules_d_is_read_in_name_order_and_a_duplicate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(MODULES_DIR);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("20-b.conf"), "b\n").unwrap();
        std::fs::write(d.join("10-a.conf"), "a\n").unwrap();
        std::fs::write(d.join("README"), "not read\n").unwrap();
        let c = read(Some(&dir.path().join("kmodlike.toml")).map(|p| {
            std::fs::write(p, "").unwrap();
            p.as_path()
        }))
        .unwrap();
        let specs: Vec<&str> = c.modules.iter().map(|m| m.spec.as_str()).collect();
        assert_eq!(specs, ["a", "b"]);

        std::fs::write(d.join("30-c.conf"), "\na\n").unwrap();
        let e = read_modules_dir(&d).unwrap_err();
        assert!(e.to_string().contains("30-c.conf:2: a is listed already, at "), "{e}");
        assert!(e.to_string().contains("10-a.conf:1"), "{e}");
    }

    #[test]
    fn the_example_in_contrib_reads() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/kmodlike.toml.example");
        let text = std::fs::read_to_string(&example).unwrap();
        let s = parse_settings(&example, &text).unwrap();
        assert_eq!(s.crash_loop, Some(CrashLoopSetting { max_crashes: 5, window_secs: 60 }));
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kmodlike.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(Some(&file)).unwrap_err();
        assert!(e.message.contains("writable by its group or others (mode 0666)"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let d = dir.path().join(MODULES_DIR);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("a.conf"), "m\n").unwrap();
        std::fs::set_permissions(d.join("a.conf"), std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = read(Some(&file)).unwrap_err();
        assert!(e.to_string().contains("a.conf: writable by its group"), "{e}");
    }

    #[test]
    fn an_explicit_config_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(e.message.contains("cannot read the configuration"), "{e}");
    }
}
