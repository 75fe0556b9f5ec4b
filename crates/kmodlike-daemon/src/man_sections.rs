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
            ("3", "The daemon cannot be used: the socket is missing, is not a socket, is not permitted to you (the message names the group to join), is served by another uid, or the daemon refused or closed the connection, or it answered neither the request within --timeout nor a ping on a new connection after it."),
            ("4", "No reply within --timeout, but the daemon answers ping on a new connection: the request (a call into a module) may still be running; see kmodctl calls, raise --timeout, or bound the call with --deadline."),
            ("5", "The call ran past its deadline (call --deadline, else the daemon's --call-timeout) or was interrupted by unload --force: the daemon interrupted it, unloaded the module and printed where it was (TimedOut)."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[
            ("KMODLIKE_SOCKET", "The daemon's socket when --socket is not given."),
            ("KMODCTL_SSH", "With --host: the ssh command to run instead of ssh (split on whitespace, e.g. \"ssh -o BatchMode=yes\")."),
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
            ("--json", "Every outcome is one JSON document on standard output: a reply's parameters as io.kmodlike.Loader defines them, or for a failure {\"error\": NAME, \"parameters\": {...}, \"message\": TEXT}, where NAME is an io.kmodlike.Loader error or one of kmodctl.Unreachable, kmodctl.NotASocket, kmodctl.PermissionDenied, kmodctl.Untrusted, kmodctl.ConnectionFailed, kmodctl.NoReply (no reply within --timeout, the daemon answers ping: exit 4), kmodctl.ProtocolError, kmodctl.UsageError, kmodctl.Failed."),
            ("Paths", "A relative path (./x.so, ../m/x.so, or dir/x.so when that file exists) is resolved against kmodctl's working directory before it is sent; specs such as misc/hello are searched along the daemon's module path."),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            ("Load a module file from the current directory and call a function in it:", "$ kmodctl load ./crash.so\n$ kmodctl call crash crash"),
            ("The crashes of one module in the last ten minutes, as JSON:", "$ kmodctl --json crashes --module crash --since 10m"),
            ("A call that may hang: interrupt it after 2 s (exit 5 and where it was); list the calls running; remove a module with a stuck call:", "$ kmodctl call hang spin --deadline 2\n$ kmodctl calls\n$ kmodctl unload --force hang"),
            ("Follow events; ask another daemon:", "$ kmodctl monitor\n$ kmodctl --socket /tmp/other.sock status"),
            ("The names of the loaded modules, one a line (for scripts and shell completion):", "$ kmodctl list --names"),
            ("Another host, over ssh (ssh HOST kmodctl bridge):", "$ kmodctl --host ops@web1 list\n$ kmodctl --host web1 --json crashes"),
            ("Many hosts (see docs/fleet.md for Ansible and Salt):", "$ for h in web1 web2 web3; do kmodctl --host $h --json status; done"),
            ("Metrics for node_exporter's textfile collector:", "$ kmodctl metrics > /var/lib/node_exporter/kmodlike.prom.tmp && mv /var/lib/node_exporter/kmodlike.prom.tmp /var/lib/node_exporter/kmodlike.prom"),
            ("Change the module path, re-read the configuration:", "$ kmodctl path --set /opt/mods:/srv/mods\n$ kmodctl reload-config"),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[("", "kmodlike(8), kmodctl-call(1), kmodctl-crashes(1), kmodctl-load(1), kmodctl-monitor(1), kmodctl-bridge(1), kmodctl-metrics(1), kmodctl-path(1), kmodctl-reload-config(1), ssh(1), systemd.socket(5)")],
    },
];

const DAEMON: &[Section] = &[
    Section {
        title: "SIGNALS",
        items: &[
            ("SIGTERM, SIGINT", "Unload every module (module_fini runs, dependents first), remove the socket (unless systemd passed it) and exit 0. Calls still running 5 s after the signal are interrupted, each named in the log (module, function, thread). A second one exits at once with status 1."),
            ("SIGHUP", "Reload the configuration (kmodlike.toml and modules.d, as kmodctl reload-config does) and keep running; with systemd, RELOADING=1 then READY=1 are sent (systemctl reload kmodlike)."),
        ],
    },
    Section {
        title: "CONFIGURATION",
        items: &[
            ("kmodlike.toml", "Read from --config FILE, else /etc/kmodlike/kmodlike.toml when it exists. Keys (all optional): module_path (absolute directories, searched after --module-path), state_dir, probe, strict, max_connections, read_timeout, call_timeout (the default deadline of a Call), and [crash_loop] max_crashes, window_secs. Options given on the command line win. An unknown key or a bad value stops the start with FILE:LINE and the key."),
            ("modules.d/*.conf", "Next to kmodlike.toml, read in file-name order: one module a line (a spec or an absolute path), then options: required (the default: the start fails without it), optional (a failure only warns), isolated, seccomp (isolated, its process confined by the seccomp allow-list), timeout=SECS (the deadline of its calls, before call_timeout), crash-loop=N/SECS or crash-loop=off (its own quarantine policy). # and ; start comments. A module listed twice is an error naming both places."),
            ("Trust", "Each file must belong to root or the daemon's user and be writable by no one else: whoever can write it chooses the code the daemon runs."),
            ("Reload", "kmodctl reload-config or SIGHUP: the module path becomes --module-path then the file's, listed modules not loaded are loaded; a configuration that does not read changes nothing."),
        ],
    },
    Section {
        title: "STATE",
        items: &[
            ("", "The crash log, the quarantines and the taint history are kept in state.json under the state directory (--state-dir, else state_dir, else $STATE_DIRECTORY, else /var/lib/kmodlike), written atomically after every change, bounded to the newest 1,000 crashes and 1 MiB, and restored at start: kmodctl crashes shows earlier runs' crashes marked [previous run], and quarantines hold again. A corrupt file is kept aside as state.json.corrupt-TIME and the daemon starts empty."),
        ],
    },
    Section {
        title: "LOGGING",
        items: &[
            ("", "Under systemd (JOURNAL_STREAM names stderr) each event is one native journal record with MESSAGE, PRIORITY, a fixed MESSAGE_ID per kind of event, MODULE=, SIGNAL= and the event's other fields; a crash is one record with the whole report. On a pipe or file each line starts with its sd-daemon(3) priority (<3>, <4>, <6>, <7>); on a terminal, plain lines with times. Every request that changes state (Load, Unload, Reload, Clear, ClearTaint, SetModulePath, ReloadConfiguration) is logged with the caller's uid, pid and command name and the outcome. See docs/operations.md for the MESSAGE_IDs."),
        ],
    },
    Section {
        title: "METRICS",
        items: &[
            ("", "The socket also serves systemd's Varlink metrics interface io.systemd.Metrics (List, Describe): loads, unloads, calls, crashes (per module and signal), timeouts, quarantines, calls in flight, connections, taint and a call-latency histogram per module. kmodctl metrics prints them as OpenMetrics text."),
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
            ("STATE_DIRECTORY", "The state directory when neither --state-dir nor state_dir is given (systemd sets it for StateDirectory=)."),
            ("JOURNAL_STREAM", "Set by systemd when stderr is the journal: the log is then sent as native journal records."),
            ("KMODLIKE_JOURNAL_SOCKET", "For tests only: the datagram socket journal records are sent to instead of /run/systemd/journal/socket."),
        ],
    },
    Section {
        title: "FILES",
        items: &[
            ("/var/run/kmodlike.sock, /tmp/kmodlike.sock", "The default socket (named after the program), and its lock file with the suffix .lock."),
            ("PREFIX/lib/kmodlike/modules", "The built-in module directory (also ../lib/kmodlike/modules next to the program)."),
            ("PREFIX/libexec/kmodlike/kmodlike-probe", "The probe helper."),
            ("/etc/kmodlike/keys/*.pub", "Trusted minisign public keys (--trusted-keys); a module's signature is FILE.minisig next to it. The directory and keys must be owned by root and not writable by group or others."),
            ("/etc/kmodlike/revoked", "SHA-256 digests of module files that never load (--revoked), one per line."),
            ("PREFIX/lib/systemd/system/kmodlike.service, kmodlike.socket", "The systemd units (hardened; see the comments in them)."),
            ("/etc/kmodlike/kmodlike.toml, /etc/kmodlike/modules.d/*.conf", "The configuration (see CONFIGURATION)."),
            ("/var/lib/kmodlike/state.json", "The persisted crash log, quarantines and taint history (see STATE)."),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            ("Serve /tmp/k.sock with two modules, the second one optional:", "$ kmodlike --socket /tmp/k.sock misc/hello --optional-module misc/dltest"),
            ("Under systemd, with the socket unit:", "$ systemctl enable --now kmodlike.socket\n$ systemctl reload kmodlike"),
            ("A module list, then a reload:", "$ echo 'misc/hello optional' > /etc/kmodlike/modules.d/50-hello.conf\n$ kmodctl reload-config"),
            ("Every crash report in the journal:", "$ journalctl -u kmodlike MESSAGE_ID=9b43da6acc80435ab336db98fac81d52"),
            ("Load only modules signed by a trusted key, and let the group ops read and call:", "$ minisign -S -s vendor.key -m hello.so\n$ kmodlike --signature-policy enforce --socket-group ops --socket-mode 0660 misc/hello"),
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
