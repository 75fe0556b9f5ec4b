//! The service manager's view of the daemon (`sd_notify`): `READY=1` once the socket is served
//! and the modules named at start are loaded, `STATUS=` with counts whenever they change,
//! `RELOADING=1` around a configuration reload (SIGHUP), `STOPPING=1` at shutdown, and
//! `WATCHDOG=1` every half `WATCHDOG_USEC` when the unit sets `WatchdogSec=`.
//!
//! Every notification is a no-op without `NOTIFY_SOCKET` (not started by systemd).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use kmodlike::Loader;
use sd_notify::NotifyState;
use tracing::{debug, warn};

/// The `STATUS=` text: what a `systemctl status` reader wants at a glance.
pub fn status_text(loader: &Loader) -> String {
    let modules = loader.list().len();
    let crashes = loader.crashes().len();
    let quarantined = loader.quarantined().len();
    format!(
        "serving: {modules} module{} loaded, {crashes} crash{} logged, {quarantined} quarantined",
        if modules == 1 { "" } else { "s" },
        if crashes == 1 { "" } else { "es" },
    )
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!("sd_notify failed: {e}");
    }
}

/// `READY=1` with the current status.
pub fn ready(loader: &Loader) {
    send(&[NotifyState::Ready, NotifyState::Status(&status_text(loader))]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload` requires).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("reloading")]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
    }
}

/// Set by [`stopping`]: the unloads that follow must not put "serving" back in `STATUS=`.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `STOPPING=1`.
pub fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: unloading every module")]);
}

/// Keeps `STATUS=` current and feeds the watchdog, from one thread.
pub struct StatusUpdater {
    changed: Sender<()>,
}

impl StatusUpdater {
    /// Start the thread. `STATUS=` is refreshed after each [`StatusUpdater::changed`] call;
    /// `WATCHDOG=1` is sent every half `WATCHDOG_USEC` when systemd set it for this process.
    pub fn start(loader: Loader) -> std::io::Result<StatusUpdater> {
        let (tx, rx) = mpsc::channel::<()>();
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
        if let Some(every) = watchdog {
            tracing::info!("systemd watchdog on: WATCHDOG=1 every {every:?}");
        }
        std::thread::Builder::new().name("sd-notify".into()).spawn(move || {
            // The keep-alive has its own schedule, which a stream of status updates does not
            // push back.
            let mut next_ping = watchdog.map(|every| Instant::now() + every);
            loop {
                let wait = match next_ping {
                    Some(at) => at.saturating_duration_since(Instant::now()),
                    None => Duration::from_secs(3600),
                };
                match rx.recv_timeout(wait) {
                    Ok(()) => {
                        // Coalesce a burst of events into one update.
                        while rx.try_recv().is_ok() {}
                        if !STOPPING.load(Ordering::SeqCst) {
                            send(&[NotifyState::Status(&status_text(&loader))]);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if let (Some(at), Some(every)) = (next_ping, watchdog) {
                    if Instant::now() >= at {
                        send(&[NotifyState::Watchdog]);
                        next_ping = Some(Instant::now() + every);
                    }
                }
            }
        })?;
        Ok(StatusUpdater { changed: tx })
    }

    /// A handle for the loader's event callback: each call schedules a `STATUS=` update. It
    /// never calls into the loader itself (the callback runs inside the loader).
    pub fn notifier(&self) -> impl Fn() + Send + Sync + 'static {
        let tx = std::sync::Mutex::new(self.changed.clone());
        move || {
            if let Ok(tx) = tx.lock() {
                if tx.send(()).is_err() {
                    warn!("the sd-notify thread has stopped");
                }
            }
        }
    }
}
