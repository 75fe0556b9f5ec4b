//! What `make install` lays out for operators: stripped programs with their debug info in
//! separate files under PREFIX/lib/debug, man pages (the daemon in section 8), completions and
//! the systemd units. Checks the prefix `make test` installs into (`KMODLIKE_TEST_PREFIX`);
//! skipped, saying so, when it is not set (a plain `cargo test`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn installed_prefix() -> Option<PathBuf> {
    match std::env::var_os("KMODLIKE_TEST_PREFIX") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "SKIPPED: KMODLIKE_TEST_PREFIX is not set; `make test` sets it after `make install \
                 PREFIX=target/test-prefix`"
            );
            None
        }
    }
}

/// The names of the ELF sections of `file`, from `readelf -S -W`.
fn sections(file: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-S").arg("-W").arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "readelf {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(']').nth(1))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn programs_are_stripped_and_their_debug_info_is_kept_apart() {
    let Some(prefix) = installed_prefix() else { return };
    for rel in
        ["bin/kmodlike", "bin/kmodctl", "libexec/kmodlike/kmodlike-probe", "lib/libmodule.so.1"]
    {
        let file = prefix.join(rel);
        let s = sections(&file);
        assert!(!s.iter().any(|n| n == ".debug_info"), "{rel} still has .debug_info: {s:?}");
        assert!(s.iter().any(|n| n == ".gnu_debuglink"), "{rel} has no .gnu_debuglink: {s:?}");
        assert!(s.iter().any(|n| n == ".symtab"), "{rel} lost its symbol table: {s:?}");
        let debug = PathBuf::from(format!(
            "{}/lib/debug{}/{rel}.debug",
            prefix.display(),
            prefix.display()
        ));
        let d = sections(&debug);
        assert!(d.iter().any(|n| n == ".debug_info"), "{} has no debug info", debug.display());
    }
    // The stripped programs still run.
    let out = Command::new(prefix.join("bin/kmodctl")).arg("--version").output().unwrap();
    assert!(out.status.success());
}

#[test]
fn man_pages_completions_and_units_are_installed() {
    let Some(prefix) = installed_prefix() else { return };
    for rel in [
        "share/man/man1/kmodctl.1",
        "share/man/man1/kmodctl-crashes.1",
        "share/man/man8/kmodlike.8",
        "share/bash-completion/completions/kmodctl",
        "share/zsh/site-functions/_kmodctl",
        "share/fish/vendor_completions.d/kmodctl.fish",
        "lib/systemd/system/kmodlike.service",
        "lib/systemd/system/kmodlike.socket",
    ] {
        assert!(prefix.join(rel).exists(), "make install did not install {rel}");
    }
    assert!(
        !prefix.join("share/man/man1/kmodlike.1").exists(),
        "the daemon's page is in section 8"
    );
    assert!(!prefix.join("share/man/man1/kmodctl-help.1").exists());
    let service =
        std::fs::read_to_string(prefix.join("lib/systemd/system/kmodlike.service")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={}/bin/kmodlike", prefix.display())),
        "the unit runs the installed daemon: {service}"
    );
}
