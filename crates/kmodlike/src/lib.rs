//! kmodlike: a userland module loader that survives modules that crash.
#![warn(missing_docs)]

pub mod crash;
mod error;
mod guard;
pub mod interface;

pub use crash::{taint, CrashReport, Phase, Taint};
pub use error::{BusyReason, Error, ErrorKind, Result};
pub use interface::{ModuleInitArgs, Version};
