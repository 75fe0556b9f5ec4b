//! The signature policy and its one-way latch: like the kernel's `module.sig_enforce`,
//! `enforce` can be turned on while the loader runs and never off again.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};

/// What the loader does with a module that is not validly signed by a trusted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SignaturePolicy {
    /// The default: signatures are not looked at (the revocation list still applies).
    #[default]
    Off,
    /// Verify; load a module that is unsigned or badly signed anyway, taint the process
    /// ("unsigned module") and report the verdict.
    Warn,
    /// Verify; refuse a module that is not validly signed by a trusted key. Once on, it stays on
    /// for the loader's life.
    Enforce,
}

impl SignaturePolicy {
    /// `"off"`, `"warn"` or `"enforce"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignaturePolicy::Off => "off",
            SignaturePolicy::Warn => "warn",
            SignaturePolicy::Enforce => "enforce",
        }
    }

    fn from_u8(v: u8) -> SignaturePolicy {
        match v {
            0 => SignaturePolicy::Off,
            1 => SignaturePolicy::Warn,
            _ => SignaturePolicy::Enforce,
        }
    }
}

impl std::fmt::Display for SignaturePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SignaturePolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(SignaturePolicy::Off),
            "warn" => Ok(SignaturePolicy::Warn),
            "enforce" => Ok(SignaturePolicy::Enforce),
            _ => Err(Error::InvalidArgument(format!(
                "signature policy {s:?}: expected off, warn or enforce"
            ))),
        }
    }
}

/// A policy that can rise to `enforce` and never come back down.
#[derive(Debug)]
pub(crate) struct PolicyLatch(AtomicU8);

impl PolicyLatch {
    pub(crate) fn new(p: SignaturePolicy) -> PolicyLatch {
        PolicyLatch(AtomicU8::new(p as u8))
    }

    pub(crate) fn get(&self) -> SignaturePolicy {
        SignaturePolicy::from_u8(self.0.load(Ordering::SeqCst))
    }

    /// Set the policy; refused when it is `enforce` and `p` is not (the current policy stays).
    pub(crate) fn set(&self, p: SignaturePolicy) -> Result<()> {
        let enforce = SignaturePolicy::Enforce as u8;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur != enforce || p == SignaturePolicy::Enforce).then_some(p as u8)
            })
            .map(|_| ())
            .map_err(|_| {
                Error::InvalidArgument(format!(
                    "the signature policy is enforce and cannot be turned {p} in this process \
                     (as the kernel's module.sig_enforce); restart the process to change it"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforce_cannot_be_left() {
        let latch = PolicyLatch::new(SignaturePolicy::Off);
        latch.set(SignaturePolicy::Warn).unwrap();
        latch.set(SignaturePolicy::Off).unwrap();
        latch.set(SignaturePolicy::Enforce).unwrap();
        for p in [SignaturePolicy::Off, SignaturePolicy::Warn] {
            let e = latch.set(p).unwrap_err();
            assert!(e.to_string().contains("cannot be turned"), "{e}");
            assert_eq!(latch.get(), SignaturePolicy::Enforce);
        }
        latch.set(SignaturePolicy::Enforce).unwrap();
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [SignaturePolicy::Off, SignaturePolicy::Warn, SignaturePolicy::Enforce] {
            assert_eq!(p.as_str().parse::<SignaturePolicy>().unwrap(), p);
        }
        assert!("strict".parse::<SignaturePolicy>().is_err());
    }
}
