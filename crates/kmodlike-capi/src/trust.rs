//! Module trust from C: the signature policy, the trusted key directory and the revocation
//! list of a loader. Path trust is on by default; `MODULE_LOADER_ALLOW_UNTRUSTED` (a flag of
//! `module_loader_create_with_flags()`) turns refusals into loads that taint.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use kmodlike::SignaturePolicy;

use crate::entry::{run_code, str_arg};
use crate::error::{module_error_t, Failure};
use crate::loader::{module_loader_t, sink_of};

/// What a loader does with a module that is not validly signed by a trusted key.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum module_signature_policy_t {
    /// The default: signatures are not looked at (the revocation list still applies).
    MODULE_SIGNATURE_OFF = 0,
    /// Verify; load a module without a valid signature anyway and taint the process.
    MODULE_SIGNATURE_WARN = 1,
    /// Verify; refuse a module without a valid signature (`MODULE_ERR_SIGNATURE`). Once set it
    /// cannot be lowered for the loader's life.
    MODULE_SIGNATURE_ENFORCE = 2,
}

/// A `module_signature_policy_t` as received from C (any `int`).
///
/// cbindgen:no-export
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct SignaturePolicyArg(pub c_int);

/// ---- Trust: signatures, keys, revocation -------------------------------------------------
///
/// Set the signature policy of `loader` for the loads that follow. Modules are signed with
/// `minisign -S -m FILE` (a detached `FILE.minisig` next to the module) and verified against
/// the public keys (`*.pub`) of the trusted key directory, over exactly the bytes that get
/// mapped, before any code of the file runs.
///
/// Once `MODULE_SIGNATURE_ENFORCE` is set, lowering it fails with
/// `MODULE_ERR_INVALID_ARGUMENT` and the policy stays `ENFORCE` (as the kernel's
/// `module.sig_enforce`).
///
/// # Safety
/// `loader` is NULL or a live loader.
#[no_mangle]
pub unsafe extern "C" fn module_loader_set_signature_policy(
    loader: *mut module_loader_t,
    policy: SignaturePolicyArg,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a loader from module_loader_create*() not yet destroyed.
    let l = unsafe { loader.as_ref() };
    run_code("module_loader_set_signature_policy", sink_of(l), || {
        let l = l.ok_or_else(|| {
            Failure::invalid("module_loader_set_signature_policy: loader is NULL")
        })?;
        let policy = match policy.0 {
            0 => SignaturePolicy::Off,
            1 => SignaturePolicy::Warn,
            2 => SignaturePolicy::Enforce,
            n => {
                return Err(Failure::invalid(format!(
                    "module_loader_set_signature_policy: unknown policy {n} (MODULE_SIGNATURE_OFF, \
                     _WARN or _ENFORCE)"
                )))
            }
        };
        l.loader.set_signature_policy(policy).map_err(|e| l.shared.fail(e))
    })
}

/// Set the directory of trusted minisign public keys (`*.pub`) of `loader`; default
/// `/etc/kmodlike/keys`. Read at every load. The directory and its key files must be owned by
/// root (or this process's user) and not writable by group or others, or no key of it counts.
///
/// # Safety
/// `loader` is NULL or a live loader; `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn module_loader_set_trusted_keys(
    loader: *mut module_loader_t,
    dir: *const c_char,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a loader from module_loader_create*() not yet destroyed.
    let l = unsafe { loader.as_ref() };
    run_code("module_loader_set_trusted_keys", sink_of(l), || {
        let l =
            l.ok_or_else(|| Failure::invalid("module_loader_set_trusted_keys: loader is NULL"))?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let dir = unsafe { str_arg("module_loader_set_trusted_keys", "dir", dir) }?;
        l.loader.set_trusted_keys(PathBuf::from(dir));
        Ok(())
    })
}

/// Set the revocation list of `loader`: a file of SHA-256 digests (hex, one per line, as
/// `sha256sum` prints them); a module whose bytes have a listed digest is refused with
/// `MODULE_ERR_SIGNATURE` whatever the policy. Default `/etc/kmodlike/revoked`; a missing file
/// is an empty list.
///
/// # Safety
/// `loader` is NULL or a live loader; `file` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn module_loader_set_revoked(
    loader: *mut module_loader_t,
    file: *const c_char,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a loader from module_loader_create*() not yet destroyed.
    let l = unsafe { loader.as_ref() };
    run_code("module_loader_set_revoked", sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid("module_loader_set_revoked: loader is NULL"))?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let file = unsafe { str_arg("module_loader_set_revoked", "file", file) }?;
        l.loader.set_revoked(PathBuf::from(file));
        Ok(())
    })
}
