//! Command-line definitions of both programs, `kmodlike` (the daemon) and `kmodctl` (its
//! client). They live in the library so that the man pages and shell completions are generated
//! from the very definitions the programs parse with (see [`crate::generate`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kmodlike`: host modules, survive their crashes, serve the control socket.
#[derive(Debug, Parser)]
#[command(
    name = "kmodlike",
    version,
    about = "Host shared-library modules, survive modules that crash, serve a Varlink control socket",
    long_about = "Runs in the foreground: loads each MODULE given (a path or a spec such as \
misc/hello), calls its mod_hello() when it exports one, and serves the control socket until \
SIGINT or SIGTERM, which unload every module (module_fini runs, dependents first), remove the \
socket and exit 0; calls still running 5 s after the signal are interrupted and named in the log \
(module, function, thread). SIGHUP reloads the configuration (kmodlike.toml, modules.d) and keeps \
running. A module named on the command line that cannot be loaded stops the start (exit 1); \
modules given with --optional-module only warn. A module that raises a fatal signal, or whose \
call runs past its deadline (--call-timeout), is unloaded and reported; the daemon keeps running. \
Drive it with kmodctl or any Varlink client (interface io.kmodlike.Loader).",
    after_help = "Socket path: --socket, else $KMODLIKE_SOCKET, else /var/run/<program name>.sock \
when /var/run is writable, else /tmp/<program name>.sock. Logs go to stderr; set RUST_LOG \
(e.g. RUST_LOG=debug) to change the level. Configuration: /etc/kmodlike/kmodlike.toml (or \
--config) and modules.d/*.conf; state: --state-dir; see kmodlike(8).

\
Access: root and the daemon's own uid may do everything. Members of --socket-group may read \
(list, info, crashes, status, monitor) and call; they may load, unload, reload, clear and change \
the module path or the configuration only with --socket-group-may-load, which makes the group as \
strong as the daemon's user (a module runs with its privileges).

\
Trust: a module file and every directory above it must be owned by root or the daemon's uid and \
not writable by group or others, or it is refused (--allow-untrusted-paths loads it and taints). \
Signatures: FILE.minisig (minisign -S -m FILE) verified against --trusted-keys under \
--signature-policy; digests in --revoked never load. A lock file <socket>.lock owned by another \
uid is refused."
)]
pub struct DaemonArgs {
    /// Serve this socket path (default: see below).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Mode of the socket file, octal.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode_arg)]
    pub socket_mode: u32,

    /// Give the socket file to this group (name or number) and let its members read (list,
    /// info, crashes, status, monitor) and call module functions. They may not load or unload
    /// modules unless --socket-group-may-load is given.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Let the members of --socket-group load, unload and reload modules too. A module runs with
    /// the daemon's privileges: this makes the group as strong as the daemon's user (root).
    #[arg(long, requires = "socket_group")]
    pub socket_group_may_load: bool,

    /// Load modules whose file or a directory above it is owned by another user or writable by
    /// group or others, instead of refusing them. Each such load taints the daemon.
    #[arg(long)]
    pub allow_untrusted_paths: bool,

    /// The directory of trusted minisign public keys (*.pub). It and its keys must be owned by
    /// root (or the daemon's user) and not writable by group or others.
    #[arg(long, value_name = "DIR", default_value = kmodlike::trust::DEFAULT_TRUSTED_KEYS)]
    pub trusted_keys: PathBuf,

    /// What to do with a module that has no valid signature (FILE.minisig, made with
    /// `minisign -S -m FILE`) by a trusted key: off (do not check), warn (load, taint, report)
    /// or enforce (refuse). Default: warn when the key directory exists, else off. Enforce can
    /// be turned on at run time (kmodctl policy enforce) and never off.
    #[arg(long, value_name = "POLICY", value_parser = ["off", "warn", "enforce"])]
    pub signature_policy: Option<String>,

    /// The revocation list: SHA-256 digests of module files that must never load (one per
    /// line, sha256sum output works), whatever the signature policy. A missing file is an empty
    /// list.
    #[arg(long, value_name = "FILE", default_value = kmodlike::trust::DEFAULT_REVOKED)]
    pub revoked: PathBuf,

    /// Search modules in DIR (repeat for several), before $KMODLIKE_MODULE_PATH and the
    /// built-in default directories.
    #[arg(long = "module-path", value_name = "DIR")]
    pub module_path: Vec<PathBuf>,

    /// Do not load each module in a child process first (then a module that crashes in its
    /// constructor takes the daemon down with it).
    #[arg(long)]
    pub no_probe: bool,

    /// The probe helper program (default: $KMODLIKE_PROBE, else kmodlike-probe next to this
    /// program, else ../libexec/kmodlike/kmodlike-probe relative to it).
    #[arg(long, value_name = "PATH")]
    pub probe_helper: Option<PathBuf>,

    /// Refuse legacy modules (mod_hello only, no module interface).
    #[arg(long)]
    pub strict: bool,

    /// Serve at most N client connections at once; past it, the longest-idle one is closed.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,

    /// Quarantine a module after N crashes within the crash-loop window (0: never).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub crash_loop_max: u32,

    /// The crash-loop window, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub crash_loop_window: u64,

    /// A request must arrive whole within SECS of its first byte, or the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub read_timeout: f64,

    /// Read the configuration from FILE (default /etc/kmodlike/kmodlike.toml when it exists)
    /// and the module lists of modules.d/*.conf next to it. Options given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Keep the crash log, quarantines and taint history in DIR across restarts (default:
    /// $STATE_DIRECTORY when systemd sets it, else /var/lib/kmodlike).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Load SPEC at start too, but only warn when it cannot be loaded (repeat for several).
    #[arg(long = "optional-module", value_name = "SPEC")]
    pub optional_modules: Vec<String>,

    /// Interrupt a Call still running after SECS (the default deadline of every Call; a
    /// request's own timeout, `kmodctl call --deadline`, overrides it). 0: no deadline. The
    /// call returns TimedOut with a report of where it was, and the module is unloaded as
    /// after a crash. A Load's module_init runs under the same deadline (the module's
    /// modules.d timeout= first), and so does the probe child (at least 2 s): a module_init
    /// that never returns fails the load as hung.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = parse_seconds)]
    pub call_timeout: f64,

    /// Modules to load at start (paths or specs). Each is required: when one cannot be
    /// loaded the daemon exits with status 1 and never reports ready (see --optional-module).
    #[arg(value_name = "MODULE")]
    pub modules: Vec<String>,

    /// The ids of the options given on the command line (filled by
    /// [`DaemonArgs::parse_with_sources`]), which the configuration file does not override.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

impl DaemonArgs {
    /// Parse this process's arguments (exiting on a usage error, as `parse` does) and record
    /// which options were given, so that the configuration file fills only the others.
    pub fn parse_with_sources() -> DaemonArgs {
        use clap::{CommandFactory, FromArgMatches};
        let matches = DaemonArgs::command().get_matches();
        let mut args = DaemonArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        args.explicit = matches
            .ids()
            .filter(|id| {
                matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.as_str().to_owned())
            .collect();
        args
    }
}

/// A non-negative, finite number of seconds.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v <= u32::MAX as f64 => Ok(v),
        Ok(_) => Err(format!("{s}: expected seconds between 0 and {}", u32::MAX)),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// Seconds as a deadline: `None` for 0 (no deadline).
pub fn seconds_to_deadline(secs: f64) -> Option<std::time::Duration> {
    (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

fn parse_mode_arg(s: &str) -> Result<u32, String> {
    crate::socket::parse_mode(s)
}

/// `kmodctl`: control a running kmodlike daemon.
#[derive(Debug, Parser)]
#[command(
    name = "kmodctl",
    version,
    about = "Control a running kmodlike daemon: list, load, unload and call its modules",
    after_help = "Exit status: 0 ok, 1 the operation failed, 2 usage error, 3 the daemon cannot be \
used (not running, served by another uid, it refused the connection, or it answers neither the \
request nor a ping), 4 no reply within --timeout although the daemon answers ping (the call may \
still be running: see `kmodctl calls`), 5 the call ran past its deadline and was interrupted \
(TimedOut; the module was unloaded).\n\
Socket: --socket, else $KMODLIKE_SOCKET, else /var/run/kmodlike.sock if it exists, else \
/tmp/kmodlike.sock. With --json, the output is the reply's parameters as defined in the \
interface io.kmodlike.Loader (see `kmodctl describe`), one JSON document per reply."
)]
pub struct CtlArgs {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print the reply as JSON (the stable schema of io.kmodlike.Loader) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Give up when the daemon has not replied within SECS (0: wait for ever; monitor always
    /// waits).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60.0)]
    pub timeout: f64,

    /// Run the command against the daemon on HOST, over `ssh [user@]HOST kmodctl bridge`
    /// (--socket then names the socket on HOST; $KMODCTL_SSH replaces ssh).
    #[arg(long, global = true, value_name = "[USER@]HOST")]
    pub host: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The kmodctl commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List the loaded modules (lsmod style: Module, Size, Used by, State).
    #[command(visible_alias = "lsmod")]
    List {
        /// Print only the names, one a line (for scripts and shell completion).
        #[arg(long)]
        names: bool,
    },
    /// Load a module: a path, or a spec such as misc/hello searched along the module path.
    #[command(visible_alias = "insmod")]
    Load {
        /// Path or spec.
        #[arg(value_name = "SPEC")]
        spec: String,
        /// Do not call the module's mod_hello() after loading it.
        #[arg(long)]
        no_hello: bool,
        /// Run it in a kmodlike-host process of its own (the isolation tier): only `invoke`
        /// reaches its code, and mod_hello() is not called.
        #[arg(long)]
        isolated: bool,
        /// Isolated (implied), and its process confined by the seccomp allow-list for
        /// computation modules: a system call outside it stops the module (SIGSYS).
        #[arg(long)]
        seccomp: bool,
    },
    /// Unload a module (module_fini runs). Refused while other modules depend on it.
    #[command(visible_alias = "rmmod")]
    Unload {
        /// The module's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Unload even if its module_can_unload() asks to be kept, and interrupt calls still
        /// running in it first (as their deadline would). Never a module others depend on.
        #[arg(long, short)]
        force: bool,
        /// Wait (up to 30 s) for calls still running in it instead of failing at once.
        #[arg(long, short)]
        wait: bool,
    },
    /// Unload a module and load the same file again (fresh state).
    Reload {
        /// The module's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Lift a module's crash-loop quarantine, or with --taint acknowledge the daemon's taint.
    #[command(
        long_about = "Lift a module's crash-loop quarantine (NAME), or with --taint acknowledge \
the daemon's taint: the taint verdict is cleared (a later crash may taint it again) and the \
acknowledgement, with your uid and pid and the time, is kept in `kmodctl status`."
    )]
    Clear {
        /// The module's name.
        #[arg(value_name = "NAME", required_unless_present = "taint", conflicts_with = "taint")]
        name: Option<String>,
        /// Acknowledge and clear the daemon's taint instead.
        #[arg(long)]
        taint: bool,
    },
    /// Set the daemon's signature policy for the loads that follow: off, warn or enforce.
    /// Enforce cannot be turned off again until the daemon restarts.
    SignaturePolicy {
        /// The policy.
        #[arg(value_name = "POLICY", value_parser = ["off", "warn", "enforce"])]
        policy: String,
    },
    /// Show a loaded module, or a module file's metadata without loading it.
    #[command(visible_alias = "modinfo")]
    Info {
        /// A loaded module's name, a file path, or a spec.
        #[arg(value_name = "NAME|FILE")]
        module: String,
    },
    /// Invoke a module's message entry point (declared with MODULE_INVOKE), in either tier.
    #[command(
        long_about = "Invoke a module's message entry point: a module_invoke_fn the module \
declares with MODULE_INVOKE (C) or kmodlike_module::invoke! (Rust). The same call reaches a module \
in the daemon's process and an isolated one (load --isolated). The input comes from --input FILE, \
or standard input with --input -, or is empty; the output bytes are written to standard output \
as they are, and the function's return value to standard error (with --json: both in the reply, \
the output in base64)."
    )]
    Invoke {
        /// The module's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The declared function.
        #[arg(value_name = "SYMBOL")]
        symbol: String,
        /// Read the input from FILE, or from standard input with `-`.
        #[arg(long, value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Call a function a module exports, under the crash guard.
    #[command(
        long_about = "Call a function a module exports, under the crash guard. When the call \
crashes, the crash report is printed on stderr, followed by the function the call ran (called:) \
and the faulting thread's backtrace, innermost first, one frame a line like gdb's bt: \
`#0 0x7f3572ae342e crash_now+0x12 (in crash_segv.so +0x142e)`; a frame found without unwind \
information is marked [guessed]. With --json, the report's frames, called and probe_pid fields \
carry the same."
    )]
    Call {
        /// The module's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The exported function.
        #[arg(value_name = "SYMBOL")]
        symbol: String,
        /// Pass this int argument (the function is int f(int)).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        arg: Option<i32>,
        /// What the function returns (default: void, or int with --arg).
        #[arg(long, value_enum, value_name = "TYPE")]
        returns: Option<Returns>,
        /// Interrupt the call when it runs longer than SECONDS (default: the daemon's
        /// --call-timeout; 0: no deadline). A call interrupted prints where it was and exits
        /// with status 5; the module is unloaded. kmodctl waits for the reply at least
        /// SECONDS + 5 s, whatever --timeout says.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        deadline: Option<f64>,
    },
    /// List the calls running in modules now: module, function, thread, since when, deadline.
    #[command(
        long_about = "List the calls running in modules now, oldest first: the module, the \
function (when it has a name), the kernel thread running it, how long it has run and when its \
deadline falls. A call that does not return shows here; `kmodctl unload --force NAME` \
interrupts it."
    )]
    Calls,
    /// Show the crash log, newest first, each report followed by its backtrace.
    #[command(
        long_about = "Show the crash log, newest first. Each report is followed by the function \
the crashed call ran (called:), the probe child's pid for a crash seen by the probe (probe:), and \
the backtrace, innermost first, like gdb's bt: `#N PC SYMBOL+OFFSET (in OBJECT +OFFSET)`, ?? for \
an unknown symbol, [guessed] for a frame found without unwind information. The time of each \
crash is shown for a person on a terminal (UTC, and how long ago) and in RFC 3339 otherwise."
    )]
    Crashes {
        /// Only the crashes of this module.
        #[arg(long, value_name = "NAME")]
        module: Option<String>,
        /// Only crashes at or after TIME: RFC 3339 (2026-12-01T09:00:00Z) or an age (10m, 2h).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Show the daemon's state: uptime, taint and its acknowledgements, counts.
    Status,
    /// Print load, unload, crash and slow-call events as they happen.
    #[command(
        long_about = "Print load, unload and crash events as they happen, one line each; a crash \
is followed by the function the call ran and its backtrace, innermost first, indented (as \
`kmodctl crashes` prints them). A call past its soft deadline prints a call_slow line, and one \
interrupted at its deadline a call_timed_out line followed by where it was."
    )]
    Monitor {
        /// Exit after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print the daemon's metrics as OpenMetrics text (for a node_exporter textfile collector).
    #[command(
        long_about = "Print the daemon's metrics as OpenMetrics text: loads, unloads, calls, \
crashes (per module and signal), timeouts and quarantines per module, calls in flight, \
connections, taint, and a call-latency histogram per module. The daemon serves them through \
systemd's Varlink metrics interface, io.systemd.Metrics (List, Describe), on its socket; with \
--json, the List replies are printed as they came. For node_exporter: \
`kmodctl metrics > /var/lib/node_exporter/kmodlike.prom.$$ && mv ... kmodlike.prom`."
    )]
    Metrics,
    /// Make the daemon read its configuration again (as SIGHUP does).
    #[command(
        name = "reload-config",
        long_about = "Make the daemon read kmodlike.toml and modules.d again (as SIGHUP does): the \
module path is updated and newly listed modules are loaded; modules no longer listed stay loaded. \
When the configuration does not read, nothing changes and the error names the file, the line and \
the key."
    )]
    ReloadConfig,
    /// Show the directories the daemon searches for module specs, or replace them with --set.
    #[command(
        long_about = "Show the directories the daemon searches for module specs, in order (the \
configured ones, then $KMODLIKE_MODULE_PATH of the daemon, then the built-in directories), or \
replace the configured ones with --set DIR[:DIR...] until the daemon restarts or reloads its \
configuration. Relative directories are taken from the current directory. Loaded modules are \
not affected; dependencies already loaded keep satisfying their names."
    )]
    Path {
        /// Replace the configured directories (colon-separated).
        #[arg(long, value_name = "DIR[:DIR...]")]
        set: Option<String>,
    },
    /// Check that the daemon answers.
    Ping,
    /// Print the interface description (io.kmodlike.Loader) the daemon serves.
    Describe,
    /// Join stdin and stdout to the daemon's socket (the Varlink bridge convention), for
    /// `ssh HOST kmodctl bridge` and Varlink clients that run a bridge command.
    #[command(
        long_about = "Join stdin and stdout to the daemon's socket, byte for byte (the Varlink \
bridge convention): a Varlink client that runs a command instead of connecting to a socket \
(`varlinkctl --bridge`-style, or `kmodctl --host`) reaches the daemon through it, typically as \
`ssh HOST kmodctl bridge`. Ends when the daemon closes the connection, or when stdin ends and \
the daemon has answered. The socket's owner is checked first, as for every command."
    )]
    Bridge,
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// `kmodctl generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The output directory (a `share/` tree: man/man1, man/man8, bash-completion, zsh, fish).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The return type of a called function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Returns {
    /// Returns nothing.
    Void,
    /// Returns a C int.
    Int,
}

impl CtlCommand {
    /// The `Call` signature for `--arg`/`--returns`, or a usage error.
    pub fn call_signature(
        arg: Option<i32>,
        returns: Option<Returns>,
    ) -> Result<&'static str, String> {
        match (arg, returns) {
            (Some(_), Some(Returns::Void)) => {
                Err("--arg needs an int(int) function: use --returns int or leave it out".into())
            }
            (Some(_), _) => Ok("int(int)"),
            (None, Some(Returns::Int)) => Ok("int()"),
            (None, _) => Ok("void()"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        DaemonArgs::command().debug_assert();
        CtlArgs::command().debug_assert();
    }

    #[test]
    fn daemon_defaults_and_repeated_module_path() {
        let a = DaemonArgs::try_parse_from([
            "kmodlike",
            "--module-path",
            "/a",
            "--module-path",
            "/b",
            "--socket-mode",
            "0660",
            "x.so",
            "misc/y",
        ])
        .unwrap();
        assert_eq!(a.module_path, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(a.socket_mode, 0o660);
        assert_eq!(a.modules, ["x.so", "misc/y"]);
        assert_eq!(a.max_connections, 64);
        assert!(!a.no_probe);
        assert_eq!(a.crash_loop_max, 5);
        assert!(DaemonArgs::try_parse_from(["kmodlike", "--socket-mode", "999"]).is_err());
        assert!(DaemonArgs::try_parse_from(["kmodlike", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let a = CtlArgs::try_parse_from(["kmodctl", "list", "--json", "--socket", "/s"]).unwrap();
        assert!(a.json);
        assert_eq!(a.socket.as_deref(), Some(std::path::Path::new("/s")));
        let a = CtlArgs::try_parse_from(["kmodctl", "--json", "call", "m", "f", "--arg", "-3"])
            .unwrap();
        match a.command {
            CtlCommand::Call { arg: Some(-3), returns: None, .. } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clear_takes_a_name_or_taint() {
        let a = CtlArgs::try_parse_from(["kmodctl", "clear", "--taint"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Clear { name: None, taint: true }));
        let a = CtlArgs::try_parse_from(["kmodctl", "clear", "m"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Clear { name: Some(n), taint: false } if n == "m"));
        assert!(CtlArgs::try_parse_from(["kmodctl", "clear"]).is_err());
        assert!(CtlArgs::try_parse_from(["kmodctl", "clear", "m", "--taint"]).is_err());
    }

    #[test]
    fn call_signature_follows_arg_and_returns() {
        assert_eq!(CtlCommand::call_signature(None, None), Ok("void()"));
        assert_eq!(CtlCommand::call_signature(None, Some(Returns::Int)), Ok("int()"));
        assert_eq!(CtlCommand::call_signature(Some(1), None), Ok("int(int)"));
        assert_eq!(CtlCommand::call_signature(Some(1), Some(Returns::Int)), Ok("int(int)"));
        assert!(CtlCommand::call_signature(Some(1), Some(Returns::Void)).is_err());
    }

    #[test]
    fn deadlines_are_seconds_and_zero_means_none() {
        let a = DaemonArgs::try_parse_from(["kmodlike"]).unwrap();
        assert_eq!(seconds_to_deadline(a.call_timeout), Some(std::time::Duration::from_secs(30)));
        let a = DaemonArgs::try_parse_from(["kmodlike", "--call-timeout", "0"]).unwrap();
        assert_eq!(seconds_to_deadline(a.call_timeout), None);
        assert!(DaemonArgs::try_parse_from(["kmodlike", "--call-timeout", "-1"]).is_err());
        assert!(DaemonArgs::try_parse_from(["kmodlike", "--call-timeout", "inf"]).is_err());
        let a =
            CtlArgs::try_parse_from(["kmodctl", "call", "m", "f", "--deadline", "2.5"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Call { deadline: Some(d), .. } if d == 2.5));
        assert!(CtlArgs::try_parse_from(["kmodctl", "call", "m", "f", "--deadline", "x"]).is_err());
        assert!(matches!(
            CtlArgs::try_parse_from(["kmodctl", "calls"]).unwrap().command,
            CtlCommand::Calls
        ));
    }
}
