//! The main program, `kmodlike`: take the socket, load the modules named on the command line,
//! serve until SIGINT or SIGTERM, then unload everything and clean up. SIGHUP reloads the
//! configuration ([`LoaderService::reload_configuration`]); systemd hears of each step
//! ([`crate::notify`]).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kmodlike::{CrashLoop, Loader, SignaturePolicy};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};

use crate::cli::DaemonArgs;
use crate::notify::{self, StatusUpdater};
use crate::server::{Connections, Limits, Server, ServiceInfo};
use crate::service::{DaemonFacts, LoaderService};
use crate::socket::{
    bin_name, bind_listener, choose_socket_path, group_id, tmp_dir, var_run_dir, AccessPolicy,
    InstanceLock, LockError, SOCKET_ENV,
};

/// Set up logging (see [`crate::journal`]): native journal records under systemd, `<N>`
/// priority prefixes on a pipe or file, human-readable lines on a terminal. `RUST_LOG` decides
/// the level (default `info`); no colour unless stderr is a terminal and `NO_COLOR` is unset.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    use crate::journal::{choose_target, JournalLayer, LogTarget, PrefixedLayer};
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let registry = tracing_subscriber::registry();
    let _ = match choose_target() {
        LogTarget::Journal(path) => {
            registry.with(filter()).with(JournalLayer::new(path)).try_init()
        }
        LogTarget::Prefixed => registry.with(filter()).with(PrefixedLayer).try_init(),
        LogTarget::Human => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(ansi);
            registry.with(filter()).with(fmt).try_init()
        }
    };
}

/// The socket the daemon serves and how it got it.
enum Socket {
    /// Created by us: we hold its lock, and remove it at exit.
    Owned { path: PathBuf, lock: InstanceLock },
    /// Passed by systemd (`LISTEN_FDS`): systemd owns the file.
    Activated { path: PathBuf },
}

impl Socket {
    fn path(&self) -> &Path {
        match self {
            Socket::Owned { path, .. } | Socket::Activated { path } => path,
        }
    }
}

/// Run the daemon; the exit code is 0 after a clean shutdown.
pub fn run(args: DaemonArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Every loaded module holds one descriptor (its leased file or its private image): raise the
/// soft `RLIMIT_NOFILE` to the hard limit, as systemd recommends services do themselves.
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let from = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                tracing::debug!("descriptor limit raised from {from:?} to {:?}", limit.maximum)
            }
            Err(e) => tracing::warn!("cannot raise the descriptor limit from {from:?}: {e}"),
        }
    }
}

fn serve(mut args: DaemonArgs) -> Result<(), String> {
    // The whole configuration reads, or the daemon does not start: nothing half-applied.
    let config = crate::config::read(args.config.as_deref()).map_err(|e| e.to_string())?;
    let config_source = crate::service::ConfigSource {
        explicit: args.config.clone(),
        cli_module_path: args.module_path.clone(),
    };
    crate::config::apply_to_args(&mut args, &config.settings);
    if let Some(file) = &config.file {
        info!(
            "configuration read from {} ({} module(s) listed)",
            file.display(),
            config.modules.len()
        );
    }
    let group = match &args.socket_group {
        Some(g) => Some(group_id(g).map_err(|e| format!("--socket-group {g}: {e}"))?),
        None => None,
    };
    let (socket, listener) = take_socket(&args, group)?;
    raise_descriptor_limit();

    let crash_loop = (args.crash_loop_max > 0).then(|| CrashLoop {
        max_crashes: args.crash_loop_max as usize,
        window: Duration::from_secs(args.crash_loop_window),
    });
    let policy = match &args.signature_policy {
        Some(p) => p.parse::<SignaturePolicy>().map_err(|e| format!("--signature-policy: {e}"))?,
        None if args.trusted_keys.is_dir() => SignaturePolicy::Warn,
        None => SignaturePolicy::Off,
    };
    tracing::info!(
        policy = %policy,
        keys = %args.trusted_keys.display(),
        revoked = %args.revoked.display(),
        untrusted_paths = if args.allow_untrusted_paths { "allowed (taint)" } else { "refused" },
        "module trust"
    );
    let mut builder = Loader::builder()
        .allow_untrusted_paths(args.allow_untrusted_paths)
        .trusted_keys(args.trusted_keys.clone())
        .revoked(args.revoked.clone())
        .signature_policy(policy)
        .module_path(args.module_path.clone())
        .strict(args.strict)
        .probe(!args.no_probe)
        .crash_loop(crash_loop)
        .log(log_module_message);
    if let Some(helper) = &args.probe_helper {
        builder = builder.probe_helper(helper.clone());
    }
    // The probe child runs the constructors and module_init first: it gets the load's deadline
    // too (at least 2 s, for the fork and the mapping on a busy machine).
    if let Some(limit) = crate::cli::seconds_to_deadline(args.call_timeout) {
        builder = builder.probe_timeout(limit.max(std::time::Duration::from_secs(2)));
    }
    let loader = builder.build();
    loader.subscribe(log_event);
    let status = StatusUpdater::start(loader.clone())
        .map_err(|e| format!("cannot start the sd-notify thread: {e}"))?;
    let status_changed = status.notifier();
    loader.subscribe(move |_| status_changed());

    let conns = Connections::new();
    let facts = DaemonFacts {
        socket: socket.path().to_owned(),
        probe: !args.no_probe,
        crash_loop,
        max_connections: args.max_connections as usize,
        call_timeout: crate::cli::seconds_to_deadline(args.call_timeout),
    };
    let service = Arc::new(LoaderService::new(loader.clone(), facts, conns.clone()));
    let state_dir = crate::state::choose_state_dir(
        args.state_dir.as_deref(),
        std::env::var_os("STATE_DIRECTORY").as_deref(),
    );
    service.restore_state(crate::state::StateStore::open(&state_dir));
    service.set_configuration(config_source, &config);
    let limits = Limits {
        max_connections: args.max_connections as usize,
        read_timeout: Duration::from_secs_f64(args.read_timeout.max(0.01)),
        ..Limits::default()
    };
    let info = ServiceInfo {
        vendor: "kmodlike".into(),
        product: "kmodlike".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: env!("CARGO_PKG_REPOSITORY").into(),
    };
    let server = Server::new(
        listener,
        service.clone(),
        info,
        AccessPolicy::for_this_process(group).with_group_may_load(args.socket_group_may_load),
        limits,
        conns,
    )
    .map_err(|e| format!("cannot serve {}: {e}", socket.path().display()))?;

    // Signals first, so that a SIGTERM during the module loads below is not lost.
    let stop = server.stop_handle();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install the SIGINT/SIGTERM/SIGHUP handlers: {e}"))?;
    // Set once READY=1 is sent: a reload during the start must not announce readiness early.
    let ready = Arc::new(AtomicBool::new(false));
    {
        let service = service.clone();
        let loader = loader.clone();
        let ready = ready.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        reload(&service, &loader, ready.load(Ordering::SeqCst));
                        continue;
                    }
                    seen += 1;
                    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                    if seen == 1 {
                        info!("{name}: unloading every module and stopping");
                        service.close_monitors();
                        stop.stop();
                    } else {
                        warn!("{name} again: exiting at once, without unloading");
                        std::process::exit(1);
                    }
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }

    let socket_name = socket.path().display().to_string();
    let mut start_failure = None;
    for spec in &args.modules {
        if let Err(message) = load_at_start(&service, spec, &socket_name) {
            start_failure = Some(format!(
                "the required module {spec} could not be loaded: {message}; fix it, or pass it \
                 with --optional-module to start without it"
            ));
            break;
        }
    }
    if start_failure.is_none() {
        for spec in &args.optional_modules {
            if let Err(message) = load_at_start(&service, spec, &socket_name) {
                warn!("cannot load the optional module {spec}: {message}; starting without it");
            }
        }
    }
    if let Some(message) = start_failure {
        notify::stopping();
        service.close_monitors();
        loader.shutdown();
        service.release_all();
        remove_socket(socket);
        return Err(message);
    }
    if let Err(message) = service.load_listed(&config.modules) {
        // A required module is missing: stop as cleanly as at SIGTERM, and say why.
        error!("{message}");
        service.close_monitors();
        loader.shutdown();
        service.release_all();
        if let Socket::Owned { path, lock } = socket {
            let _ = std::fs::remove_file(&path);
            drop(lock);
        }
        return Err("a required module could not be loaded at start; not starting".into());
    }

    notify::ready(&loader);
    ready.store(true, Ordering::SeqCst);
    info!(
        message_id = crate::journal::message_id::READY,
        socket = %socket.path().display(),
        "ready"
    );

    let served = server.run();
    notify::stopping();
    service.close_monitors();
    // Dependents before their dependencies, fini for each; the daemon's own references are
    // dead handles after this and are merely released.
    loader.shutdown();
    service.release_all();
    remove_socket(socket);
    drop(status);
    served.map_err(|e| format!("the accept loop failed: {e}"))?;
    info!(message_id = crate::journal::message_id::STOPPED, "stopped");
    Ok(())
}

/// SIGHUP: `RELOADING=1`, read the configuration again, `READY=1`, and say so in the log.
/// Before the start is complete (`was_ready` false) the notifications are left to the start.
fn reload(service: &LoaderService, loader: &Loader, was_ready: bool) {
    info!("SIGHUP: reloading the configuration");
    if was_ready {
        notify::reloading();
    }
    match service.reload_configuration() {
        Ok(r) => info!(
            "configuration reloaded: module path {}; {} listed module(s) loaded{}",
            r.module_path.join(":"),
            r.loaded.len(),
            if r.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed", r.failed.len())
            }
        ),
        Err(e) => error!("the configuration reload failed: {e}"),
    }
    if was_ready {
        notify::ready(loader);
    }
}

/// Remove a socket we created (systemd owns an activated one).
fn remove_socket(socket: Socket) {
    if let Socket::Owned { path, lock } = socket {
        if let Err(e) = std::fs::remove_file(&path) {
            warn!("cannot remove the socket {}: {e}", path.display());
        }
        drop(lock);
    }
}

/// A passed descriptor must be a listening Unix stream socket: `Accept=yes` hands over one
/// connection instead, which this daemon does not serve (it would wait for connections on a
/// connected socket for ever).
fn check_activated_socket(fd: &OwnedFd) -> Result<(), String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let not_ours = |what: String| {
        format!(
            "systemd passed {what} in LISTEN_FDS; kmodlike serves a listening Unix stream socket: \
             use Accept=no (the default) in the .socket unit, with ListenStream=/path"
        )
    };
    match sockopt::socket_domain(fd) {
        Ok(AddressFamily::UNIX) => {}
        Ok(_) => return Err(not_ours("a socket that is not a Unix-domain socket".into())),
        Err(e) => return Err(not_ours(format!("a descriptor that is not a socket ({e})"))),
    }
    let inspect = |e: rustix::io::Errno| format!("cannot inspect the socket systemd passed: {e}");
    if sockopt::socket_type(fd).map_err(inspect)? != SocketType::STREAM {
        return Err(not_ours("a Unix socket that is not a stream socket".into()));
    }
    if !sockopt::socket_acceptconn(fd).map_err(inspect)? {
        return Err(not_ours("a connected socket (Accept=yes)".into()));
    }
    Ok(())
}

/// The listening socket: systemd's (`LISTEN_FDS`), else ours at the path rule's path, under
/// the instance lock.
fn take_socket(args: &DaemonArgs, group: Option<u32>) -> Result<(Socket, UnixListener), String> {
    let fds: Vec<i32> = sd_notify::listen_fds()
        .map_err(|e| format!("bad socket activation variables: {e}"))?
        .collect();
    if let Some(&fd) = fds.first() {
        if fds.len() > 1 {
            warn!("systemd passed {} sockets; serving the first", fds.len());
        }
        // SAFETY: systemd passed this descriptor to us (LISTEN_PID is our pid, checked by
        // listen_fds); nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        check_activated_socket(&fd)?;
        if let Some(ignored) = &args.socket {
            warn!(
                "--socket {} is ignored: systemd passed the socket to serve (LISTEN_FDS)",
                ignored.display()
            );
        }
        let listener = UnixListener::from(fd);
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("(socket activation)"));
        info!(socket = %path.display(), "serving the socket passed by systemd");
        return Ok((Socket::Activated { path }, listener));
    }

    let env = std::env::var_os(SOCKET_ENV);
    let (path, source) = choose_socket_path(
        args.socket.as_deref(),
        env.as_deref(),
        &bin_name(),
        &var_run_dir(),
        &tmp_dir(),
    );
    info!(socket = %path.display(), "socket path ({source})");
    let lock = InstanceLock::acquire(&path).map_err(|e| match e {
        LockError::Held { .. } => {
            format!("{}: {e}; stop it first or pass another --socket", path.display())
        }
        LockError::Io { .. } | LockError::Foreign { .. } => e.to_string(),
    })?;
    let listener = bind_listener(&lock, &path, args.socket_mode, group)
        .map_err(|e| format!("cannot create the socket {}: {e}", path.display()))?;
    Ok((Socket::Owned { path, lock }, listener))
}

/// Load one module named at start; the error is a sentence (as kmodctl would print it).
fn load_at_start(service: &LoaderService, spec: &str, socket: &str) -> Result<(), String> {
    match service.load(spec, true) {
        Ok(r) => {
            let m = &r.module;
            info!(
                module = %m.name,
                "loaded {} from {} (interface {}){}",
                m.name,
                m.path,
                m.interface_version.as_deref().unwrap_or(if m.legacy { "legacy" } else { "none" }),
                if r.hello_called { "; mod_hello() returned" } else { "" }
            );
            Ok(())
        }
        Err(e) if e.short_name() == "ModuleCrashed" => {
            // The crash itself is reported by the event log; say what it cost.
            Err("the module crashed while loading and was unloaded".to_owned())
        }
        Err(e) => {
            // The first line only: a crash report's details are already in the log.
            let message = crate::render::error_message(&e, socket);
            Err(message.lines().next().unwrap_or_default().to_owned())
        }
    }
}

/// Module log lines, tagged with the module's name.
fn log_module_message(module: &str, level: i32, msg: &str) {
    match level {
        i32::MIN..=-1 => tracing::debug!(target: "module", module = %module, "{msg}"),
        0 => tracing::info!(target: "module", module = %module, "{msg}"),
        1 => tracing::warn!(target: "module", module = %module, "{msg}"),
        _ => tracing::error!(target: "module", module = %module, "{msg}"),
    }
}

/// Loads, unloads and, above all, crashes, whoever caused them. A crash is one record holding
/// the whole report (one journal entry; `<3>` on every line otherwise).
fn log_event(event: &kmodlike::Event) {
    use crate::journal::message_id;
    match event {
        kmodlike::Event::Loaded(m) => {
            info!(
                message_id = message_id::LOADED,
                module = %m.name,
                "module {} loaded from {}",
                m.name,
                m.path.display()
            );
            if let kmodlike::SignatureVerdict::Unsigned { reason } = &m.trust.signature {
                warn!(module = %m.name, "module {} loaded UNSIGNED (policy warn): {reason}", m.name);
            }
            if let Some(why) = &m.trust.untrusted_path {
                warn!(module = %m.name, "module {} loaded from an UNTRUSTED path: {why}", m.name);
            }
        }
        kmodlike::Event::Unloaded { name } => {
            info!(message_id = message_id::UNLOADED, module = %name, "module {name} unloaded")
        }
        kmodlike::Event::Crashed(report) => {
            let fate = if report.phase == kmodlike::Phase::Probe {
                "was refused (it crashed in the probe child)"
            } else {
                "was unloaded"
            };
            error!(
                message_id = message_id::CRASHED,
                module = %report.module,
                signal = %report.signal_name,
                phase = %report.phase.name(),
                "module {} crashed with {} and {fate}; the daemon keeps running\n{}",
                report.module,
                report.signal_name,
                report.to_string().trim_end()
            );
        }
        kmodlike::Event::CallTimedOut(report) => {
            error!(module = %report.module, "{}; the daemon keeps running", report.summary());
        }
        kmodlike::Event::CallSlow { module, function, thread, running, .. } => warn!(
            module = %module,
            "module {module}: a call to {} on thread {thread} has run for {:.3} s",
            function.as_deref().unwrap_or("?"),
            running.as_secs_f64()
        ),
        kmodlike::Event::Hung { module, detail, .. } => {
            error!(module = %module, "module {module} is hung: {detail}")
        }
    }
}
