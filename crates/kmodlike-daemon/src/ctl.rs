//! `kmodctl`: one command, one call to the daemon, one exit code.
//!
//! Exit codes: 0 ok; 1 the operation failed (an error reply); 2 usage (clap's own code); 3 the
//! daemon cannot be reached, is not trusted (served by another uid), refused the connection, or
//! went away mid-call.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::cli::{CtlArgs, CtlCommand};
use crate::client::{ClientError, Connection};
use crate::render::{self, Style};
use crate::socket::{client_socket_path, SOCKET_ENV};
use crate::varlink::types::{
    CallReply, ClearTaintReply, CrashesReply, InfoReply, ListReply, LoadReply, MonitorReply,
    PingReply, ReloadReply, StatusReply,
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

/// Why a command did not succeed.
enum Failure {
    /// An error reply (exit 1; 3 for PermissionDenied).
    Reply(VarlinkError),
    /// The daemon could not be used (exit 3).
    Client(ClientError),
    /// A usage error found after parsing (exit 2).
    Usage(String),
    /// Something local failed (exit 1).
    Local(String),
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
    match execute(&args, &socket) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Reply(e)) => {
            if args.json {
                let doc = json!({ "error": e.name, "parameters": e.parameters });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            let msg = render::error_message(&e, &socket.display().to_string());
            eprintln!("{} {msg}", err_style.red("kmodctl:"));
            let code =
                if e.short_name() == "PermissionDenied" { EXIT_UNREACHABLE } else { EXIT_FAILED };
            ExitCode::from(code)
        }
        Err(Failure::Client(e)) => {
            eprintln!("{} {e}", err_style.red("kmodctl:"));
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("{} {msg}", err_style.red("kmodctl:"));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Local(msg)) => {
            eprintln!("{} {msg}", err_style.red("kmodctl:"));
            ExitCode::from(EXIT_FAILED)
        }
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
        print_json(&reply);
    }
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

fn print_json(v: &Map<String, Value>) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    println!("{text}");
}

fn execute(args: &CtlArgs, socket: &Path) -> Result<(), Failure> {
    if let CtlCommand::Generate(g) = &args.command {
        let files = crate::generate::generate(&g.out)
            .map_err(|e| Failure::Local(format!("cannot write into {}: {e}", g.out.display())))?;
        for f in files {
            println!("{}", f.display());
        }
        return Ok(());
    }
    let signature = match &args.command {
        CtlCommand::Call { arg, returns, .. } => {
            Some(CtlCommand::call_signature(*arg, *returns).map_err(Failure::Usage)?)
        }
        _ => None,
    };
    let timeout = (args.timeout > 0.0).then(|| Duration::from_secs_f64(args.timeout));
    let mut conn = Connection::connect(socket, timeout)?;
    let style = Style::new(render::use_colour(std::io::stdout().is_terminal()));
    let text = !args.json;
    match &args.command {
        CtlCommand::List => {
            let r: ListReply = call(args, &mut conn, "List", json!({}))?;
            if text {
                print!("{}", render::module_table(&r.modules, style));
            }
        }
        CtlCommand::Load { spec, no_hello } => {
            let r: LoadReply =
                call(args, &mut conn, "Load", json!({ "spec": spec, "hello": !no_hello }))?;
            if text {
                let m = &r.module;
                if r.already_loaded {
                    println!("module {} is already loaded from {}", m.name, m.path);
                } else {
                    println!("loaded module {} from {}", m.name, m.path);
                }
                if r.hello_called {
                    println!("called {}'s mod_hello()", m.name);
                }
            }
        }
        CtlCommand::Unload { name, force, wait } => {
            let _: Map<String, Value> = call(
                args,
                &mut conn,
                "Unload",
                json!({ "module": name, "force": force, "wait": wait }),
            )?;
            if text {
                println!("unloaded module {name}");
            }
        }
        CtlCommand::Reload { name } => {
            let r: ReloadReply = call(args, &mut conn, "Reload", json!({ "module": name }))?;
            if text {
                println!(
                    "reloaded module {} from {} (instance {})",
                    name, r.module.path, r.module.id
                );
            }
        }
        CtlCommand::Clear { taint: true, .. } => {
            let r: ClearTaintReply = call(args, &mut conn, "ClearTaint", json!({}))?;
            if text {
                let a = &r.acknowledged;
                println!(
                    "acknowledged and cleared the taint by module {}: {} (by {})",
                    a.taint.module, a.taint.reason, a.by
                );
            }
        }
        CtlCommand::Clear { name, .. } => {
            let name = name.as_deref().unwrap_or_default();
            let _: Map<String, Value> = call(args, &mut conn, "Clear", json!({ "module": name }))?;
            if text {
                println!("cleared the quarantine of module {name}");
            }
        }
        CtlCommand::Info { module } => {
            let r: InfoReply = call(args, &mut conn, "Info", json!({ "module": module }))?;
            if text {
                match (&r.loaded, &r.file) {
                    (Some(m), _) => print!("{}", render::module_block(m, style)),
                    (None, Some(f)) => print!("{}", render::file_block(f)),
                    (None, None) => {}
                }
            }
        }
        CtlCommand::Call { name, symbol, arg, .. } => {
            let mut params = json!({ "module": name, "symbol": symbol, "signature": signature });
            if let Some(a) = arg {
                params["arg"] = json!(a);
            }
            let r: CallReply = call(args, &mut conn, "Call", params)?;
            if text {
                let shown_arg = arg.map(|a| a.to_string()).unwrap_or_default();
                match r.result {
                    Some(v) => println!("{name}: {symbol}({shown_arg}) returned {v}"),
                    None => println!("{name}: {symbol}({shown_arg}) returned"),
                }
            }
        }
        CtlCommand::Crashes => {
            let r: CrashesReply = call(args, &mut conn, "Crashes", json!({}))?;
            if text {
                if r.crashes.is_empty() {
                    println!("no crashes");
                }
                for (i, c) in r.crashes.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print!("{}", render::crash_block(c));
                }
            }
        }
        CtlCommand::Status => {
            let r: StatusReply = call(args, &mut conn, "Status", json!({}))?;
            if text {
                print!("{}", render::status_block(&r, &socket.display().to_string()));
            }
        }
        CtlCommand::Ping => {
            let r: PingReply = call(args, &mut conn, "Ping", json!({}))?;
            if text {
                println!("kmodlike {} (pid {}) answers at {}", r.version, r.pid, socket.display());
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
                print_json(&r);
            } else {
                print!("{}", r.get("description").and_then(Value::as_str).unwrap_or_default());
            }
        }
        CtlCommand::Monitor { count } => monitor(args, conn, *count)?,
        CtlCommand::Generate(_) => unreachable!("handled above"),
    }
    Ok(())
}

fn monitor(args: &CtlArgs, conn: Connection, count: Option<u64>) -> Result<(), Failure> {
    let mut conn = conn.without_timeout();
    let mut seen = 0u64;
    let mut decode_error = None;
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
        let mut out = std::io::stdout().lock();
        if args.json {
            let _ = writeln!(out, "{}", Value::Object(params));
        } else if let Some(line) = render::event_line(&reply.event) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        if !started {
            seen += 1;
        }
        !matches!(count, Some(n) if seen >= n)
    })?;
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
