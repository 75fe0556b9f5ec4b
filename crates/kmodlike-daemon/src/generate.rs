//! Man pages and shell completions, generated from the clap definitions in [`crate::cli`].
//!
//! `kmodctl generate --out DIR` writes a `share/`-style tree, ready for `make install`:
//!
//! ```text
//! DIR/man/man1/kmodctl.1  DIR/man/man1/kmodctl-<command>.1  DIR/man/man8/kmodlike.8
//! DIR/bash-completion/completions/{kmodctl,kmodlike}
//! DIR/zsh/site-functions/{_kmodctl,_kmodlike}
//! DIR/fish/vendor_completions.d/{kmodctl,kmodlike}.fish
//! ```
//!
//! The pages add EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and SEE ALSO
//! ([`crate::man_sections`]) to what clap knows; hidden commands and clap's `help` command get
//! neither a page nor a completion; kmodctl's completions offer loaded module names
//! ([`crate::module_completion`]).

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::cli::{CtlArgs, DaemonArgs};
use crate::man_sections::{kmodctl_sections, kmodlike_sections};
use crate::module_completion::{bash_addition, fish_addition, zsh_with_modules};

/// Write every man page and completion file under `out`; returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let ctl = public(CtlArgs::command());
    let daemon = public(DaemonArgs::command());
    write_man_pages(ctl.clone(), "1", &kmodctl_sections(), &out.join("man/man1"), &mut written)?;
    write_man_pages(
        daemon.clone(),
        "8",
        &kmodlike_sections(),
        &out.join("man/man8"),
        &mut written,
    )?;
    write_completions(ctl, out, &mut written)?;
    write_completions(daemon, out, &mut written)?;
    Ok(written)
}

/// `cmd` as users see it: without hidden subcommands (`generate`) and without clap's `help`
/// subcommand (`--help` stays), so that neither pages nor completions mention them.
fn public(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let hidden: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect();
    if hidden.is_empty() {
        return cmd;
    }
    // clap cannot remove a subcommand: rebuild the command with the visible ones.
    let visible: Vec<Command> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let mut rebuilt = Command::new(cmd.get_name().to_owned())
        .disable_help_subcommand(true)
        .subcommand_required(cmd.is_subcommand_required_set())
        .args(
            cmd.get_arguments()
                .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
                .cloned(),
        )
        .subcommands(visible);
    if let Some(v) = cmd.get_version() {
        rebuilt = rebuilt.version(v.to_owned());
    }
    if let Some(a) = cmd.get_about() {
        rebuilt = rebuilt.about(a.clone());
    }
    if let Some(a) = cmd.get_long_about() {
        rebuilt = rebuilt.long_about(a.clone());
    }
    if let Some(a) = cmd.get_after_help() {
        rebuilt = rebuilt.after_help(a.clone());
    }
    rebuilt.build();
    rebuilt
}

fn render_page(cmd: Command, section: &str, extra: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).section(section).render(&mut buf)?;
    buf.extend_from_slice(extra.as_bytes());
    Ok(buf)
}

fn write_man_pages(
    cmd: Command,
    section: &str,
    extra: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_owned();
    let file = dir.join(format!("{name}.{section}"));
    std::fs::write(&file, render_page(cmd.clone(), section, extra)?)?;
    written.push(file);
    // One page per subcommand, as git and cargo do (`man kmodctl-call`).
    for sub in cmd.get_subcommands() {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().name(sub_name.clone()).bin_name(format!("{name} {}", sub.get_name()));
        let see_also = format!(".SH \"SEE ALSO\"\n.PP\n{name}({section})\n");
        let file = dir.join(format!("{sub_name}.{section}"));
        std::fs::write(&file, render_page(sub, section, &see_also)?)?;
        written.push(file);
    }
    Ok(())
}

fn write_completions(mut cmd: Command, out: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
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
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if name == "kmodctl" {
            text = match shell {
                Shell::Bash => text + &bash_addition(),
                Shell::Zsh => zsh_with_modules(&text),
                Shell::Fish => text + &fish_addition(),
                _ => text,
            };
        }
        let file = dir.join(file_name);
        std::fs::write(&file, text)?;
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
            "man/man8/kmodlike.8",
            "bash-completion/completions/kmodctl",
            "zsh/site-functions/_kmodlike",
            "fish/vendor_completions.d/kmodctl.fish",
        ] {
            assert!(files.contains(&dir.path().join(rel)), "{rel} not written: {files:?}");
        }
        assert!(!dir.path().join("man/man1/kmodctl-generate.1").exists(), "hidden stays hidden");
        assert!(!dir.path().join("man/man1/kmodctl-help.1").exists(), "no page for clap's help");
        assert!(!dir.path().join("man/man1/kmodlike.1").exists(), "the daemon is in section 8");
        let man = std::fs::read_to_string(dir.path().join("man/man1/kmodctl.1")).unwrap();
        assert!(man.contains(".TH kmodctl 1"), "{man}");
        assert!(man.contains("unload"), "subcommands are listed");
        assert!(!man.contains("kmodctl\\-help") && !man.contains("generate"), "{man}");
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"] {
            assert!(man.contains(&format!(".SH \"{section}\"")), "kmodctl(1) lacks {section}");
        }
        assert!(man.contains("kmodlike(8)"), "{man}");
        let bash = std::fs::read_to_string(dir.path().join("bash-completion/completions/kmodctl"))
            .unwrap();
        assert!(bash.contains("--json") && bash.contains("reload"));
        assert!(!bash.contains("generate"), "the hidden command is not offered");
        assert!(bash.contains("list --names"), "module names are completed");
        let zsh = std::fs::read_to_string(dir.path().join("zsh/site-functions/_kmodctl")).unwrap();
        assert!(zsh.contains(":_kmodctl_module_names'") && !zsh.contains("generate"), "{zsh}");
        let fish =
            std::fs::read_to_string(dir.path().join("fish/vendor_completions.d/kmodctl.fish"))
                .unwrap();
        assert!(fish.contains("list --names") && !fish.contains("generate"), "{fish}");
        let daemon = std::fs::read_to_string(dir.path().join("man/man8/kmodlike.8")).unwrap();
        assert!(daemon.contains(".TH kmodlike 8"), "{daemon}");
        assert!(daemon.contains("socket\\-mode") || daemon.contains("socket-mode"), "{daemon}");
        for section in ["SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"] {
            assert!(daemon.contains(&format!(".SH \"{section}\"")), "kmodlike(8) lacks {section}");
        }
        assert!(daemon.contains("call\\-timeout"), "the deadline option is documented: {daemon}");
        assert!(man.contains("4 no reply within"), "every exit status is documented: {man}");
        assert!(man.contains("5 the call ran past its deadline"), "{man}");
        let calls = std::fs::read_to_string(dir.path().join("man/man1/kmodctl-calls.1")).unwrap();
        assert!(calls.contains("unload \\-\\-force"), "{calls}");
    }
}
