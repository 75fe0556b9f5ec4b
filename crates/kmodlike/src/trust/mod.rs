//! Module trust: who may put code into the host, checked before any code of a file runs.
//!
//! Three checks, in the order a load meets them:
//!
//! 1. **Path trust** ([`paths`]): the file and every directory above it are owned by root or by
//!    this process's uid and not writable by group or others (sticky directories pass our own
//!    entries). On by default; a refusal names the path, its owner and mode, and the remedy.
//!    [`LoaderBuilder::allow_untrusted_paths`](crate::LoaderBuilder::allow_untrusted_paths)
//!    loads anyway and taints the process ("untrusted path").
//! 2. **The revocation list** ([`signature::Revoked`]): the SHA-256 of the file's bytes must not
//!    be listed. Always applied when the list exists.
//! 3. **The signature** ([`signature::verify`]), under the [`SignaturePolicy`]: the detached
//!    `FILE.minisig` must verify against a trusted key of the key directory, over exactly the
//!    bytes that get mapped. `warn` loads an unsigned module and taints ("unsigned module");
//!    `enforce` refuses it.
//!
//! The revocation list and the signature are checked over the stable bytes the loader maps
//! (`image.rs`), so what was verified is what runs.

pub(crate) mod paths;
mod policy;
pub(crate) mod signature;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use policy::PolicyLatch;
pub use policy::SignaturePolicy;
pub use signature::signature_path;

use crate::error::{Error, Result};
use crate::image::ModuleFile;

/// The key directory used when none is configured.
pub const DEFAULT_TRUSTED_KEYS: &str = "/etc/kmodlike/keys";

/// The revocation list used when none is configured.
pub const DEFAULT_REVOKED: &str = "/etc/kmodlike/revoked";

/// What the signature check said about a loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "verdict"))]
pub enum SignatureVerdict {
    /// The policy was `off` when it was loaded: not looked at.
    #[default]
    NotChecked,
    /// Validly signed by a trusted key.
    Signed {
        /// The signer's key id, as `minisign` prints it (16 upper-case hex digits).
        key_id: String,
        /// The signature's trusted comment (signed with it: `timestamp:... file:...`).
        trusted_comment: String,
    },
    /// Loaded under `warn` without a valid signature by a trusted key.
    Unsigned {
        /// Why: no signature file, an untrusted key, a signature that does not match.
        reason: String,
    },
}

impl SignatureVerdict {
    /// `"not-checked"`, `"signed"` or `"unsigned"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureVerdict::NotChecked => "not-checked",
            SignatureVerdict::Signed { .. } => "signed",
            SignatureVerdict::Unsigned { .. } => "unsigned",
        }
    }
}

/// What the trust checks said about a loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TrustInfo {
    /// The signature verdict.
    pub signature: SignatureVerdict,
    /// Why its path is not trusted, when it was loaded anyway
    /// ([`LoaderBuilder::allow_untrusted_paths`](crate::LoaderBuilder::allow_untrusted_paths)).
    pub untrusted_path: Option<String>,
}

/// A loader's trust settings.
#[derive(Debug)]
pub(crate) struct TrustSettings {
    /// False only in the probe child, which loads `/proc/self/fd/N` that its parent checked.
    pub check_paths: bool,
    pub allow_untrusted_paths: bool,
    pub keys_dir: RwLock<PathBuf>,
    pub revoked: RwLock<PathBuf>,
    pub policy: PolicyLatch,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            check_paths: true,
            allow_untrusted_paths: false,
            keys_dir: RwLock::new(DEFAULT_TRUSTED_KEYS.into()),
            revoked: RwLock::new(DEFAULT_REVOKED.into()),
            policy: PolicyLatch::new(SignaturePolicy::Off),
        }
    }
}

impl TrustSettings {
    pub(crate) fn keys_dir(&self) -> PathBuf {
        self.keys_dir.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn revoked_file(&self) -> PathBuf {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Open the module file through the path check. Refused when the path is not trusted,
    /// unless untrusted paths are allowed: then the reason is returned, and the caller
    /// taints.
    pub(crate) fn open(&self, path: &Path, spec: &str) -> Result<(ModuleFile, Option<String>)> {
        if !self.check_paths {
            return Ok((ModuleFile::open(path, spec)?, None));
        }
        let (file, untrusted) = ModuleFile::open_walked(path, spec)?;
        match untrusted {
            None => Ok((file, None)),
            Some(u) if self.allow_untrusted_paths => Ok((file, Some(u.to_string()))),
            Some(u) => Err(Error::UntrustedPath {
                path: path.to_owned(),
                detail: format!(
                    "{u}; a module and every directory above it must be owned by root (or uid \
                     {}) and not writable by group or others: fix the owner and mode (chown \
                     root, chmod go-w), or load it anyway with --allow-untrusted-paths \
                     (MODULE_LOADER_ALLOW_UNTRUSTED, LoaderBuilder::allow_untrusted_paths), \
                     which taints the process",
                    rustix::process::geteuid().as_raw()
                ),
            }),
        }
    }

    /// What the bytes of one load are checked against, read now (keys, revocation list).
    pub(crate) fn bytes_check(&self) -> Result<BytesCheck> {
        let policy = self.policy.get();
        let revoked_file = self.revoked_file();
        let revoked = signature::Revoked::load(&revoked_file).map_err(|e| Error::Signature {
            path: revoked_file.clone(),
            detail: format!(
                "the revocation list cannot be used ({e}); fix or remove it: until then no \
                 module loads"
            ),
        })?;
        let keys = if policy == SignaturePolicy::Off {
            signature::Keys::default()
        } else {
            signature::Keys::load(&self.keys_dir()).0
        };
        Ok(BytesCheck { policy, keys, revoked, revoked_file })
    }
}

/// The checks of one load's bytes: the revocation list and the signature.
pub(crate) struct BytesCheck {
    policy: SignaturePolicy,
    keys: signature::Keys,
    revoked: signature::Revoked,
    revoked_file: PathBuf,
}

impl BytesCheck {
    /// Nothing to check (policy off, no revocation list): the bytes need not be read.
    pub(crate) fn is_noop(&self) -> bool {
        self.policy == SignaturePolicy::Off && self.revoked.is_empty()
    }

    /// Check `data`, the bytes of `path` that will be mapped. `Err` refuses the load; an
    /// [`SignatureVerdict::Unsigned`] verdict loads under `warn` (the caller taints).
    pub(crate) fn check(&self, path: &Path, data: &[u8]) -> Result<SignatureVerdict> {
        if !self.revoked.is_empty() {
            let digest = signature::sha256_hex(data);
            if self.revoked.contains(&digest) {
                return Err(Error::Revoked {
                    path: path.to_owned(),
                    digest,
                    list: self.revoked_file.clone(),
                });
            }
        }
        if self.policy == SignaturePolicy::Off {
            return Ok(SignatureVerdict::NotChecked);
        }
        match signature::verify(data, &signature_path(path), &self.keys) {
            Ok(signer) => Ok(SignatureVerdict::Signed {
                key_id: signer.key_id,
                trusted_comment: signer.trusted_comment,
            }),
            Err(reason) if self.policy == SignaturePolicy::Warn => {
                Ok(SignatureVerdict::Unsigned { reason })
            }
            Err(reason) => Err(Error::Signature {
                path: path.to_owned(),
                detail: format!("refused by the signature policy enforce: {reason}"),
            }),
        }
    }
}

/// Verify the signature of the bytes `data` of `path` against the keys of `keys_dir`, as a
/// load under `enforce` would (for tools and benchmarks; loads do this themselves).
pub fn verify_signature(path: &Path, data: &[u8], keys_dir: &Path) -> Result<SignatureVerdict> {
    let (keys, _) = signature::Keys::load(keys_dir);
    signature::verify(data, &signature_path(path), &keys)
        .map(|s| SignatureVerdict::Signed { key_id: s.key_id, trusted_comment: s.trusted_comment })
        .map_err(|detail| Error::Signature { path: path.to_owned(), detail })
}
