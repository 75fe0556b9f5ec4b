//! The probe's child process: its answer comes on a channel of its own, so a module may print
//! what it likes; its output is drained while it runs and its tail shown when it fails; a hung
//! module is killed at the deadline and reaped; and it tests the bytes of a descriptor.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kmodlike::probe::{self, Answer, ProbeConfig};
use kmodlike::{Error, Loader, Phase};
use kmodlike_testsupport as ts;

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-probe"))
}

fn probing(timeout: Duration) -> Loader {
    Loader::builder().probe(true).probe_helper(helper()).probe_timeout(timeout).build()
}

fn misbehaving(out_stem: &str, flag: &str) -> PathBuf {
    ts::test_module("probe_misbehave", out_stem, &[flag])
}

fn config(timeout: Duration) -> ProbeConfig {
    ProbeConfig {
        helper: Some(helper()),
        dirs: Vec::new(),
        dependency_paths: Vec::new(),
        strict: false,
        timeout,
    }
}

#[test]
fn a_module_printing_a_mebibyte_on_stdout_and_stderr_loads_under_the_probe() {
    let m = misbehaving("probe_noisy", "-DNOISY");
    let loader = probing(Duration::from_secs(60));
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(m.to_str().unwrap()) }
        .expect("the output is no answer and blocks nothing");
    h.close().unwrap();
}

#[test]
fn a_hung_constructor_is_killed_at_the_deadline_and_reaped() {
    // Alone in its process: it checks that this process has no child left.
    if !ts::in_own_process(
        "a_hung_constructor_is_killed_at_the_deadline_and_reaped",
        Duration::from_secs(120),
    ) {
        return;
    }
    let m = misbehaving("probe_hang_ctor", "-DHANG_CTOR");
    let loader = probing(Duration::from_millis(500));
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(m.to_str().unwrap()) }.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Probe { .. }), "{e:?}");
    assert!(msg.contains("hangs"), "says it hangs: {msg}");
    assert!(msg.contains("500ms"), "names the deadline: {msg}");
    assert!(msg.contains("probe_timeout"), "says how to change it: {msg}");
    assert_eq!(
        rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG).unwrap_err(),
        rustix::io::Errno::CHILD,
        "the probe child was reaped: no child of this process remains"
    );
    assert!(loader.list().is_empty());
    // The host is alive and still loads modules through the probe.
    let good = ts::test_module("counter", "counter", &[]);
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(good.to_str().unwrap()) }.unwrap().close().unwrap();
}

#[test]
fn a_module_exiting_in_init_is_refused_with_what_it_said() {
    let m = misbehaving("probe_exit_init", "-DEXIT_INIT");
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { probing(Duration::from_secs(60)).open(m.to_str().unwrap()) }.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Probe { .. }), "{e:?}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("cannot find /etc/probe_misbehave.conf, giving up"), "the tail: {msg}");
}

#[test]
fn a_crash_in_module_init_under_the_probe_is_a_crash_report() {
    let m = ts::test_module("fault_signal", "fault_init_11", &["-DINIT_SIGNAL=11"]);
    let loader = probing(Duration::from_secs(60));
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(m.to_str().unwrap()) }.unwrap_err();
    let r = e.crash_report().unwrap_or_else(|| panic!("expected a crash report: {e}"));
    assert_eq!(r.signal_name, "SIGSEGV");
    assert_eq!(r.phase, Phase::Probe);
    assert!(r.pc_in_module, "{r}");
    let pid = r.probe_pid.expect("a probe crash names the probe child");
    assert_ne!(pid, std::process::id(), "the child's pid, not ours");
    assert!(r.to_string().contains(&format!("of the probe child, pid {pid}")), "{r}");
    assert_eq!(loader.crashes().len(), 1);
    assert!(loader.list().is_empty());
}

/// A private copy of `module` in `dir`, and a descriptor of its bytes.
fn copy_and_open(module: &Path, dir: &Path, name: &str) -> (PathBuf, std::fs::File) {
    let copy = dir.join(name);
    std::fs::copy(module, &copy).unwrap();
    let f = std::fs::File::open(&copy).unwrap();
    (copy, f)
}

#[test]
fn the_probe_tests_the_descriptor_not_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = ts::test_module("counter", "counter", &[]);
    let bad = ts::test_module("ctor_crash", "ctor_crash", &[]);
    let cfg = config(Duration::from_secs(60));

    // A good module's bytes; then the path is made to name a crashing one.
    let (path, fd) = copy_and_open(&good, dir.path(), "swapped.so");
    std::fs::copy(&bad, dir.path().join("tmp.so")).unwrap();
    std::fs::rename(dir.path().join("tmp.so"), &path).unwrap();
    probe::run(&cfg, "swapped", &path, Some(fd.as_fd())).expect("the descriptor's bytes load");
    let e = probe::run(&cfg, "swapped", &path, None).unwrap_err();
    assert!(e.crash_report().is_some(), "by path, the crashing bytes: {e}");

    // A crashing module's bytes, whose path is then removed: still its crash, in the module.
    let (path, fd) = copy_and_open(&bad, dir.path(), "gone.so");
    std::fs::remove_file(&path).unwrap();
    let e = probe::run(&cfg, "gone", &path, Some(fd.as_fd())).unwrap_err();
    let r = e.crash_report().unwrap_or_else(|| panic!("expected a crash report: {e}"));
    assert_eq!(r.phase, Phase::Probe);
    assert!(r.pc_in_module, "{r}");
    let pid = r.probe_pid.expect("a probe crash names the probe child");
    assert_ne!(pid, std::process::id(), "the child's pid, not ours");
    assert!(r.to_string().contains(&format!("of the probe child, pid {pid}")), "{r}");
    assert_eq!(r.pc_object.as_deref(), Some("gone.so"), "named by its path, not the fd: {r}");
}

#[test]
fn the_answer_survives_encoding() {
    let answers = [
        Answer::Ok,
        Answer::Error { kind: "LoadFailed".into(), message: "no such file".into() },
        Answer::Crash {
            signal: 11,
            code: 1,
            fault_addr: 0,
            pc: 0x7f00_1234,
            pc_in_module: true,
            module_offset: Some(0x1234),
            object: Some("m.so".into()),
            symbol: Some("boom+0x4".into()),
            thread_id: 42,
        },
        Answer::Crash {
            signal: 6,
            code: -6,
            fault_addr: 0,
            pc: 1,
            pc_in_module: false,
            module_offset: None,
            object: None,
            symbol: None,
            thread_id: 7,
        },
    ];
    for a in answers {
        assert_eq!(Answer::decode(&a.encode()), Some(a.clone()), "{}", a.encode());
    }
    let tabbed = Answer::Error { kind: "X".into(), message: "a\tb\nc".into() };
    assert_eq!(
        Answer::decode(&tabbed.encode()),
        Some(Answer::Error { kind: "X".into(), message: "a b c".into() })
    );
    assert_eq!(Answer::decode("hello from module_init\n"), None);
}

#[test]
fn the_command_line_survives_building_and_parsing() {
    let args = probe::ChildArgs {
        strict: true,
        dirs: vec![PathBuf::from("/a"), PathBuf::from("/b c")],
        dependency_paths: vec![("base".into(), PathBuf::from("/x/base=1.so"))],
        answer_fd: 5,
        module_fd: Some(6),
        path: PathBuf::from("/m/--strict.so"),
    };
    assert_eq!(probe::ChildArgs::parse(args.to_args()), Ok(args.clone()));
    let args = probe::ChildArgs { module_fd: None, strict: false, ..args };
    assert_eq!(probe::ChildArgs::parse(args.to_args()), Ok(args));
    assert!(probe::ChildArgs::parse(["--", "/m.so"].map(Into::into)).is_err(), "no answer fd");
}

#[test]
fn a_grandchild_holding_the_output_open_does_not_hold_the_probe() {
    // The grandchild keeps the child's stdout and stderr open for 60 s: were the parent to read
    // them to their end, the 20 s deadline would pass and the module be refused as hung.
    let m = misbehaving("probe_fork_holder", "-DFORK_HOLDER");
    let loader = probing(Duration::from_secs(20));
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(m.to_str().unwrap()) }
        .expect("loads once the child has answered and exited")
        .close()
        .unwrap();
}

#[test]
fn a_module_whose_destructor_crashes_is_refused_by_the_probe_which_unloads_it_too() {
    let so = ts::test_module("dtor_crash", "dtor_crash", &[]);
    let loader = probing(Duration::from_secs(60));
    // SAFETY: a test module; the probe runs its constructors, init, fini and destructors in a
    // child process first, which is what this test checks.
    let e = unsafe { loader.open(so.to_str().unwrap()) }.unwrap_err();
    let report = e.crash_report().unwrap_or_else(|| panic!("a crash report: {e}"));
    assert_eq!(report.phase, Phase::Probe, "{report}");
    assert_eq!(report.signal, libc::SIGSEGV, "{report}");
    assert!(loader.list().is_empty(), "not loaded in the host");
}
