//! Module trust as an attacker meets it: files and directories others may write, files of
//! other users, unsigned, tampered, mis-signed and revoked modules, and the policy latch.
//! Signatures are made as a vendor makes them (minisign key and signature files).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kmodlike::{Error, ErrorKind, Loader, LoaderBuilder, SignaturePolicy, SignatureVerdict};
use kmodlike_testsupport as ts;
use ts::SigningKey;

/// Open a module for a test.
fn open(loader: &Loader, path: &Path) -> kmodlike::Result<kmodlike::Handle> {
    // SAFETY: every file opened here is a copy of the test module counter.c, or a file the
    // loader must refuse before running any of it.
    unsafe { loader.open(path.to_str().unwrap()) }
}

fn counter() -> PathBuf {
    ts::test_module("counter", "counter", &[])
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A builder with no revocation list of the machine's.
fn builder() -> LoaderBuilder {
    Loader::builder().revoked(PathBuf::from("/nonexistent/kmodlike-revoked"))
}

#[test]
fn a_world_writable_module_is_refused_naming_path_owner_mode_and_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let m = ts::copy_module(&counter(), dir.path(), "counter.so", 0o666);
    let e = open(&builder().build(), &m).unwrap_err();
    assert!(matches!(e, Error::UntrustedPath { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Untrusted);
    let text = e.to_string();
    for part in [m.to_str().unwrap(), "owner uid", "mode 0666", "chmod go-w", "--allow-untrusted"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

#[test]
fn a_module_in_a_directory_others_may_write_is_refused_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let open_dir = dir.path().join("drop");
    std::fs::create_dir(&open_dir).unwrap();
    chmod(&open_dir, 0o777);
    let m = ts::copy_module(&counter(), &open_dir, "counter.so", 0o644);
    let e = open(&builder().build(), &m).unwrap_err();
    assert!(matches!(e, Error::UntrustedPath { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("{} (owner uid", open_dir.display())), "{text}");
    assert!(text.contains("mode 0777"), "{text}");
}

#[test]
fn a_sticky_directory_others_may_write_passes_our_own_module() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o1777);
    let m = ts::copy_module(&counter(), dir.path(), "counter.so", 0o644);
    let h = open(&builder().build(), &m).unwrap();
    assert_eq!(h.info().trust.untrusted_path, None);
    h.close().unwrap();
}

#[test]
fn a_module_owned_by_another_user_is_refused() {
    if !ts::is_root() {
        eprintln!("skipped: needs root to give a file to another uid");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = ts::copy_module(&counter(), dir.path(), "counter.so", 0o644);
    std::os::unix::fs::chown(&m, Some(65534), Some(65534)).unwrap();
    let e = open(&builder().build(), &m).unwrap_err();
    assert!(matches!(e, Error::UntrustedPath { .. }), "{e}");
    assert!(e.to_string().contains("owner uid 65534"), "{e}");
    assert!(e.to_string().contains("owned by another user"), "{e}");
}

#[test]
fn allow_untrusted_paths_loads_anyway_and_taints_naming_the_path() {
    if !ts::in_own_process(
        "allow_untrusted_paths_loads_anyway_and_taints_naming_the_path",
        Duration::from_secs(120),
    ) {
        return;
    }
    assert_eq!(kmodlike::taint(), None);
    let dir = tempfile::tempdir().unwrap();
    let loader = builder().allow_untrusted_paths(true).build();
    // A file refused for another reason runs nothing, and taints nothing.
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"not an ELF file at all").unwrap();
    chmod(&junk, 0o666);
    assert!(matches!(open(&loader, &junk).unwrap_err(), Error::NotElf { .. }));
    assert_eq!(kmodlike::taint(), None, "a refused file taints nothing");
    let m = ts::copy_module(&counter(), dir.path(), "counter.so", 0o666);
    let h = open(&loader, &m).unwrap();
    let why = h.info().trust.untrusted_path.expect("the verdict is kept");
    assert!(why.contains("mode 0666"), "{why}");
    let taint = kmodlike::taint().expect("tainted");
    assert_eq!(taint.module, "counter");
    assert!(taint.reason.starts_with("untrusted path: "), "{}", taint.reason);
    h.close().unwrap();
}

/// A signed module in a temporary directory, and a key directory trusting its key.
struct Signed {
    dir: tempfile::TempDir,
    keys: PathBuf,
    module: PathBuf,
    key: SigningKey,
}

impl Signed {
    fn new() -> Signed {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        chmod(&keys, 0o755);
        let key = SigningKey::generate();
        key.write_pub(&keys, "vendor");
        let module = ts::copy_module(&counter(), dir.path(), "counter.so", 0o644);
        key.sign(&module, "timestamp:1 file:counter.so vendor build 42");
        Signed { dir, keys, module, key }
    }

    fn loader(&self, policy: SignaturePolicy) -> Loader {
        builder().trusted_keys(self.keys.clone()).signature_policy(policy).build()
    }
}

/// Change one byte of `file` that ld.so never reads (the compiler's `.comment`), so the file
/// still loads and only its signature can tell.
fn tamper(file: &Path) {
    let mut data = std::fs::read(file).unwrap();
    let at = data.windows(6).position(|w| w == b"GCC: (").expect("a .comment section");
    data[at] = b'g';
    std::fs::write(file, data).unwrap();
}

#[test]
fn enforce_loads_a_module_signed_by_a_trusted_key_and_names_the_signer() {
    let s = Signed::new();
    let h = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap();
    match h.info().trust.signature {
        SignatureVerdict::Signed { key_id, trusted_comment } => {
            assert_eq!(key_id, s.key.id());
            assert_eq!(trusted_comment, "timestamp:1 file:counter.so vendor build 42");
        }
        other => panic!("expected a signed verdict, got {other:?}"),
    }
    h.close().unwrap();
}

#[test]
fn enforce_refuses_a_module_with_a_tampered_byte() {
    let s = Signed::new();
    tamper(&s.module);
    let e = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap_err();
    assert!(matches!(e, Error::Signature { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Signature);
    assert!(e.to_string().contains("does not match the file"), "{e}");
    assert!(e.to_string().contains(&s.key.id()), "{e}");
}

#[test]
fn enforce_refuses_the_signature_of_another_file() {
    let s = Signed::new();
    let other = ts::test_module("veto", "veto", &[]);
    let sig = s.key.sign_bytes(&std::fs::read(other).unwrap(), "timestamp:1 file:veto.so");
    std::fs::write(ts::signature_file(&s.module), sig).unwrap();
    let e = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap_err();
    assert!(matches!(e, Error::Signature { .. }), "{e}");
    assert!(e.to_string().contains("another file's"), "{e}");
}

#[test]
fn enforce_refuses_a_key_that_is_not_trusted_naming_it() {
    let s = Signed::new();
    let stranger = SigningKey::generate();
    stranger.sign(&s.module, "timestamp:1 file:counter.so");
    let e = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap_err();
    assert!(matches!(e, Error::Signature { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("signed by key {}", stranger.id())), "{text}");
    assert!(text.contains("not trusted") && text.contains(&s.key.id()), "{text}");
}

#[test]
fn enforce_refuses_an_unsigned_module_naming_the_missing_signature() {
    let s = Signed::new();
    std::fs::remove_file(ts::signature_file(&s.module)).unwrap();
    let e = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap_err();
    assert!(e.to_string().contains("has no signature"), "{e}");
    assert!(e.to_string().contains("counter.so.minisig"), "{e}");
}

#[test]
fn a_key_directory_others_may_write_trusts_no_key() {
    let s = Signed::new();
    chmod(&s.keys, 0o777);
    let e = open(&s.loader(SignaturePolicy::Enforce), &s.module).unwrap_err();
    assert!(e.to_string().contains("key directory"), "{e}");
    assert!(e.to_string().contains("not trusted"), "{e}");
}

#[test]
fn warn_loads_good_signatures_clean_and_bad_ones_with_a_taint() {
    if !ts::in_own_process(
        "warn_loads_good_signatures_clean_and_bad_ones_with_a_taint",
        Duration::from_secs(120),
    ) {
        return;
    }
    let s = Signed::new();
    let loader = s.loader(SignaturePolicy::Warn);
    let h = open(&loader, &s.module).unwrap();
    assert_eq!(h.info().trust.signature.as_str(), "signed");
    h.close().unwrap();
    assert_eq!(kmodlike::taint(), None, "a good signature does not taint");

    tamper(&s.module);
    let h = open(&loader, &s.module).unwrap();
    match h.info().trust.signature {
        SignatureVerdict::Unsigned { reason } => {
            assert!(reason.contains("does not match the file"), "{reason}")
        }
        other => panic!("expected an unsigned verdict, got {other:?}"),
    }
    let taint = kmodlike::taint().expect("tainted");
    assert!(taint.reason.starts_with("unsigned module: "), "{}", taint.reason);
    h.close().unwrap();
}

#[test]
fn warn_loads_a_stranger_key_and_another_files_signature_with_the_reason() {
    // These loads taint this test process; the tests that look at the taint run in their own.
    let s = Signed::new();
    let loader = s.loader(SignaturePolicy::Warn);
    let stranger = SigningKey::generate();
    stranger.sign(&s.module, "timestamp:1 file:counter.so");
    let h = open(&loader, &s.module).unwrap();
    match h.info().trust.signature {
        SignatureVerdict::Unsigned { reason } => {
            assert!(reason.contains(&stranger.id()) && reason.contains("not trusted"), "{reason}")
        }
        other => panic!("expected an unsigned verdict, got {other:?}"),
    }
    h.close().unwrap();
    let other = ts::test_module("veto", "veto", &[]);
    let sig = s.key.sign_bytes(&std::fs::read(other).unwrap(), "timestamp:1 file:veto.so");
    std::fs::write(ts::signature_file(&s.module), sig).unwrap();
    let h = open(&loader, &s.module).unwrap();
    match h.info().trust.signature {
        SignatureVerdict::Unsigned { reason } => {
            assert!(reason.contains("another file's"), "{reason}")
        }
        other => panic!("expected an unsigned verdict, got {other:?}"),
    }
    h.close().unwrap();
}

#[test]
fn a_revoked_digest_is_refused_whatever_the_policy() {
    let s = Signed::new();
    let digest = {
        use std::fmt::Write;
        let out = std::process::Command::new("sha256sum").arg(&s.module).output().unwrap();
        let mut d = String::new();
        write!(d, "{}", String::from_utf8_lossy(&out.stdout)).unwrap();
        d.split_whitespace().next().unwrap().to_owned()
    };
    let list = s.dir.path().join("revoked");
    std::fs::write(&list, format!("# recalled build 42\n{digest}  counter.so\n")).unwrap();
    for policy in [SignaturePolicy::Off, SignaturePolicy::Enforce] {
        let loader = Loader::builder()
            .trusted_keys(s.keys.clone())
            .signature_policy(policy)
            .revoked(list.clone())
            .build();
        let e = open(&loader, &s.module).unwrap_err();
        assert!(matches!(e, Error::Revoked { .. }), "{policy}: {e}");
        assert!(e.to_string().contains(&digest), "{e}");
    }
}

#[test]
fn enforce_cannot_be_turned_off_once_on() {
    let s = Signed::new();
    let loader = s.loader(SignaturePolicy::Warn);
    loader.set_signature_policy(SignaturePolicy::Enforce).unwrap();
    for p in [SignaturePolicy::Off, SignaturePolicy::Warn] {
        let e = loader.set_signature_policy(p).unwrap_err();
        assert!(e.to_string().contains("cannot be turned"), "{e}");
    }
    assert_eq!(loader.signature_policy(), SignaturePolicy::Enforce);
    std::fs::remove_file(ts::signature_file(&s.module)).unwrap();
    assert!(matches!(open(&loader, &s.module).unwrap_err(), Error::Signature { .. }));
}
