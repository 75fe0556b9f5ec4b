//! Fleets without a cluster layer: `kmodctl bridge` joins its stdin and stdout to the daemon's
//! socket (the Varlink bridge convention), so anything that can run a command on a host can
//! talk to that host's daemon: `kmodctl --host HOST ...` runs `ssh HOST kmodctl bridge`, and so
//! can `varlinkctl --bridge=...`-style clients or a configuration-management tool.
//!
//! The bridge copies bytes both ways and adds nothing: the messages are the daemon's Varlink
//! messages, NUL-terminated JSON. It checks the socket's owner first (root or the caller's uid)
//! like every kmodctl command, and ends when the daemon closes the connection, or when its
//! input ends and the daemon has answered.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::client::{connect_trusted, ClientError};

/// Join stdin and stdout to the daemon at `socket` until either side ends.
pub fn run_bridge(socket: &Path) -> Result<(), ClientError> {
    let stream = connect_trusted(socket)?;
    let to_daemon = stream
        .try_clone()
        .map_err(|source| ClientError::Unreachable { path: socket.to_owned(), source })?;
    // stdin -> daemon, on its own thread: when stdin ends, the daemon's side is shut for
    // writing so it sees the end of the requests and closes after answering them.
    std::thread::spawn(move || {
        let mut to_daemon = to_daemon;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_daemon);
        let _ = to_daemon.shutdown(Shutdown::Write);
    });
    // daemon -> stdout, flushed per read so each reply leaves at once (monitor streams).
    let mut from_daemon = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from_daemon.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ClientError::Connection {
                    path: socket.to_owned(),
                    detail: e.to_string(),
                })
            }
        };
        // Our reader went away: nothing left to do.
        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}

/// The ssh command for `--host [user@]HOST`: `ssh -T [-o BatchMode] HOST kmodctl [--socket
/// PATH] bridge`. `$KMODCTL_SSH` replaces `ssh` (another program, or one with options:
/// split on whitespace).
pub fn ssh_command(host: &str, remote_socket: Option<&Path>) -> Command {
    let ssh = std::env::var("KMODCTL_SSH").unwrap_or_else(|_| "ssh".to_owned());
    let mut words = ssh.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap_or("ssh"));
    cmd.args(words);
    // -T: no terminal (the stream is binary); `--` ends ssh's options before the host.
    cmd.arg("-T").arg("--").arg(host).arg("kmodctl");
    if let Some(s) = remote_socket {
        cmd.arg("--socket").arg(s);
    }
    cmd.arg("bridge");
    cmd
}

/// How a `--host` connection is named in messages: `ssh://user@host`.
pub fn host_label(host: &str) -> PathBuf {
    PathBuf::from(format!("ssh://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_runs_the_bridge_on_the_host() {
        let cmd = ssh_command("ops@web1", Some(Path::new("/run/k.sock")));
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-T", "--", "ops@web1", "kmodctl", "--socket", "/run/k.sock", "bridge"]);
        let cmd = ssh_command("web1", None);
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-T", "--", "web1", "kmodctl", "bridge"]);
    }
}
