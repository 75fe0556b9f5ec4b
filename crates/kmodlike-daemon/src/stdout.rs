//! `kmodctl`'s writes to standard output and standard error, which never panic.
//!
//! `println!` panics when the write fails, and Rust ignores SIGPIPE, so `kmodctl list | head -0`
//! (a reader that went away) or `kmodctl list > /dev/full` used to end in a panic and exit 101.
//! Here a write that fails because the reader closed the pipe (EPIPE) ends the program quietly
//! with exit 0, as most tools do when nobody is left to read (`git log | head -1`); any other
//! write error is reported in one line and exits 1.

use std::io::{self, Write};

/// Why standard output could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// The reader went away (EPIPE): stop quietly.
    Closed,
    /// Any other error (`/dev/full`: ENOSPC; a revoked terminal: EIO).
    Failed(io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Closed => f.write_str("standard output was closed"),
            WriteError::Failed(e) => write!(f, "cannot write to standard output: {e}"),
        }
    }
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> WriteError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Failed(e)
        }
    }
}

/// Write `text` to standard output and flush it (so that a full disk is seen now, not lost
/// when the process exits).
pub fn write_stdout(text: &str) -> Result<(), WriteError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Write one line to standard error; a failure there has nowhere left to be reported and is
/// ignored (never a panic, unlike `eprintln!`).
pub fn write_stderr_line(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_a_quiet_close_and_others_fail() {
        let e = WriteError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, WriteError::Closed));
        let e = WriteError::from(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, WriteError::Failed(_)));
        assert!(e.to_string().starts_with("cannot write to standard output: "), "{e}");
    }
}
