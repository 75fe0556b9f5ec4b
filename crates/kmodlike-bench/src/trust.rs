//! Fixtures of the trust benchmarks: a key directory trusting a fresh minisign key, a signed
//! 1 MiB blob, and a signed copy of the example module.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kmodlike_testsupport::SigningKey;

/// Signed files in a private directory.
pub struct SignedFixtures {
    /// The key directory.
    pub keys: PathBuf,
    /// A 1 MiB file, signed.
    pub blob: PathBuf,
    /// Its bytes.
    pub blob_data: Vec<u8>,
    /// A signed copy of the example module.
    pub module: PathBuf,
}

impl SignedFixtures {
    /// Make them under `dir` (which must exist and pass the path rules).
    pub fn new(dir: &Path) -> SignedFixtures {
        let dir = dir.join("trust");
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).expect("create the key directory");
        for d in [&dir, &keys] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let key = SigningKey::generate();
        key.write_pub(&keys, "bench");
        let blob_data: Vec<u8> =
            (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let blob = dir.join("blob.so");
        std::fs::write(&blob, &blob_data).expect("write the blob");
        key.sign(&blob, "timestamp:0 file:blob.so");
        let module = kmodlike_testsupport::copy_module(
            &crate::fixtures::hello_module(),
            &dir,
            "hello.so",
            0o644,
        );
        key.sign(&module, "timestamp:0 file:hello.so");
        SignedFixtures { keys, blob, blob_data, module }
    }
}
