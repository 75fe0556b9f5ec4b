//! `kmodctl`: one command, one call to the daemon, one exit code.
//!
//! Exit codes: 0 ok; 1 the operation failed (an error reply); 2 usage (clap's own code); 3 the
//! daemon cannot be reached, is not trusted (served by another uid), refused the connection, or
//! went away mid-call; 4 no reply within `--timeout` although the daemon answers `Ping` on a new
//! connection (the request, a call into a module, may still be running); 5 the call ran past its
//! deadline and was interrupted (`TimedOut`).
//!
//! Output never panics: a reader that went away (EPIPE, `kmodctl list | head -0`) ends kmodctl
//! quietly with exit 0; any other write error (`> /dev/full`) is one line on stderr and exit 1
//! (see [`crate::stdout`]). With `--json` every outcome is one JSON document on stdout, errors
//! included: `{"error": NAME, "parameters": {...}, "message": TEXT}`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::cli::{CtlArgs, CtlCommand};
use crate::client::{ClientError, Connection};
use crate::render::{self, Style};
use crate::socket::{client_socket_path, SOCKET_ENV};
use crate::stdout::{write_stderr_line, write_stdout, WriteError};
use crate::times::{format_time, parse_since, TimeStyle};
use crate::varlink::types::{
    epoch_secs, CallReply, CallsReply, ClearTaintReply, CrashesReply, InfoReply, InvokeReply,
    ListReply, LoadReply, MonitorReply, PingReply, ReloadConfigurationReply, ReloadReply,
    SetModulePathReply, SetSignaturePolicyReply, StatusReply, UnloadReply,
};
use crate::varlink::{VarlinkError, INTERFACE};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Usage error.
pub const EXIT_USAGE: u8 = 2;
/// The daemon cannot be reached (or trusted).
pub const EXIT_UNREACHABLE: u8 = 3;
/// No reply within `--timeout`, but the daemon answers `Ping`: the request may still run.
pub const EXIT_NO_REPLY: u8 = 4;
/// The call ran past its deadline and was interrupted (the `TimedOut` error).
pub const EXIT_TIMED_OUT: u8 = 5;

/// Seconds kmodctl waits past a call's `--deadline` for the `TimedOut` reply.
const CALL_REPORT_MARGIN: f64 = 5.0;

/// Why a command did not succeed.
enum Failure {
    /// An error reply (exit 1; 3 for PermissionDenied).
    Reply(VarlinkError),
    /// An error reply with a message more precise than the generic one (exit 1).
    Explained(VarlinkError, String),
    /// The daemon could not be used (exit 3).
    Client(ClientError),
    /// A usage error found after parsing (exit 2).
    Usage(String),
    /// Something local failed (exit 1).
    Local(String),
    /// Standard output's reader went away: stop quietly (exit 0).
    OutputClosed,
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        match e {
            WriteError::Closed => Failure::OutputClosed,
            WriteError::Failed(_) => Failure::Local(e.to_string()),
        }
    }
}

/// `print!` that returns a [`Failure`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(&format!($($arg)*)).map_err(Failure::from)? };
}

/// `println!` that returns a [`Failure`] instead of panicking.
macro_rules! outln {
    () => { write_stdout("\n").map_err(Failure::from)? };
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        write_stdout(&line).map_err(Failure::from)?
    }};
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

/// Run kmodctl with parsed arguments.
pub fn run(args: CtlArgs) -> ExitCode {
    let socket =
        args.socket.clone().unwrap_or_else(|| client_socket_path(std::env::var_os(SOCKET_ENV)));
    let err_style = Style::new(render::use_colour(std::io::stderr().is_terminal()));
    let failure = match execute(&args, &socket) {
        Ok(()) => return ExitCode::from(EXIT_OK),
        Err(Failure::OutputClosed) => return ExitCode::from(EXIT_OK),
        Err(f) => f,
    };
    let (name, parameters, message, code) = match failure {
        Failure::Reply(e) => {
            let message = render::error_message(&e, &socket.display().to_string());
            let code = match e.short_name() {
                "PermissionDenied" => EXIT_UNREACHABLE,
                "TimedOut" => EXIT_TIMED_OUT,
                _ => EXIT_FAILED,
            };
            (e.name, Value::Object(e.parameters), message, code)
        }
        Failure::Explained(e, message) => {
            (e.name, Value::Object(e.parameters), message, EXIT_FAILED)
        }
        Failure::Client(ClientError::NoReply { path, timeout }) => {
            let (code, message) = after_no_reply(&path, timeout);
            let name =
                if code == EXIT_NO_REPLY { "kmodctl.NoReply" } else { "kmodctl.Unreachable" };
            let parameters = json!({
                "socket": path.display().to_string(),
                "timeout": timeout.as_secs_f64(),
            });
            (name.to_owned(), parameters, message, code)
        }
        Failure::Client(e) => {
            let (name, path) = client_error_name(&e);
            let parameters = json!({ "socket": path.display().to_string() });
            (name.to_owned(), parameters, e.to_string(), EXIT_UNREACHABLE)
        }
        Failure::Usage(msg) => ("kmodctl.UsageError".to_owned(), json!({}), msg, EXIT_USAGE),
        Failure::Local(msg) => ("kmodctl.Failed".to_owned(), json!({}), msg, EXIT_FAILED),
        Failure::OutputClosed => unreachable!("returned above"),
    };
    if args.json {
        let doc = json!({ "error": name, "parameters": parameters, "message": message });
        // Nothing more can be said when stdout itself is what failed.
        let _ =
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
    }
    write_stderr_line(&format!("{} {message}", err_style.red("kmodctl:")));
    ExitCode::from(code)
}

/// A command line clap refused (or `--help`/`--version`): clap's own output and exit status,
/// except that with `--json` somewhere on the line a usage error is also one JSON document on
/// stdout, as every other outcome is.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if json && !informational {
        let message = e.render().to_string();
        let message = message.trim().trim_start_matches("error: ").to_owned();
        let doc = json!({ "error": "kmodctl.UsageError", "parameters": {}, "message": message });
        let _ =
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
    }
    // clap prints to stdout (help) or stderr (errors) and ignores a failed write.
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK })
}

/// The `error` name `--json` prints for a failure that is not an error reply.
fn client_error_name(e: &ClientError) -> (&'static str, &Path) {
    use crate::connect_errors::ConnectProblem;
    match e {
        ClientError::Refused(ConnectProblem::NotASocket { path, .. }) => {
            ("kmodctl.NotASocket", path)
        }
        ClientError::Refused(ConnectProblem::Forbidden { path, .. }) => {
            ("kmodctl.PermissionDenied", path)
        }
        ClientError::Unreachable { path, .. } => ("kmodctl.Unreachable", path),
        ClientError::Untrusted { path, .. } => ("kmodctl.Untrusted", path),
        ClientError::NoReply { path, .. } => ("kmodctl.NoReply", path),
        ClientError::Connection { path, .. } => ("kmodctl.ConnectionFailed", path),
        ClientError::Protocol { path, .. } => ("kmodctl.ProtocolError", path),
    }
}

/// A module argument as the daemon should see it: a path relative to kmodctl's working
/// directory (`./x.so`, `../m/x.so`, or `dir/x.so` when that file exists here) is made absolute,
/// since the daemon has its own working directory. Specs (`misc/hello`, `hello`) and absolute
/// paths pass unchanged.
pub fn resolve_module_arg(arg: &str, cwd: &Path) -> String {
    let p = Path::new(arg);
    if p.is_absolute() || !arg.contains('/') {
        return arg.to_owned();
    }
    let explicit = arg.starts_with("./") || arg.starts_with("../");
    let here = cwd.join(p);
    if explicit || std::fs::symlink_metadata(&here).is_ok() {
        here.display().to_string()
    } else {
        arg.to_owned()
    }
}

fn module_arg(arg: &str) -> String {
    match std::env::current_dir() {
        Ok(cwd) => resolve_module_arg(arg, &cwd),
        Err(_) => arg.to_owned(),
    }
}

/// What to say, and the exit code, after no reply came within `timeout`: ask the daemon for a
/// `Ping` on a new connection, so that a daemon busy with this request (a call still running in
/// a module) is not reported unreachable.
fn after_no_reply(path: &Path, timeout: Duration) -> (u8, String) {
    let secs = timeout.as_secs_f64();
    let ping = Connection::connect(path, Some(timeout))
        .and_then(|mut c| c.call(&method("Ping"), json!({})));
    match ping {
        Ok(Ok(_)) => (
            EXIT_NO_REPLY,
            format!(
                "no reply within {secs:.1} s; the daemon answers ping, the call may still be \
                 running (see `kmodctl calls`; raise --timeout, or bound a call with --deadline)"
            ),
        ),
        Ok(Err(e)) => (
            EXIT_UNREACHABLE,
            format!("no reply within {secs:.1} s, and the daemon refuses ping: {e}"),
        ),
        Err(e) => (
            EXIT_UNREACHABLE,
            format!("no reply within {secs:.1} s, and the daemon does not answer ping either: {e}"),
        ),
    }
}

fn method(name: &str) -> String {
    format!("{INTERFACE}.{name}")
}

/// Call and decode the reply into `T`; with `--json`, print the reply's parameters as they came.
fn call<T: DeserializeOwned>(
    args: &CtlArgs,
    conn: &mut Connection,
    name: &str,
    params: Value,
) -> Result<T, Failure> {
    let reply = conn.call(&method(name), params)?.map_err(Failure::Reply)?;
    if args.json {
        print_json(&reply)?;
    }
    decode(conn, reply)
}

/// Call a method without parameters and decode its reply, printing nothing.
fn call_quiet<T: DeserializeOwned>(conn: &mut Connection, name: &str) -> Result<T, Failure> {
    let reply = conn.call(&method(name), json!({}))?.map_err(Failure::Reply)?;
    decode(conn, reply)
}

fn decode<T: DeserializeOwned>(conn: &Connection, reply: Map<String, Value>) -> Result<T, Failure> {
    serde_json::from_value(Value::Object(reply)).map_err(|e| {
        Failure::Client(ClientError::Protocol {
            path: conn.path().to_owned(),
            detail: format!("unexpected reply: {e}"),
        })
    })
}

fn print_json(v: &Map<String, Value>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    outln!("{text}");
    Ok(())
}

fn execute(args: &CtlArgs, socket: &Path) -> Result<(), Failure> {
    if let CtlCommand::Generate(g) = &args.command {
        let files = crate::generate::generate(&g.out)
            .map_err(|e| Failure::Local(format!("cannot write into {}: {e}", g.out.display())))?;
        for f in files {
            outln!("{}", f.display());
        }
        return Ok(());
    }
    let signature = match &args.command {
        CtlCommand::Call { arg, returns, .. } => {
            Some(CtlCommand::call_signature(*arg, *returns).map_err(Failure::Usage)?)
        }
        _ => None,
    };
    if let CtlCommand::Bridge = &args.command {
        if args.host.is_some() {
            return Err(Failure::Usage("bridge runs on the daemon's host: drop --host".into()));
        }
        return crate::bridge::run_bridge(socket).map_err(Failure::Client);
    }
    let mut timeout = (args.timeout > 0.0).then(|| Duration::from_secs_f64(args.timeout));
    // A call given a deadline past --timeout is waited for: its answer, TimedOut at worst,
    // comes within the deadline (plus the time to write the report).
    if let (CtlCommand::Call { deadline: Some(d), .. }, Some(t)) = (&args.command, timeout) {
        if *d > 0.0 {
            timeout = Some(t.max(Duration::from_secs_f64(d + CALL_REPORT_MARGIN)));
        }
    }
    let mut conn = match &args.host {
        Some(host) => Connection::over_bridge(
            &mut crate::bridge::ssh_command(host, args.socket.as_deref()),
            crate::bridge::host_label(host),
            timeout,
        )?,
        None => Connection::connect(socket, timeout)?,
    };
    let style = Style::new(render::use_colour(std::io::stdout().is_terminal()));
    let time_style = TimeStyle::for_terminal(std::io::stdout().is_terminal());
    let text = !args.json;
    match &args.command {
        CtlCommand::List { names } => {
            let r: ListReply = call(args, &mut conn, "List", json!({}))?;
            if text && *names {
                for m in &r.modules {
                    outln!("{}", m.name);
                }
            } else if text {
                out!("{}", render::module_table(&r.modules, style));
            }
        }
        CtlCommand::Load { spec, no_hello, isolated, seccomp } => {
            let spec = module_arg(spec);
            let mut params = json!({ "spec": spec, "hello": !no_hello });
            if *isolated || *seccomp {
                params["isolated"] = json!(true);
            }
            if *seccomp {
                params["seccomp"] = json!(true);
            }
            let r: LoadReply = call(args, &mut conn, "Load", params)?;
            if text {
                let m = &r.module;
                if r.already_loaded {
                    outln!("module {} is already loaded from {}", m.name, m.path);
                } else {
                    outln!("loaded module {} from {}", m.name, m.path);
                }
                if r.hello_called {
                    outln!("called {}'s mod_hello()", m.name);
                }
            }
        }
        CtlCommand::Unload { name, force, wait } => {
            let r: UnloadReply = call(
                args,
                &mut conn,
                "Unload",
                json!({ "module": name, "force": force, "wait": wait }),
            )?;
            if text {
                if let Some(n @ 1..) = r.interrupted {
                    outln!("interrupted {n} call(s) running in module {name}");
                }
                outln!("unloaded module {name}");
            }
        }
        CtlCommand::Reload { name } => {
            let r: ReloadReply = call(args, &mut conn, "Reload", json!({ "module": name }))?;
            if text {
                outln!(
                    "reloaded module {} from {} (instance {})",
                    name,
                    r.module.path,
                    r.module.id
                );
            }
        }
        CtlCommand::Clear { taint: true, .. } => {
            let r: ClearTaintReply = call(args, &mut conn, "ClearTaint", json!({}))?;
            if text {
                let a = &r.acknowledged;
                outln!(
                    "acknowledged and cleared the taint by module {}: {} (by {})",
                    a.taint.module,
                    a.taint.reason,
                    a.by
                );
            }
        }
        CtlCommand::Clear { name, .. } => {
            let name = name.as_deref().unwrap_or_default();
            let _: Map<String, Value> = call(args, &mut conn, "Clear", json!({ "module": name }))?;
            if text {
                outln!("cleared the quarantine of module {name}");
            }
        }
        CtlCommand::SignaturePolicy { policy } => {
            let r: SetSignaturePolicyReply =
                call(args, &mut conn, "SetSignaturePolicy", json!({ "policy": policy }))?;
            if text {
                println!("signature policy: {}", r.policy);
            }
        }
        CtlCommand::Info { module } => {
            let module = module_arg(module);
            let r: InfoReply = call(args, &mut conn, "Info", json!({ "module": module }))
                .map_err(|f| not_a_module_file(f, &module))?;
            if text {
                match (&r.loaded, &r.file) {
                    (Some(m), _) => out!("{}", render::module_block(m, style)),
                    (None, Some(f)) => {
                        // A bare name that is not loaded but has a file: a module that crashed.
                        let crash = if module.contains('/') {
                            None
                        } else {
                            last_crash(&mut conn, &module)?
                        };
                        if let Some(c) = &crash {
                            let when = format_time(c.time, time_style, SystemTime::now());
                            out!("{}", render::crashed_module_block(c, &when, style));
                        }
                        out!("{}", render::file_block(f));
                    }
                    (None, None) => {}
                }
            }
        }
        CtlCommand::Invoke { name, symbol, input } => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let bytes = match input.as_deref() {
                None => Vec::new(),
                Some(p) if p == Path::new("-") => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                        .map_err(|e| Failure::Local(format!("reading standard input: {e}")))?;
                    v
                }
                Some(p) => std::fs::read(p)
                    .map_err(|e| Failure::Local(format!("reading {}: {e}", p.display())))?,
            };
            let params = json!({ "module": name, "symbol": symbol, "input": b64.encode(&bytes) });
            let r: InvokeReply = call(args, &mut conn, "Invoke", params)?;
            if text {
                let out = b64.decode(&r.output).map_err(|e| {
                    Failure::Local(format!("the daemon's output is not base64: {e}"))
                })?;
                // The bytes as they are (not text); a closed pipe ends quietly.
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                match stdout.write_all(&out).and_then(|()| stdout.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        return Err(Failure::Local(format!("writing the output: {e}")));
                    }
                    _ => {}
                }
                write_stderr_line(&format!("{name}: {symbol}() returned {}", r.result));
            }
        }
        CtlCommand::Call { name, symbol, arg, deadline, .. } => {
            let mut params = json!({ "module": name, "symbol": symbol, "signature": signature });
            if let Some(a) = arg {
                params["arg"] = json!(a);
            }
            if let Some(secs) = deadline {
                params["timeout"] = json!(secs);
            }
            let r: CallReply = call(args, &mut conn, "Call", params)?;
            if text {
                let shown_arg = arg.map(|a| a.to_string()).unwrap_or_default();
                match r.result {
                    Some(v) => outln!("{name}: {symbol}({shown_arg}) returned {v}"),
                    None => outln!("{name}: {symbol}({shown_arg}) returned"),
                }
            }
        }
        CtlCommand::Calls => {
            let r: CallsReply = call(args, &mut conn, "Calls", json!({}))?;
            if text {
                out!("{}", render::calls_table(&r.calls, epoch_secs(SystemTime::now())));
            }
        }
        CtlCommand::Crashes { module, since } => {
            let now = SystemTime::now();
            let since = since.as_deref().map(|t| parse_since(t, now)).transpose();
            let since = since.map_err(Failure::Usage)?;
            let reply = conn.call(&method("Crashes"), json!({}))?.map_err(Failure::Reply)?;
            let mut r: CrashesReply = decode(&conn, reply)?;
            r.crashes.retain(|c| {
                module.as_ref().is_none_or(|m| &c.module == m) && since.is_none_or(|t| c.time >= t)
            });
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                if r.crashes.is_empty() {
                    outln!("{}", no_crashes_line(module.as_deref(), since.is_some()));
                }
                for (i, c) in r.crashes.iter().enumerate() {
                    if i > 0 {
                        outln!();
                    }
                    let when = format_time(c.time, time_style, now);
                    out!("{}", render::crash_block(c, &when));
                }
            }
        }
        CtlCommand::Status => {
            let r: StatusReply = call(args, &mut conn, "Status", json!({}))?;
            if text {
                let now = SystemTime::now();
                let when = |t: f64| format_time(t, time_style, now);
                out!("{}", render::status_block(&r, &socket.display().to_string(), &when));
            }
        }
        CtlCommand::Metrics => {
            let mut samples = Vec::new();
            conn.call_more("io.systemd.Metrics.List", json!({}), |p| {
                samples.push(Value::Object(p));
                true
            })?
            .map_err(Failure::Reply)?;
            if args.json {
                print_json(&Map::from_iter([("metrics".to_owned(), Value::Array(samples))]))?;
            } else {
                out!("{}", crate::metrics::openmetrics(&samples));
            }
        }
        CtlCommand::ReloadConfig => {
            let r: ReloadConfigurationReply =
                call(args, &mut conn, "ReloadConfiguration", json!({}))?;
            if text {
                outln!(
                    "configuration reloaded from {}; {} listed module(s) loaded",
                    r.config_file.as_deref().unwrap_or("(no file)"),
                    r.loaded.len()
                );
                for f in &r.failed {
                    outln!("failed: {f}");
                }
            }
        }
        CtlCommand::Path { set: None } => {
            let r: StatusReply = call_quiet(&mut conn, "Status")?;
            if args.json {
                print_json(&Map::from_iter([("module_path".to_owned(), json!(r.module_path))]))?;
            } else {
                for d in &r.module_path {
                    outln!("{d}");
                }
            }
        }
        CtlCommand::Path { set: Some(dirs) } => {
            // Resolved here: the daemon's working directory is not the caller's.
            let dirs: Vec<String> = std::env::split_paths(dirs)
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| std::path::absolute(&d).unwrap_or(d).display().to_string())
                .collect();
            let r: SetModulePathReply =
                call(args, &mut conn, "SetModulePath", json!({ "dirs": dirs }))?;
            if text {
                for d in &r.module_path {
                    outln!("{d}");
                }
            }
        }
        CtlCommand::Ping => {
            let r: PingReply = call(args, &mut conn, "Ping", json!({}))?;
            if text {
                outln!(
                    "kmodlike {} (pid {}) answers at {}",
                    r.version,
                    r.pid,
                    conn.path().display()
                );
            }
        }
        CtlCommand::Describe => {
            let r = conn
                .call(
                    "org.varlink.service.GetInterfaceDescription",
                    json!({ "interface": INTERFACE }),
                )?
                .map_err(Failure::Reply)?;
            if args.json {
                print_json(&r)?;
            } else {
                out!("{}", r.get("description").and_then(Value::as_str).unwrap_or_default());
            }
        }
        CtlCommand::Monitor { count } => monitor(args, conn, *count, time_style)?,
        CtlCommand::Generate(_) | CtlCommand::Bridge => unreachable!("handled above"),
    }
    Ok(())
}

/// The newest crash of `module` in the daemon's crash log.
fn last_crash(
    conn: &mut Connection,
    module: &str,
) -> Result<Option<crate::varlink::types::CrashReport>, Failure> {
    let reply = conn.call(&method("Crashes"), json!({}))?.map_err(Failure::Reply)?;
    let r: CrashesReply = decode(conn, reply)?;
    Ok(r.crashes.into_iter().find(|c| c.module == module))
}

/// `info FILE` reads a file without loading it: a file that cannot be read as a module is
/// "not a module file" (with the reason: not ELF, a directory, ...), never "cannot load".
fn not_a_module_file(f: Failure, subject: &str) -> Failure {
    match f {
        Failure::Reply(e) if e.short_name() == "LoadFailed" => {
            let path = e.param_str("path").unwrap_or(subject).to_owned();
            let detail = e.param_str("message").unwrap_or("?");
            let detail = detail.strip_prefix(&format!("{path}: ")).unwrap_or(detail).to_owned();
            Failure::Explained(e, format!("{path} is not a module file: {detail}"))
        }
        other => other,
    }
}

fn no_crashes_line(module: Option<&str>, since: bool) -> String {
    match (module, since) {
        (Some(m), true) => format!("no crashes of module {m} in that time"),
        (Some(m), false) => format!("no crashes of module {m}"),
        (None, true) => "no crashes in that time".to_owned(),
        (None, false) => "no crashes".to_owned(),
    }
}

fn monitor(
    args: &CtlArgs,
    conn: Connection,
    count: Option<u64>,
    time_style: TimeStyle,
) -> Result<(), Failure> {
    let mut conn = conn.without_timeout();
    let mut seen = 0u64;
    let mut decode_error = None;
    let mut write_error = None;
    let path = conn.path().to_owned();
    let result = conn.call_more(&method("Monitor"), json!({}), |params| {
        let reply: MonitorReply = match serde_json::from_value(Value::Object(params.clone())) {
            Ok(r) => r,
            Err(e) => {
                decode_error = Some(e.to_string());
                return false;
            }
        };
        let started = reply.event.kind == "started";
        if started && !args.json {
            // On stderr, so that stdout stays one line per event: tells a person (and a
            // script waiting for it) that events from now on will be seen.
            write_stderr_line(&format!("kmodctl: monitoring the events of {}", path.display()));
        }
        let line = if args.json {
            Some(Value::Object(params).to_string())
        } else {
            let when = format_time(reply.event.time, time_style, SystemTime::now());
            render::event_line(&reply.event, &when)
        };
        if let Some(line) = line {
            if let Err(e) = write_stdout(&format!("{line}\n")) {
                write_error = Some(e);
                return false;
            }
        }
        if !started {
            seen += 1;
        }
        !matches!(count, Some(n) if seen >= n)
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if let Some(detail) = decode_error {
        return Err(Failure::Client(ClientError::Protocol { path, detail }));
    }
    result.map_err(Failure::Reply)?;
    if count.is_none() {
        // The daemon ended the stream (it is shutting down).
        return Err(Failure::Client(ClientError::Connection {
            path,
            detail: "the daemon ended the event stream".into(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_made_absolute_against_the_callers_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mods")).unwrap();
        std::fs::write(dir.path().join("mods/x.so"), b"").unwrap();
        let cwd = dir.path();
        let abs = |rel: &str| cwd.join(rel).display().to_string();
        assert_eq!(resolve_module_arg("./x.so", cwd), abs("./x.so"));
        assert_eq!(resolve_module_arg("../y.so", cwd), abs("../y.so"));
        assert_eq!(resolve_module_arg("mods/x.so", cwd), abs("mods/x.so"));
        // Specs and absolute paths pass unchanged.
        assert_eq!(resolve_module_arg("misc/hello", cwd), "misc/hello");
        assert_eq!(resolve_module_arg("hello", cwd), "hello");
        assert_eq!(resolve_module_arg("/abs/z.so", cwd), "/abs/z.so");
    }
}
