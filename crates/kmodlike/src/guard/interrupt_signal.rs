//! The interrupt signal: which one (`SIGRTMAX-4` unless the host or
//! `KMODLIKE_INTERRUPT_SIGNAL` chooses another) and its handler's installation, once per
//! process. The handler itself is `interrupt.c`; the watchdog that sends it is `deadline.rs`.

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use super::ffi;

/// The interrupt signal unless configured: `SIGRTMAX - 4` (60 on Linux). glibc keeps the
/// first real-time signals for itself (`SIGRTMIN` moves past them), applications and POSIX
/// timers reach for `SIGRTMIN + n` first, valgrind takes `SIGRTMAX`, and kmodlike's own
/// sampling signal is `SIGRTMAX - 3`.
pub fn default_interrupt_signal() -> c_int {
    libc::SIGRTMAX() - 4
}

/// The environment variable that chooses the interrupt signal (a number, `SIGRTMAX-N` or
/// `SIGRTMIN+N`), read when the first deadline is set.
pub const INTERRUPT_SIGNAL_ENV: &str = "KMODLIKE_INTERRUPT_SIGNAL";

/// `SIGRTMAX - 4`: see [`default_interrupt_signal`] (a function because glibc's `SIGRTMAX` is).
pub const DEFAULT_INTERRUPT_SIGNAL: &str = "SIGRTMAX-4";

static CHOSEN: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<Result<c_int, String>> = OnceLock::new();

/// Parse `KMODLIKE_INTERRUPT_SIGNAL`'s forms: `60`, `SIGRTMAX-4`, `RTMIN+3`.
pub(crate) fn parse_signal(s: &str) -> Result<c_int, String> {
    let t = s.trim();
    let t = t.strip_prefix("SIG").unwrap_or(t);
    let (base, rest) = if let Some(r) = t.strip_prefix("RTMAX") {
        (libc::SIGRTMAX(), r)
    } else if let Some(r) = t.strip_prefix("RTMIN") {
        (libc::SIGRTMIN(), r)
    } else {
        (0, t)
    };
    let off: i32 = if rest.is_empty() {
        0
    } else {
        rest.trim_start_matches('+').parse().map_err(|_| format!("{s:?} is not a signal"))?
    };
    let n = base + off;
    if n < libc::SIGRTMIN() || n > libc::SIGRTMAX() {
        return Err(format!(
            "{s:?} (signal {n}) is not a real-time signal ({}..={} here)",
            libc::SIGRTMIN(),
            libc::SIGRTMAX()
        ));
    }
    if n == super::threads::sample_signal() {
        return Err(format!("{s:?} (signal {n}) is kmodlike's sampling signal"));
    }
    Ok(n)
}

/// Choose the interrupt signal (before the first deadline installs it). Err when it is no
/// usable real-time signal, or another one is installed already.
pub(crate) fn set_interrupt_signal(signo: c_int) -> Result<(), String> {
    parse_signal(&signo.to_string())?;
    if let Some(Ok(installed)) = INSTALLED.get() {
        if *installed != signo {
            return Err(format!(
                "the interrupt signal is {installed} already (installed by the first deadline)"
            ));
        }
    }
    CHOSEN.store(signo, Ordering::Relaxed);
    Ok(())
}

/// The interrupt signal: installed, or the one that will be.
pub fn interrupt_signal() -> c_int {
    match INSTALLED.get() {
        Some(Ok(s)) => *s,
        _ => chosen_signal().unwrap_or_else(|_| default_interrupt_signal()),
    }
}

fn chosen_signal() -> Result<c_int, String> {
    let c = CHOSEN.load(Ordering::Relaxed);
    if c != 0 {
        return Ok(c);
    }
    match std::env::var(INTERRUPT_SIGNAL_ENV) {
        Ok(v) if !v.is_empty() => {
            parse_signal(&v).map_err(|e| format!("{INTERRUPT_SIGNAL_ENV}: {e}"))
        }
        _ => Ok(default_interrupt_signal()),
    }
}

/// Install the interrupt handler (once per process; a fork child inherits it): the signal, or
/// why it cannot be.
pub(super) fn install() -> Result<c_int, String> {
    INSTALLED
        .get_or_init(|| {
            let signo = chosen_signal()?;
            // SAFETY: installs our handler for a real-time signal; it touches only the
            // shim's own state (interrupt.c).
            let rc = unsafe { ffi::kml_interrupt_install(signo) };
            if rc != 0 {
                return Err(format!(
                    "cannot install the interrupt handler for signal {signo}: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
            Ok(signo)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_by_name() {
        assert_eq!(parse_signal("SIGRTMAX-4"), Ok(libc::SIGRTMAX() - 4));
        assert_eq!(parse_signal("RTMIN+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal(&(libc::SIGRTMAX() - 5).to_string()), Ok(libc::SIGRTMAX() - 5));
        assert!(parse_signal("SIGSEGV").unwrap_err().contains("not a signal"));
        assert!(parse_signal("11").unwrap_err().contains("not a real-time signal"));
        let sampling = super::super::threads::sample_signal().to_string();
        assert!(parse_signal(&sampling).unwrap_err().contains("sampling signal"));
    }
}
