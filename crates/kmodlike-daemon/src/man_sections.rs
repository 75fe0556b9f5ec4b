//! The man page sections clap does not generate: EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and
//! SEE ALSO, for `kmodctl(1)` and `kmodlike(8)`, as roff text appended to clap_mangen's page.

/// One section: a title and its paragraphs; a paragraph starting with `$ ` is an example
/// command, set in a literal block.
struct Section {
    title: &'static str,
    items: &'static [(&'static str, &'static str)],
}

const CTL: &[Section] = &[
    Section {
        title: "EXIT STATUS",
        items: &[
            ("0", "Success. Also when standard output is a pipe whose reader went away (EPIPE, as in kmodctl list | head -1): kmodctl stops writing and exits quietly."),
            ("1", "The operation failed: the daemon replied with an error (the module crashed, is not loaded, a dependency is missing, ...), or standard output could not be written (e.g. a full disk; one line on stderr names the cause)."),
            ("2", "Usage error: bad arguments, or a bad --since time."),
            ("3", "The daemon cannot be used: the socket is missing, is not a socket, is not permitted to you (the message names the group to join), is served by another uid, or the daemon refused or closed the connection."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[
            ("KMODLIKE_SOCKET", "The daemon's socket when --socket is not given."),
            ("NO_COLOR", "When set and not empty, no colour even on a terminal."),
        ],
    },
    Section {
        title: "FILES",
        items: &[
            ("/var/run/kmodlike.sock", "The default socket (/run/kmodlike.sock with the systemd units)."),
            ("/tmp/kmodlike.sock", "The socket when /var/run/kmodlike.sock does not exist."),
        ],
    },
    Section {
        title: "OUTPUT",
        items: &[
            ("Times", "On a terminal, times are shown in UTC with their age (2026-12-01 09:31:05 UTC, 3m 12s ago); otherwise in RFC 3339 (2026-12-01T09:31:05Z)."),
            ("--json", "Every outcome is one JSON document on standard output: a reply's parameters as io.kmodlike.Loader defines them, or for a failure {\"error\": NAME, \"parameters\": {...}, \"message\": TEXT}, where NAME is an io.kmodlike.Loader error or one of kmodctl.Unreachable, kmodctl.NotASocket, kmodctl.PermissionDenied, kmodctl.Untrusted, kmodctl.ConnectionFailed, kmodctl.ProtocolError, kmodctl.UsageError, kmodctl.Failed."),
            ("Paths", "A relative path (./x.so, ../m/x.so, or dir/x.so when that file exists) is resolved against kmodctl's working directory before it is sent; specs such as misc/hello are searched along the daemon's module path."),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            ("Load a module file from the current directory and call a function in it:", "$ kmodctl load ./crash.so\n$ kmodctl call crash crash"),
            ("The crashes of one module in the last ten minutes, as JSON:", "$ kmodctl --json crashes --module crash --since 10m"),
            ("Follow events; ask another daemon:", "$ kmodctl monitor\n$ kmodctl --socket /tmp/other.sock status"),
            ("The names of the loaded modules, one a line (for scripts and shell completion):", "$ kmodctl list --names"),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[("", "kmodlike(8), kmodctl-call(1), kmodctl-crashes(1), kmodctl-load(1), kmodctl-monitor(1), systemd.socket(5)")],
    },
];

const DAEMON: &[Section] = &[
    Section {
        title: "SIGNALS",
        items: &[
            ("SIGTERM, SIGINT", "Unload every module (module_fini runs, dependents first), remove the socket (unless systemd passed it) and exit 0. A second one exits at once with status 1."),
            ("SIGHUP", "Reload the configuration (today: the module path) and keep running; with systemd, RELOADING=1 then READY=1 are sent (systemctl reload kmodlike)."),
        ],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            ("0", "A clean shutdown after SIGTERM or SIGINT."),
            ("1", "The start failed (the socket is taken or cannot be created, a module named on the command line cannot be loaded, systemd passed a connected socket), or a second SIGTERM."),
            ("2", "Usage error."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[
            ("KMODLIKE_SOCKET", "The socket to serve when --socket is not given."),
            ("KMODLIKE_MODULE_PATH", "Colon-separated module directories, searched after --module-path and before the built-in ones."),
            ("KMODLIKE_PROBE", "The probe helper program (see --probe-helper)."),
            ("RUST_LOG", "The log level and filter (default info), e.g. RUST_LOG=debug."),
            ("NO_COLOR", "No colour in the log even on a terminal."),
            ("LISTEN_FDS, LISTEN_PID", "Socket activation (systemd.socket(5)): the first passed socket is served; it must be a listening Unix stream socket (Accept=no). --socket is then ignored with a warning."),
            ("NOTIFY_SOCKET", "sd_notify(3): READY=1 once the modules named at start are loaded, STATUS= with the counts of modules, crashes and quarantines, RELOADING=1 on SIGHUP, STOPPING=1 at shutdown."),
            ("WATCHDOG_USEC, WATCHDOG_PID", "With WatchdogSec= in the unit: WATCHDOG=1 every half WATCHDOG_USEC."),
        ],
    },
    Section {
        title: "FILES",
        items: &[
            ("/var/run/kmodlike.sock, /tmp/kmodlike.sock", "The default socket (named after the program), and its lock file with the suffix .lock."),
            ("PREFIX/lib/kmodlike/modules", "The built-in module directory (also ../lib/kmodlike/modules next to the program)."),
            ("PREFIX/libexec/kmodlike/kmodlike-probe", "The probe helper."),
            ("PREFIX/lib/systemd/system/kmodlike.service, kmodlike.socket", "The systemd units (hardened; see the comments in them)."),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            ("Serve /tmp/k.sock with two modules, the second one optional:", "$ kmodlike --socket /tmp/k.sock misc/hello --optional-module misc/dltest"),
            ("Under systemd, with the socket unit:", "$ systemctl enable --now kmodlike.socket\n$ systemctl reload kmodlike"),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[("", "kmodctl(1), systemd.socket(5), systemd.service(5), sd_notify(3)")],
    },
];

fn escape(text: &str) -> String {
    let mut out = text.replace('\\', "\\\\").replace('-', "\\-");
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        out.push_str(&format!(".SH \"{}\"\n", s.title));
        for (term, text) in s.items {
            if let Some(commands) = text.strip_prefix("$ ") {
                out.push_str(&format!(".PP\n{}\n.PP\n.nf\n.RS 4\n", escape(term)));
                for line in commands.split("\n$ ") {
                    out.push_str(&format!("$ {}\n", escape(line)));
                }
                out.push_str(".RE\n.fi\n");
            } else if term.is_empty() {
                out.push_str(&format!(".PP\n{}\n", escape(text)));
            } else {
                out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(term), escape(text)));
            }
        }
    }
    out
}

/// The extra sections of `kmodctl(1)`.
pub fn kmodctl_sections() -> String {
    render(CTL)
}

/// The extra sections of `kmodlike(8)`.
pub fn kmodlike_sections() -> String {
    render(DAEMON)
}
