//! Module trust through the C API, called in-process as a C host would: an untrusted path and
//! `MODULE_LOADER_ALLOW_UNTRUSTED`, the signature policy with a trusted key directory, and the
//! policy that cannot be lowered.

use std::ffi::{c_char, CStr, CString};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::ptr::null;

use kmodlike_testsupport as support;
use module::module_error_t::*;
use module::*;

fn last_error(loader: *const module_loader_t) -> String {
    // SAFETY: NULL or a live loader; the text lives until its next failure.
    let p = unsafe { module_loader_last_error(loader) };
    assert!(!p.is_null());
    // SAFETY: a NUL-terminated string from the library.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// A copy of the dltest module in a fresh temporary directory, with `mode`.
fn dltest_copy(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let src = support::workspace_root().join("modules/dltest/dltest.c");
    let so = support::build_module("capi_trust_dltest.so", &[&src], &[]);
    let dir = tempfile::tempdir().unwrap();
    let m = support::copy_module(&so, dir.path(), "dltest.so", mode);
    (dir, m)
}

/// A loader destroyed when the test ends.
struct Loader(*mut module_loader_t);
impl Loader {
    fn with_flags(flags: u32) -> Self {
        let l = module_loader_create_with_flags(LoaderFlagsArg(flags));
        assert!(!l.is_null(), "{}", last_error(null()));
        Loader(l)
    }
    fn load(&self, path: &Path) -> module_error_t {
        // SAFETY: a live loader; the file is a copy of the dltest module or must be refused.
        unsafe { module_loader_load(self.0, cstr(path).as_ptr(), null()) }
    }
}
impl Drop for Loader {
    fn drop(&mut self) {
        // SAFETY: created above, used by no other thread now.
        unsafe { module_loader_destroy(self.0) };
    }
}

#[test]
fn a_world_writable_module_is_refused_with_module_err_untrusted() {
    let (_dir, m) = dltest_copy(0o666);
    let l = Loader::with_flags(0);
    assert_eq!(l.load(&m), MODULE_ERR_UNTRUSTED);
    let text = last_error(l.0);
    assert!(text.contains("dltest.so") && text.contains("mode 0666"), "{text}");
    assert!(text.contains("MODULE_LOADER_ALLOW_UNTRUSTED"), "{text}");
    // SAFETY: a code from the enum.
    let s = unsafe { CStr::from_ptr(module_loader_strerror(ErrorCodeArg(14))) };
    assert!(s.to_str().unwrap().contains("not trusted"), "{s:?}");
}

#[test]
fn allow_untrusted_loads_and_taints() {
    if !support::in_own_process(
        "allow_untrusted_loads_and_taints",
        std::time::Duration::from_secs(120),
    ) {
        return;
    }
    let (_dir, m) = dltest_copy(0o666);
    let l = Loader::with_flags(module_loader_flags_t::MODULE_LOADER_ALLOW_UNTRUSTED as u32);
    assert_eq!(l.load(&m), MODULE_ERR_SUCCESS, "{}", last_error(l.0));
    let mut reason = [0 as c_char; 512];
    // SAFETY: a buffer of its own length.
    assert!(unsafe { module_loader_tainted(reason.as_mut_ptr(), reason.len()) });
    // SAFETY: NUL-terminated by the library.
    let reason = unsafe { CStr::from_ptr(reason.as_ptr()) }.to_string_lossy().into_owned();
    assert!(reason.contains("untrusted path") && reason.contains("0666"), "{reason}");
}

#[test]
fn enforce_with_trusted_keys_loads_signed_refuses_unsigned_and_cannot_be_lowered() {
    let (dir, m) = dltest_copy(0o644);
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = support::SigningKey::generate();
    key.write_pub(&keys, "vendor");
    let l = Loader::with_flags(0);
    // SAFETY: a live loader and NUL-terminated strings.
    unsafe {
        assert_eq!(module_loader_set_trusted_keys(l.0, cstr(&keys).as_ptr()), MODULE_ERR_SUCCESS);
        assert_eq!(
            module_loader_set_revoked(l.0, c"/nonexistent/revoked".as_ptr()),
            MODULE_ERR_SUCCESS
        );
        let enforce = SignaturePolicyArg(2);
        assert_eq!(module_loader_set_signature_policy(l.0, enforce), MODULE_ERR_SUCCESS);
        assert_eq!(
            module_loader_set_signature_policy(l.0, SignaturePolicyArg(0)),
            MODULE_ERR_INVALID_ARGUMENT
        );
        assert!(last_error(l.0).contains("cannot be turned off"), "{}", last_error(l.0));
        assert_eq!(
            module_loader_set_signature_policy(l.0, SignaturePolicyArg(7)),
            MODULE_ERR_INVALID_ARGUMENT
        );
    }
    assert_eq!(l.load(&m), MODULE_ERR_SIGNATURE);
    assert!(last_error(l.0).contains("has no signature"), "{}", last_error(l.0));
    key.sign(&m, "timestamp:1 file:dltest.so");
    assert_eq!(l.load(&m), MODULE_ERR_SUCCESS, "{}", last_error(l.0));
    // SAFETY: a live loader holding a module.
    assert_eq!(unsafe { module_loader_unload(l.0) }, MODULE_ERR_SUCCESS);
}
