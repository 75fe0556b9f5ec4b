//! Signing test modules as a vendor would with `minisign -G` and `minisign -S`: the `minisign`
//! crate writes the same key and signature files (prehashed Ed25519, a trusted comment).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A minisign key pair, with no password.
pub struct SigningKey {
    pk: minisign::PublicKey,
    sk: minisign::SecretKey,
}

impl SigningKey {
    /// A fresh key pair.
    pub fn generate() -> SigningKey {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("generate a key pair");
        SigningKey { pk: kp.pk, sk: kp.sk }
    }

    /// The key id as `minisign` prints it (16 upper-case hex digits).
    pub fn id(&self) -> String {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.pk.keynum()[..8]);
        format!("{:016X}", u64::from_le_bytes(b))
    }

    /// Write the public key as `dir/<name>.pub` (mode 0644), as `minisign -G -p` does.
    pub fn write_pub(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pub"));
        let text = self.pk.to_box().expect("public key box").into_string();
        std::fs::write(&path, text).expect("write the public key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// The signature of `data` with `trusted_comment`, as the text of a `.minisig` file.
    pub fn sign_bytes(&self, data: &[u8], trusted_comment: &str) -> String {
        minisign::sign(Some(&self.pk), &self.sk, data, Some(trusted_comment), None)
            .expect("sign")
            .into_string()
    }

    /// Sign `file`: write `file.minisig`, as `minisign -S -m file -t trusted_comment` does.
    pub fn sign(&self, file: &Path, trusted_comment: &str) -> PathBuf {
        let data = std::fs::read(file).expect("read the file to sign");
        let sig = crate::signature_file(file);
        std::fs::write(&sig, self.sign_bytes(&data, trusted_comment)).expect("write .minisig");
        sig
    }
}
