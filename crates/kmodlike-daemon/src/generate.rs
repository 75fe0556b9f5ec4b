//! Man pages and shell completions, generated from the clap definitions in [`crate::cli`].
//!
//! `kmodctl generate --out DIR` writes a `share/`-style tree, ready for `make install`:
//!
//! ```text
//! DIR/man/man1/kmodctl.1  DIR/man/man1/kmodctl-<command>.1  DIR/man/man1/kmodlike.1
//! DIR/bash-completion/completions/{kmodctl,kmodlike}
//! DIR/zsh/site-functions/{_kmodctl,_kmodlike}
//! DIR/fish/vendor_completions.d/{kmodctl,kmodlike}.fish
//! ```

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{CtlArgs, DaemonArgs};

/// Write every man page and completion file under `out`; returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for cmd in [CtlArgs::command(), DaemonArgs::command()] {
        write_man_pages(cmd.clone(), &out.join("man/man1"), &mut written)?;
        write_completions(cmd, out, &mut written)?;
    }
    Ok(written)
}

fn write_man_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let file = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&file, buf)?;
    written.push(file);
    // One page per subcommand, as git and cargo do (`man kmodctl-call`).
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().name(sub_name.clone()).bin_name(format!("{name} {}", sub.get_name()));
        let file = dir.join(format!("{sub_name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        std::fs::write(&file, buf)?;
        written.push(file);
    }
    Ok(())
}

fn write_completions(
    mut cmd: clap::Command,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    let targets = [
        (Shell::Bash, out.join("bash-completion/completions"), name.clone()),
        (Shell::Zsh, out.join("zsh/site-functions"), format!("_{name}")),
        (Shell::Fish, out.join("fish/vendor_completions.d"), format!("{name}.fish")),
    ];
    for (shell, dir, file_name) in targets {
        std::fs::create_dir_all(&dir)?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        let file = dir.join(file_name);
        std::fs::write(&file, buf)?;
        written.push(file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions_for_both_programs() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        for rel in [
            "man/man1/kmodctl.1",
            "man/man1/kmodctl-call.1",
            "man/man1/kmodlike.1",
            "bash-completion/completions/kmodctl",
            "zsh/site-functions/_kmodlike",
            "fish/vendor_completions.d/kmodctl.fish",
        ] {
            assert!(files.contains(&dir.path().join(rel)), "{rel} not written: {files:?}");
        }
        assert!(!dir.path().join("man/man1/kmodctl-generate.1").exists(), "hidden stays hidden");
        assert!(!dir.path().join("man/man1/kmodctl-help.1").exists(), "no page for clap's help");
        let man = std::fs::read_to_string(dir.path().join("man/man1/kmodctl.1")).unwrap();
        assert!(man.contains(".TH kmodctl"), "{man}");
        assert!(man.contains("unload"), "subcommands are listed");
        let bash = std::fs::read_to_string(dir.path().join("bash-completion/completions/kmodctl"))
            .unwrap();
        assert!(bash.contains("--json") && bash.contains("reload"));
        let daemon = std::fs::read_to_string(dir.path().join("man/man1/kmodlike.1")).unwrap();
        assert!(daemon.contains("socket\\-mode") || daemon.contains("socket-mode"), "{daemon}");
    }
}
