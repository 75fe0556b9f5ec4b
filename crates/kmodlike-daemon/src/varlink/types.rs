//! The wire types of `io.kmodlike.Loader`, one struct per `type` in the interface file, with
//! conversions from the loader's own types. The daemon serialises them; `kmodctl` deserialises
//! the same structs, so both sides agree on the schema by construction. Their field names are the
//! stable `--json` schema: add optional fields, never rename.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// `type ModinfoEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModinfoEntry {
    /// The tag (`version`, `license`, `depends`, ...).
    pub tag: String,
    /// Its value.
    pub value: String,
}

/// Convert `(tag, value)` pairs.
pub fn modinfo_entries(pairs: &[(String, String)]) -> Vec<ModinfoEntry> {
    pairs.iter().map(|(t, v)| ModinfoEntry { tag: t.clone(), value: v.clone() }).collect()
}

/// `type Module`: a loaded module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// Unique id of this instance.
    pub id: u64,
    /// The module's name.
    pub name: String,
    /// The file it was loaded from.
    pub path: String,
    /// `loading`, `live`, `unloading`, `crashed` or `unloaded`.
    pub state: String,
    /// References held.
    pub refcount: u64,
    /// Bytes mapped for it.
    pub size: u64,
    /// Interface version `major.minor`, if any.
    pub interface_version: Option<String>,
    /// A legacy (`mod_hello`-only) module.
    pub legacy: bool,
    /// `module` or `data`.
    pub mode: String,
    /// Its dependencies.
    pub dependencies: Vec<String>,
    /// Loaded modules that depend on it.
    pub holders: Vec<String>,
    /// Its `.modinfo` entries.
    pub modinfo: Vec<ModinfoEntry>,
    /// Load time (epoch seconds).
    pub loaded_at: f64,
    /// Guarded calls made so far.
    pub calls: u64,
    /// Crashes counted for it.
    pub crashes: u64,
    /// The signature verdict: `not-checked`, `signed` or `unsigned`.
    #[serde(default)]
    pub signature: Option<String>,
    /// The signer's minisign key id, when signed.
    #[serde(default)]
    pub signer_key_id: Option<String>,
    /// The signature's trusted comment, when signed.
    #[serde(default)]
    pub trusted_comment: Option<String>,
    /// Why it is unsigned, when it is.
    #[serde(default)]
    pub signature_reason: Option<String>,
    /// Why its path is not trusted, when it was loaded anyway.
    #[serde(default)]
    pub untrusted_path: Option<String>,
    /// `in-process` or `isolated`.
    #[serde(default)]
    pub tier: Option<String>,
    /// The isolated module's process.
    #[serde(default)]
    pub child_pid: Option<u32>,
    /// That process's resident memory, bytes.
    #[serde(default)]
    pub child_rss: Option<u64>,
    /// The calls running in it now, oldest first (`None` from a daemon that does not say).
    #[serde(default)]
    pub calls_in_flight: Option<Vec<CallInFlight>>,
}

/// `type CallInFlight`: a call running in a module now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallInFlight {
    /// The module.
    pub module: String,
    /// The function called, when it has a name.
    #[serde(default)]
    pub function: Option<String>,
    /// The kernel thread id running it.
    pub thread: i32,
    /// When it started (epoch seconds).
    pub since: f64,
    /// When it will be interrupted (epoch seconds), if it has a deadline.
    #[serde(default)]
    pub deadline: Option<f64>,
}

impl From<&kmodlike::CallInFlight> for CallInFlight {
    fn from(c: &kmodlike::CallInFlight) -> CallInFlight {
        CallInFlight {
            module: c.module.clone(),
            function: c.function.clone(),
            thread: c.thread,
            since: epoch_secs(c.since),
            deadline: c.deadline.map(epoch_secs),
        }
    }
}

impl CallInFlight {
    /// The call a timeout report is about: its start is the report's time minus how long it
    /// ran, its deadline that start plus its limit (none when it was interrupted on request).
    pub fn timed_out(r: &kmodlike::CrashReport) -> CallInFlight {
        let ran = r.timeout.map(|t| t.ran).unwrap_or_default();
        let since = r.time.checked_sub(ran).unwrap_or(r.time);
        CallInFlight {
            module: r.module.clone(),
            function: r.called.clone(),
            thread: r.thread_id,
            since: epoch_secs(since),
            deadline: r.timeout.and_then(|t| t.limit).map(|l| epoch_secs(since + l)),
        }
    }
}

/// The reply of `Calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallsReply {
    /// The calls running now, oldest first.
    pub calls: Vec<CallInFlight>,
}

impl From<&kmodlike::ModuleInfo> for Module {
    fn from(m: &kmodlike::ModuleInfo) -> Module {
        Module {
            id: m.id,
            name: m.name.clone(),
            path: m.path.display().to_string(),
            state: m.state.name().to_owned(),
            refcount: m.refcount as u64,
            size: m.size,
            interface_version: m.interface_version.map(|v| v.to_string()),
            legacy: m.legacy,
            mode: match m.mode {
                kmodlike::OpenMode::Data => "data".to_owned(),
                _ => "module".to_owned(),
            },
            dependencies: m.dependencies.clone(),
            holders: m.holders.clone(),
            modinfo: modinfo_entries(&m.modinfo),
            loaded_at: epoch_secs(m.loaded_at),
            calls: m.calls,
            crashes: m.crashes,
            signature: Some(m.trust.signature.as_str().to_owned()),
            signer_key_id: match &m.trust.signature {
                kmodlike::SignatureVerdict::Signed { key_id, .. } => Some(key_id.clone()),
                _ => None,
            },
            trusted_comment: match &m.trust.signature {
                kmodlike::SignatureVerdict::Signed { trusted_comment, .. } => {
                    Some(trusted_comment.clone())
                }
                _ => None,
            },
            signature_reason: match &m.trust.signature {
                kmodlike::SignatureVerdict::Unsigned { reason } => Some(reason.clone()),
                _ => None,
            },
            untrusted_path: m.trust.untrusted_path.clone(),
            tier: Some(m.tier().to_owned()),
            child_pid: m.child_pid,
            child_rss: m.child_rss,
            calls_in_flight: None,
        }
    }
}

impl ModuleFile {
    /// The metadata of the file at `path`, from its `.modinfo` section (runs no module code).
    pub fn read(path: &std::path::Path) -> kmodlike::Result<ModuleFile> {
        let info = kmodlike::modinfo(path)?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(ModuleFile {
            path: path.display().to_string(),
            size,
            modinfo: modinfo_entries(&info.entries),
            depends: info.depends(),
        })
    }
}

/// `type ModuleFile`: a module file's metadata, read without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleFile {
    /// The file.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its `.modinfo` entries.
    pub modinfo: Vec<ModinfoEntry>,
    /// Its dependencies, split.
    pub depends: Vec<String>,
}

/// `type CrashReport`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// The module that crashed.
    pub module: String,
    /// Its file.
    pub path: String,
    /// Signal number.
    pub signal: i32,
    /// Signal name.
    pub signal_name: String,
    /// `si_code`.
    pub code: i32,
    /// `si_code`'s name.
    pub code_name: String,
    /// What `si_code` means.
    pub code_meaning: String,
    /// Faulting address, hexadecimal.
    pub fault_addr: String,
    /// Program counter, hexadecimal.
    pub pc: String,
    /// The PC was in the module's code.
    pub pc_in_module: bool,
    /// PC offset in the module, hexadecimal.
    pub module_offset: Option<String>,
    /// The object the PC was in.
    pub pc_object: Option<String>,
    /// Nearest symbol.
    pub symbol: Option<String>,
    /// Phase name.
    pub phase: String,
    /// Faulting thread.
    pub thread_id: i32,
    /// When (epoch seconds).
    pub time: f64,
    /// Taint verdict.
    pub taint: Option<String>,
    /// The report as text.
    pub text: String,
    /// The faulting thread's backtrace, innermost first; `None` when none was taken.
    #[serde(default)]
    pub frames: Option<Vec<CrashFrame>>,
    /// The function the guarded call ran, when known.
    #[serde(default)]
    pub called: Option<String>,
    /// The probe child's pid, for a crash seen by the probe.
    #[serde(default)]
    pub probe_pid: Option<u32>,
    /// glibc's message, for a SIGABRT glibc raised after one of its checks failed.
    #[serde(default)]
    pub abort_message: Option<String>,
    /// True for a crash of an earlier run of the daemon (read back from the state directory).
    #[serde(default)]
    pub previous_run: Option<bool>,
    /// Set when the call was interrupted at its deadline (or on request), not crashed.
    #[serde(default)]
    pub timeout: Option<CallTimeout>,
}

/// `type CallTimeout`: how a call past its deadline was ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CallTimeout {
    /// Its time limit in seconds; `None` when interrupted on request.
    #[serde(default)]
    pub limit: Option<f64>,
    /// Seconds it ran.
    pub ran: f64,
}

/// `type CrashFrame`: one frame of a crash's backtrace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashFrame {
    /// The address (the PC for frame 0, a return address for the others), hexadecimal.
    pub pc: String,
    /// The file name of the object holding it.
    #[serde(default)]
    pub object: Option<String>,
    /// That object's path.
    #[serde(default)]
    pub object_path: Option<String>,
    /// `pc` minus the object's load address, hexadecimal.
    #[serde(default)]
    pub offset: Option<String>,
    /// The nearest symbol before `pc`.
    #[serde(default)]
    pub symbol: Option<String>,
    /// `pc` minus that symbol's address, hexadecimal.
    #[serde(default)]
    pub symbol_offset: Option<String>,
    /// The object's GNU build id, hexadecimal.
    #[serde(default)]
    pub build_id: Option<String>,
    /// Found without unwind information: a guess.
    pub guessed: bool,
    /// In the crashed module's own code.
    pub in_module: bool,
}

impl From<&kmodlike::Frame> for CrashFrame {
    fn from(f: &kmodlike::Frame) -> CrashFrame {
        CrashFrame {
            pc: hex(f.pc),
            object: f.object.clone(),
            object_path: f.object_path.as_ref().map(|p| p.display().to_string()),
            offset: f.object_offset.map(hex),
            symbol: f.symbol.clone(),
            symbol_offset: f.symbol_offset.map(hex),
            build_id: f.build_id.clone(),
            guessed: f.guessed,
            in_module: f.in_module,
        }
    }
}

impl From<&kmodlike::CrashReport> for CrashReport {
    fn from(r: &kmodlike::CrashReport) -> CrashReport {
        CrashReport {
            module: r.module.clone(),
            path: r.path.display().to_string(),
            signal: r.signal,
            signal_name: r.signal_name.clone(),
            code: r.code,
            code_name: r.code_name.clone(),
            code_meaning: r.code_meaning.clone(),
            fault_addr: hex(r.fault_addr),
            pc: hex(r.pc),
            pc_in_module: r.pc_in_module,
            module_offset: r.module_offset.map(hex),
            pc_object: r.pc_object.clone(),
            symbol: r.symbol.clone(),
            phase: r.phase.name().to_owned(),
            thread_id: r.thread_id,
            time: epoch_secs(r.time),
            taint: r.taint.clone(),
            text: r.to_string(),
            frames: (!r.frames.is_empty()).then(|| r.frames.iter().map(CrashFrame::from).collect()),
            called: r.called.clone(),
            probe_pid: r.probe_pid,
            abort_message: r.abort_message.clone(),
            previous_run: None,
            timeout: r.timeout.map(|t| CallTimeout {
                limit: t.limit.map(|l| l.as_secs_f64()),
                ran: t.ran.as_secs_f64(),
            }),
        }
    }
}

/// `type Taint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taint {
    /// The module whose crash tainted the process.
    pub module: String,
    /// Why.
    pub reason: String,
    /// When (epoch seconds).
    pub time: f64,
}

impl From<&kmodlike::Taint> for Taint {
    fn from(t: &kmodlike::Taint) -> Taint {
        Taint { module: t.module.clone(), reason: t.reason.clone(), time: epoch_secs(t.time) }
    }
}

/// `type TaintAck`: an acknowledged taint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaintAck {
    /// The taint that was cleared.
    pub taint: Taint,
    /// Who acknowledged it (`"uid 1000 pid 4242"`, `"api"`).
    pub by: String,
    /// When (epoch seconds).
    pub time: f64,
}

impl From<&kmodlike::TaintAck> for TaintAck {
    fn from(a: &kmodlike::TaintAck) -> TaintAck {
        TaintAck { taint: Taint::from(&a.taint), by: a.by.clone(), time: epoch_secs(a.time) }
    }
}

/// The reply of `ClearTaint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearTaintReply {
    /// The acknowledgement just recorded.
    pub acknowledged: TaintAck,
}

/// `type CrashLoop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoop {
    /// Crashes that quarantine a module...
    pub max_crashes: u64,
    /// ...within this many seconds.
    pub window_secs: u64,
}

/// `type Event`: one Monitor event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `started`, `loaded`, `unloaded`, `crashed`, `quarantined`, `quarantine_cleared`,
    /// `tainted` or `taint_cleared`.
    pub kind: String,
    /// When the daemon saw it (epoch seconds).
    pub time: f64,
    /// The module's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The loaded module (`loaded`).
    #[serde(default)]
    pub module: Option<Module>,
    /// The crash (`crashed`), or where the call was (`call_slow`, `call_timed_out`).
    #[serde(default)]
    pub report: Option<CrashReport>,
    /// The call (`call_slow`, `call_timed_out`).
    #[serde(default)]
    pub call: Option<CallInFlight>,
    /// Seconds the call had run (`call_slow`, `call_timed_out`).
    #[serde(default)]
    pub ran_for: Option<f64>,
    /// Where the slow call's thread was, innermost first (`call_slow`).
    #[serde(default)]
    pub sample: Option<Vec<CrashFrame>>,
    /// What else there is to say (`quarantined`: the crashes; `tainted`: the reason;
    /// `quarantine_cleared`, `taint_cleared`: who; `hung`: why the call cannot be interrupted).
    #[serde(default)]
    pub detail: Option<String>,
}

impl Event {
    /// The first event of every Monitor stream.
    pub fn started() -> Event {
        Event {
            kind: "started".into(),
            time: epoch_secs(SystemTime::now()),
            name: None,
            module: None,
            report: None,
            call: None,
            ran_for: None,
            sample: None,
            detail: None,
        }
    }

    /// An event about module `name` with a `detail` (quarantines, clears, taints).
    pub fn about(kind: &str, name: &str, detail: String) -> Event {
        Event {
            kind: kind.into(),
            time: epoch_secs(SystemTime::now()),
            name: Some(name.to_owned()),
            module: None,
            report: None,
            call: None,
            ran_for: None,
            sample: None,
            detail: Some(detail),
        }
    }
}

/// The reply of `Ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The daemon's version.
    pub version: String,
    /// The daemon's pid.
    pub pid: u32,
}

/// The reply of `List`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    /// The loaded modules.
    pub modules: Vec<Module>,
}

/// The reply of `Info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoReply {
    /// A loaded module.
    #[serde(default)]
    pub loaded: Option<Module>,
    /// A file's metadata.
    #[serde(default)]
    pub file: Option<ModuleFile>,
}

/// The reply of `Load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReply {
    /// The module.
    pub module: Module,
    /// The daemon held it already.
    pub already_loaded: bool,
    /// `mod_hello()` was called.
    pub hello_called: bool,
}

/// The reply of `Unload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadReply {
    /// Calls interrupted first (with `force`); `None` from a daemon that does not say.
    #[serde(default)]
    pub interrupted: Option<u64>,
}

/// The reply of `Reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The fresh instance.
    pub module: Module,
}

/// The reply of `Call`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReply {
    /// The return value (`None` for `void()`).
    #[serde(default)]
    pub result: Option<i64>,
}

/// The reply of `Invoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeReply {
    /// The function's return value.
    pub result: i64,
    /// Its output, base64.
    pub output: String,
}

/// The reply of `SetModulePath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetModulePathReply {
    /// The full search list now.
    pub module_path: Vec<String>,
}

/// `type ConfiguredModule`: a module listed in `modules.d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfiguredModule {
    /// The spec or path.
    pub spec: String,
    /// A failure at start fails the start.
    pub required: bool,
    /// To run in its own process.
    pub isolated: bool,
    /// Its process confined by the seccomp allow-list.
    #[serde(default)]
    pub seccomp: Option<bool>,
    /// Its calls' deadline in seconds.
    #[serde(default)]
    pub call_timeout_secs: Option<f64>,
    /// Its own crash-loop policy (`max_crashes` 0: off).
    #[serde(default)]
    pub crash_loop: Option<CrashLoop>,
    /// Where it is listed: `FILE:LINE`.
    pub origin: String,
}

/// The reply of `ReloadConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadConfigurationReply {
    /// The file read, if any.
    #[serde(default)]
    pub config_file: Option<String>,
    /// The full module search list now.
    pub module_path: Vec<String>,
    /// The names of the listed modules that are loaded.
    pub loaded: Vec<String>,
    /// The listed modules that could not be loaded, each `FILE:LINE: cannot load SPEC: why`.
    pub failed: Vec<String>,
}

/// The reply of `Crashes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashesReply {
    /// Newest first.
    pub crashes: Vec<CrashReport>,
}

/// The reply of `Status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The daemon's version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
    /// The socket served.
    pub socket: String,
    /// Seconds since it started.
    pub uptime_secs: f64,
    /// Modules loaded now.
    pub modules: u64,
    /// Crashes since start.
    pub crashes: u64,
    /// Quarantined module names.
    pub quarantined: Vec<String>,
    /// Connections open now with a client at the other end.
    pub connections: u64,
    /// Connections whose client hung up while their request still runs (not in
    /// `connections`).
    #[serde(default)]
    pub abandoned_connections: Option<u64>,
    /// The connection bound.
    pub max_connections: u64,
    /// Modules are probed first.
    pub probe: bool,
    /// The crash-loop policy.
    #[serde(default)]
    pub crash_loop: Option<CrashLoop>,
    /// The taint, if any.
    #[serde(default)]
    pub taint: Option<Taint>,
    /// The module path.
    pub module_path: Vec<String>,
    /// Taints acknowledged so far, oldest first.
    #[serde(default)]
    pub taint_acks: Option<Vec<TaintAck>>,
    /// A taint of an earlier run that was never acknowledged.
    #[serde(default)]
    pub previous_taint: Option<Taint>,
    /// The state directory, null when nothing is kept across restarts.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// The configuration file read, null when none.
    #[serde(default)]
    pub config_file: Option<String>,
    /// The modules `modules.d` lists.
    #[serde(default)]
    pub configured_modules: Option<Vec<ConfiguredModule>>,
    /// The signature policy: `off`, `warn` or `enforce`.
    #[serde(default)]
    pub signature_policy: Option<String>,
    /// The directory of trusted keys.
    #[serde(default)]
    pub trusted_keys: Option<String>,
    /// Whether modules with untrusted paths are loaded (with a taint) instead of refused.
    #[serde(default)]
    pub allow_untrusted_paths: Option<bool>,
    /// Modules marked hung (a call past its deadline that could not be interrupted).
    #[serde(default)]
    pub hung: Option<Vec<String>>,
    /// The default deadline of a Call, in seconds (0: none).
    #[serde(default)]
    pub call_timeout: Option<f64>,
}

/// The reply of `SetSignaturePolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSignaturePolicyReply {
    /// The policy in force now.
    pub policy: String,
}

/// The reply of `Monitor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorReply {
    /// The event.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn report() -> kmodlike::CrashReport {
        kmodlike::CrashReport {
            module: "crash_segv".into(),
            path: PathBuf::from("/m/crash_segv.so"),
            signal: 11,
            signal_name: "SIGSEGV".into(),
            code: 1,
            code_name: "SEGV_MAPERR".into(),
            code_meaning: "address not mapped to object".into(),
            fault_addr: 0,
            pc: 0xffff_ffff_ffff_fff0,
            pc_in_module: true,
            module_offset: Some(0x1139),
            pc_object: None,
            symbol: Some("crash+0x4".into()),
            phase: kmodlike::Phase::Call,
            thread_id: 42,
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            taint: None,
            exit_status: None,
            frames: Vec::new(),
            called: None,
            probe_pid: None,
            abort_message: None,
            timeout: None,
        }
    }

    #[test]
    fn crash_report_keeps_every_field_and_writes_addresses_in_hex() {
        let wire = CrashReport::from(&report());
        assert_eq!(wire.signal_name, "SIGSEGV");
        assert_eq!(wire.pc, "0xfffffffffffffff0", "a u64 address survives exactly");
        assert_eq!(wire.module_offset.as_deref(), Some("0x1139"));
        assert_eq!(wire.phase, "call");
        assert_eq!(wire.time, 1_700_000_000.0);
        assert!(wire.text.starts_with("module crash_segv crashed: SIGSEGV"), "{}", wire.text);
        assert_eq!(wire.frames, None, "no backtrace: null, not []");
        assert_eq!((wire.called.as_deref(), wire.probe_pid), (None, None));
        let json = serde_json::to_value(&wire).unwrap();
        let back: CrashReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, wire);
    }

    #[test]
    fn crash_report_carries_frames_called_and_probe_pid() {
        let mut r = report();
        r.frames = vec![kmodlike::Frame {
            pc: 0x7f00_0000_1123,
            object: Some("crash_segv.so".into()),
            object_path: Some(PathBuf::from("/m/crash_segv.so")),
            object_offset: Some(0x1123),
            build_id: Some("0badcafe".into()),
            symbol: Some("crash".into()),
            symbol_offset: Some(0x4),
            guessed: true,
            in_module: true,
        }];
        r.called = Some("crash".into());
        r.probe_pid = Some(1234);
        let json = serde_json::to_value(CrashReport::from(&r)).unwrap();
        assert_eq!(
            json["frames"],
            serde_json::json!([{
                "pc": "0x7f0000001123", "object": "crash_segv.so",
                "object_path": "/m/crash_segv.so", "offset": "0x1123", "symbol": "crash",
                "symbol_offset": "0x4", "build_id": "0badcafe", "guessed": true, "in_module": true
            }])
        );
        assert_eq!(json["called"], "crash");
        assert_eq!(json["probe_pid"], 1234);
    }

    #[test]
    fn a_report_from_an_older_daemon_still_decodes() {
        let mut json = serde_json::to_value(CrashReport::from(&report())).unwrap();
        for k in ["frames", "called", "probe_pid", "timeout"] {
            json.as_object_mut().unwrap().remove(k);
        }
        let back: CrashReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.frames, None);
    }
}
