//! Module signatures: the detached `FILE.minisig` that `minisign -S -m FILE` writes, verified
//! with the `minisign-verify` crate (Ed25519 over the file's BLAKE2b-512 hash, plus the signed
//! trusted comment) against the public keys (`*.pub`, as `minisign -G` writes them) of a key
//! directory; and the revocation list, SHA-256 digests of files that must never load again.
//!
//! Everything here works on the bytes the loader has made stable and will map (see
//! `image.rs`), never on a second read of the path.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use minisign_verify::{PublicKey, Signature};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use super::paths;

/// A `.minisig` or `.pub` file is a few lines; anything larger is not one.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// A revocation list longer than this is refused as a mistake (a million digests is 65 MB).
const MAX_REVOKED_FILE: u64 = 64 << 20;

/// The signature file of `module`: `module` with `.minisig` appended (`hello.so.minisig`).
pub fn signature_path(module: &Path) -> PathBuf {
    let mut p = module.as_os_str().to_owned();
    p.push(".minisig");
    PathBuf::from(p)
}

/// A minisign key id as the minisign tool prints it: the 8 bytes read as a little-endian
/// number, in upper-case hexadecimal.
fn key_id_text(id: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// The key id of a signature or public key line (base64 of: 2 bytes algorithm, 8 bytes id,
/// ...). `None` when the line is not one.
fn key_id_of_line(line: &str) -> Option<String> {
    let bin = base64::engine::general_purpose::STANDARD.decode(line.trim()).ok()?;
    (bin.len() >= 10).then(|| key_id_text(&bin[2..10]))
}

/// One trusted public key.
#[derive(Clone)]
struct TrustedKey {
    id: String,
    key: PublicKey,
    file: PathBuf,
}

/// The trusted keys of a key directory.
#[derive(Clone, Default)]
pub(crate) struct Keys {
    keys: Vec<TrustedKey>,
    /// Why the directory gave no keys (missing, untrusted, unreadable), for the verdict.
    problem: Option<String>,
}

impl Keys {
    /// Read every `*.pub` of `dir`. The directory and each key file must pass the path rules
    /// (a key anyone could add is no key); a key file that breaks them, or is no minisign
    /// public key, is skipped and named in [`Keys::skipped`].
    pub(crate) fn load(dir: &Path) -> (Keys, Vec<String>) {
        let mut skipped = Vec::new();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let walked = match paths::open_checked(dir, flags) {
            Ok(w) => w,
            Err(paths::WalkError::NotFound) => {
                let problem = format!("the key directory {} does not exist", dir.display());
                return (Keys { keys: Vec::new(), problem: Some(problem) }, skipped);
            }
            Err(paths::WalkError::Io(at, e)) => {
                let problem = format!(
                    "the key directory {} cannot be read ({}: {e})",
                    dir.display(),
                    at.display()
                );
                return (Keys { keys: Vec::new(), problem: Some(problem) }, skipped);
            }
        };
        if let Some(u) = walked.untrusted {
            let problem = format!("the key directory {} is not trusted: {u}", dir.display());
            return (Keys { keys: Vec::new(), problem: Some(problem) }, skipped);
        }
        let dir_entries = rustix::fs::Dir::read_from(&walked.fd).map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
                .collect::<Vec<_>>()
        });
        let mut names = match dir_entries {
            Ok(names) => names,
            Err(e) => {
                let problem = format!("the key directory {} cannot be read: {e}", dir.display());
                return (Keys { keys: Vec::new(), problem: Some(problem) }, skipped);
            }
        };
        names.sort();
        let mut keys = Vec::new();
        for name in names.into_iter().filter(|n| Path::new(n).extension() == Some("pub".as_ref())) {
            let file = dir.join(&name);
            match read_key(&walked.fd, &name, &file) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{}: {why}", file.display())),
            }
        }
        let problem = keys
            .is_empty()
            .then(|| format!("the key directory {} holds no usable *.pub key", dir.display()));
        (Keys { keys, problem }, skipped)
    }

    /// The ids of the trusted keys.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }
}

fn read_key(
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    file: &Path,
) -> Result<TrustedKey, String> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| e.to_string())?;
    let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| e.to_string())?;
    let euid = rustix::process::geteuid().as_raw();
    if !(st.st_uid == 0 || st.st_uid == euid) || st.st_mode & 0o022 != 0 {
        return Err(format!(
            "not trusted (owner uid {}, mode {:04o}): a key must be owned by root or by uid {euid} \
             and not writable by group or others",
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    let text = read_small(std::fs::File::from(fd), MAX_SMALL_FILE).map_err(|e| e.to_string())?;
    let key = PublicKey::decode(&text).map_err(|e| format!("not a minisign public key: {e}"))?;
    let id = text
        .lines()
        .nth(1)
        .and_then(key_id_of_line)
        .ok_or_else(|| "not a minisign public key".to_owned())?;
    Ok(TrustedKey { id, key, file: file.to_owned() })
}

/// Open `path` without blocking (a FIFO put in its place must not hang a load); `Ok(None)` when
/// it does not exist.
fn open_small(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(std::fs::File::from(fd))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Read a small regular file whole (anything else is refused, naming what it is).
fn read_small(f: std::fs::File, limit: u64) -> std::io::Result<String> {
    let st = rustix::fs::fstat(&f)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(text)
}

/// Who signed a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signer {
    pub key_id: String,
    pub trusted_comment: String,
    pub key_file: PathBuf,
}

/// Verify `data` (the module's stable bytes) against the signature file `sig_file` and the
/// trusted `keys`. The error says why it is not validly signed, in words an operator acts on.
pub(crate) fn verify(data: &[u8], sig_file: &Path, keys: &Keys) -> Result<Signer, String> {
    let text = match open_small(sig_file) {
        Ok(Some(f)) => read_small(f, MAX_SMALL_FILE)
            .map_err(|e| format!("its signature {} cannot be read: {e}", sig_file.display()))?,
        Ok(None) => {
            return Err(format!(
                "it has no signature (no {}; sign it with `minisign -S -m FILE`)",
                sig_file.display()
            ))
        }
        Err(e) => return Err(format!("its signature {} cannot be read: {e}", sig_file.display())),
    };
    let sig = Signature::decode(&text)
        .map_err(|e| format!("{} is not a minisign signature: {e}", sig_file.display()))?;
    let sig_id = text.lines().nth(1).and_then(key_id_of_line).unwrap_or_default();
    if let Some(problem) = &keys.problem {
        return Err(format!("it is signed by key {sig_id}, but {problem}"));
    }
    let Some(key) = keys.keys.iter().find(|k| k.id == sig_id) else {
        let known: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
        return Err(format!(
            "it is signed by key {sig_id}, which is not trusted (trusted: {}); add the \
             signer's .pub file to the key directory if you trust it",
            known.join(", ")
        ));
    };
    // Prehashed signatures only (minisign's default since 0.8): the legacy mode signs the raw
    // bytes, and nothing about it is needed here.
    key.key.verify(data, &sig, false).map_err(|e| {
        format!(
            "its signature {} by key {sig_id} does not match the file ({e}): the file was \
             changed after signing, or the signature is another file's",
            sig_file.display()
        )
    })?;
    Ok(Signer {
        key_id: key.id.clone(),
        trusted_comment: sig.trusted_comment().to_owned(),
        key_file: key.file.clone(),
    })
}

/// The SHA-256 digest of `data`, in lower-case hexadecimal (as `sha256sum` prints it).
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A revocation list: one hex SHA-256 digest per line (`sha256sum`'s output works too: what
/// follows the digest on a line is ignored); `#` starts a comment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Revoked {
    digests: std::collections::HashSet<String>,
}

impl Revoked {
    /// Read `file`. A missing file is an empty list; an unreadable one or a malformed line is
    /// an error naming the file and line.
    pub(crate) fn load(file: &Path) -> Result<Revoked, String> {
        let text = match open_small(file) {
            Ok(Some(f)) => {
                read_small(f, MAX_REVOKED_FILE).map_err(|e| format!("{}: {e}", file.display()))?
            }
            Ok(None) => return Ok(Revoked::default()),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let mut digests = std::collections::HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(word) = line.split_whitespace().next() else { continue };
            if word.len() != 64 || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}:{}: {word:?} is not a SHA-256 digest (64 hexadecimal digits)",
                    file.display(),
                    n + 1
                ));
            }
            digests.insert(word.to_ascii_lowercase());
        }
        Ok(Revoked { digests })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.digests.contains(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn keys_are_read_with_their_ids_and_a_key_others_may_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let good = kmodlike_testsupport::SigningKey::generate();
        let bad = kmodlike_testsupport::SigningKey::generate();
        good.write_pub(dir.path(), "good");
        chmod(&bad.write_pub(dir.path(), "bad"), 0o666);
        std::fs::write(dir.path().join("junk.pub"), "not a key\n").unwrap();
        std::fs::write(dir.path().join("README"), "ignored: not *.pub").unwrap();
        let (keys, skipped) = Keys::load(dir.path());
        assert_eq!(keys.ids(), vec![good.id()]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("bad.pub") && s.contains("mode 0666")));
        assert!(skipped.iter().any(|s| s.contains("junk.pub") && s.contains("not a minisign")));
    }

    #[test]
    fn a_missing_key_directory_names_itself_in_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.so");
        std::fs::write(&module, b"bytes").unwrap();
        let key = kmodlike_testsupport::SigningKey::generate();
        key.sign(&module, "timestamp:1");
        let (keys, _) = Keys::load(&dir.path().join("no-keys"));
        let e = verify(b"bytes", &signature_path(&module), &keys).unwrap_err();
        assert!(e.contains(&key.id()) && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn a_fifo_in_place_of_the_signature_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.so");
        kmodlike_testsupport::mkfifo(&signature_path(&module));
        let e = verify(b"bytes", &signature_path(&module), &Keys::default()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn revocation_lists_take_sha256sum_output_and_refuse_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("revoked");
        let digest = sha256_hex(b"abc");
        assert_eq!(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        std::fs::write(&list, format!("# recalled\n\n{}  ./m.so\n", digest.to_uppercase()))
            .unwrap();
        let r = Revoked::load(&list).unwrap();
        assert!(r.contains(&digest) && !r.is_empty());
        std::fs::write(&list, "abc123\n").unwrap();
        let e = Revoked::load(&list).unwrap_err();
        assert!(e.contains(":1:") && e.contains("not a SHA-256 digest"), "{e}");
        assert!(Revoked::load(&dir.path().join("none")).unwrap().is_empty());
    }
}
