//! The probe: load a module first in a short-lived child process (the `kmodlike-probe`
//! helper), so a crash in a constructor or in `module_init` never reaches the host.
//!
//! Why a child: a constructor runs inside `dlopen` with ld.so's load lock held; a jump out of
//! it leaves the lock held and the next `dlopen` in the host deadlocks. Only a process about to
//! exit can afford that, so the child loads the module with `dlopen` itself under the guard,
//! runs `module_init`, prints one line and exits without unloading.
//!
//! The child's answer is one line on stdout:
//! `ok`, `error\t<kind>\t<message>`, or
//! `crash\t<signal>\t<code>\t<addr>\t<pc>\t<in_module>\t<offset>\t<object>\t<symbol>\t<tid>`
//! (`-` for an absent field).

use std::ffi::{c_void, CString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use libloading::os::unix::Library;

use crate::crash::{locate, si_code_name, signal_name, CrashReport, Phase};
use crate::error::{Error, Result};
use crate::guard;

/// What the parent needs to run the probe.
pub(crate) struct ProbeConfig {
    pub helper: Option<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub strict: bool,
    pub timeout: Duration,
}

/// The helper binary's name.
pub const PROBE_HELPER: &str = "kmodlike-probe";

fn find_helper(cfg: &ProbeConfig, path: &Path) -> Result<PathBuf> {
    if let Some(h) = &cfg.helper {
        return Ok(h.clone());
    }
    if let Some(h) = std::env::var_os("KMODLIKE_PROBE") {
        return Ok(PathBuf::from(h));
    }
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(d) = exe_dir {
        candidates.push(d.join(PROBE_HELPER));
        // Test binaries live in target/<profile>/deps; the helper one level up.
        candidates.push(d.join("..").join(PROBE_HELPER));
        candidates.push(d.join("../libexec/kmodlike").join(PROBE_HELPER));
    }
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| Error::Probe {
        path: path.to_owned(),
        detail: format!(
            "the {PROBE_HELPER} helper was not found (tried {}); set KMODLIKE_PROBE or install it",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Probe `path` in a child process. `Ok(())` when the child loaded and initialised it.
pub(crate) fn run(cfg: &ProbeConfig, name: &str, path: &Path) -> Result<()> {
    let helper = find_helper(cfg, path)?;
    let mut cmd = Command::new(&helper);
    if cfg.strict {
        cmd.arg("--strict");
    }
    for d in &cfg.dirs {
        cmd.arg("--module-path").arg(d);
    }
    cmd.arg("--").arg(path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let probe_err = |detail: String| Error::Probe { path: path.to_owned(), detail };
    let mut child =
        cmd.spawn().map_err(|e| probe_err(format!("cannot run {}: {e}", helper.display())))?;
    let deadline = Instant::now() + cfg.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(probe_err(format!(
                    "the probe did not finish within {:?} (module_init hangs?)",
                    cfg.timeout
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(probe_err(format!("waiting for the probe: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let line = out.lines().last().unwrap_or("");
    let fields: Vec<&str> = line.split('\t').collect();
    match fields.first().copied() {
        Some("ok") => Ok(()),
        // A plain failure: the real load reports it precisely (it runs no crashing code).
        Some("error") => Ok(()),
        Some("crash") if fields.len() >= 10 => {
            Err(Error::Crashed(Box::new(parse_crash(name, path, &fields))))
        }
        _ => {
            use std::os::unix::process::ExitStatusExt;
            match status.signal() {
                Some(sig) => Err(Error::Crashed(Box::new(CrashReport {
                    module: name.to_owned(),
                    path: path.to_owned(),
                    signal: sig,
                    signal_name: signal_name(sig),
                    code: 0,
                    code_name: "UNKNOWN".into(),
                    code_meaning: "the probe child died before it could report".into(),
                    fault_addr: 0,
                    pc: 0,
                    pc_in_module: false,
                    module_offset: None,
                    pc_object: None,
                    symbol: None,
                    phase: Phase::Probe,
                    thread_id: child.id() as i32,
                    time: SystemTime::now(),
                    taint: None,
                }))),
                None => Err(probe_err(format!(
                    "the probe exited with {status} without an answer: {}",
                    err.trim()
                ))),
            }
        }
    }
}

fn parse_crash(name: &str, path: &Path, f: &[&str]) -> CrashReport {
    let num = |s: &str| -> u64 {
        s.strip_prefix("0x")
            .map_or_else(|| s.parse().unwrap_or(0), |h| u64::from_str_radix(h, 16).unwrap_or(0))
    };
    let opt = |s: &str| (s != "-").then(|| s.to_owned());
    let signal = num(f[1]) as i32;
    let code = f[2].parse::<i32>().unwrap_or(0);
    let (code_name, code_meaning) = si_code_name(signal, code);
    CrashReport {
        module: name.to_owned(),
        path: path.to_owned(),
        signal,
        signal_name: signal_name(signal),
        code,
        code_name: code_name.into(),
        code_meaning: code_meaning.into(),
        fault_addr: num(f[3]),
        pc: num(f[4]),
        pc_in_module: f[5] == "1",
        module_offset: opt(f[6]).map(|s| num(&s)),
        pc_object: opt(f[7]),
        symbol: opt(f[8]),
        phase: Phase::Probe,
        thread_id: f[9].parse().unwrap_or(0),
        time: SystemTime::now(),
        taint: None,
    }
}

struct DlopenCtx {
    path: *const libc::c_char,
    flags: i32,
    handle: *mut c_void,
}

/// Calls `dlopen`; owns nothing droppable, so the guard may jump out of it.
unsafe extern "C" fn dlopen_trampoline(ctx: *mut c_void) {
    // SAFETY: `ctx` is the caller's live `DlopenCtx`.
    let c = unsafe { &mut *(ctx as *mut DlopenCtx) };
    // SAFETY: a NUL-terminated path and valid flags. libloading cannot be used here: its
    // frames own values with destructors, which a jump out of a constructor would skip.
    c.handle = unsafe { libc::dlopen(c.path, c.flags) };
}

/// `dlopen` under the guard, for the probe child only. A crash in a constructor prints the
/// child's `crash` line and exits the child.
pub(crate) fn guarded_dlopen(path: &Path, flags: i32) -> std::result::Result<Library, String> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut ctx = DlopenCtx { path: cpath.as_ptr(), flags, handle: std::ptr::null_mut() };
    // SAFETY: the trampoline calls dlopen with a valid path; it owns nothing droppable.
    let r = unsafe { guard::call(0, dlopen_trampoline, &mut ctx as *mut DlopenCtx as *mut c_void) };
    match r {
        Ok(()) if !ctx.handle.is_null() => {
            // SAFETY: a live handle from dlopen.
            Ok(unsafe { Library::from_raw(ctx.handle) })
        }
        Ok(()) => {
            // SAFETY: dlerror returns a thread-local message or NULL.
            let msg = unsafe { libc::dlerror() };
            Err(if msg.is_null() {
                "dlopen failed".to_owned()
            } else {
                // SAFETY: NUL-terminated message from dlerror.
                unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned()
            })
        }
        Err(raw) => {
            let here = locate(raw.pc);
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
            let in_module = here.object.is_some() && here.object == file;
            let symbol = here.symbol.as_ref().map(|(n, s, _)| format!("{n}+{:#x}", raw.pc - s));
            let offset = match (in_module, here.base) {
                (true, Some(base)) => format!("{:#x}", raw.pc - base),
                _ => "-".to_owned(),
            };
            println!(
                "crash\t{}\t{}\t{:#x}\t{:#x}\t{}\t{offset}\t{}\t{}\t{}",
                raw.signo,
                raw.code,
                raw.addr,
                raw.pc,
                in_module as u8,
                here.object.as_deref().unwrap_or("-"),
                symbol.as_deref().unwrap_or("-"),
                raw.tid
            );
            std::process::exit(0);
        }
    }
}

/// The `kmodlike-probe` helper's main: `kmodlike-probe [--strict] [--module-path DIR]... -- FILE`.
#[doc(hidden)]
pub fn probe_child_main() -> ! {
    let mut args = std::env::args().skip(1);
    let mut strict = false;
    let mut dirs = Vec::new();
    let mut file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--strict" => strict = true,
            "--module-path" => dirs.extend(args.next().map(PathBuf::from)),
            "--" => file = args.next(),
            _ => file = Some(a),
        }
    }
    let Some(file) = file else {
        eprintln!("usage: kmodlike-probe [--strict] [--module-path DIR]... -- FILE");
        std::process::exit(2);
    };
    let loader = crate::Loader::builder()
        .strict(strict)
        .module_path(dirs)
        .guard_dlopen_in_probe_child(true)
        .build();
    match loader.open(&file) {
        Ok(handle) => {
            println!("ok");
            // Exit without module_fini: the probe only proves the load survives.
            std::mem::forget(handle);
            std::process::exit(0);
        }
        Err(Error::Crashed(r)) => {
            println!(
                "crash\t{}\t{}\t{:#x}\t{:#x}\t{}\t{}\t{}\t{}\t{}",
                r.signal,
                r.code,
                r.fault_addr,
                r.pc,
                r.pc_in_module as u8,
                r.module_offset.map_or("-".to_owned(), |o| format!("{o:#x}")),
                r.pc_object.as_deref().unwrap_or("-"),
                r.symbol.as_deref().unwrap_or("-"),
                r.thread_id
            );
            std::process::exit(0);
        }
        Err(e) => {
            println!("error\t{}\t{}", e.kind().name(), e.to_string().replace(['\t', '\n'], " "));
            std::process::exit(0);
        }
    }
}
