//! Monitor streams: every loader event, fanned out to each subscriber's bounded queue.

use std::sync::mpsc::SyncSender;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;

use crate::varlink::types::{self, epoch_secs, MonitorReply};

/// The Monitor subscribers.
#[derive(Default)]
pub(crate) struct MonitorHub {
    pub(crate) subscribers: Mutex<Vec<SyncSender<Value>>>,
}

impl MonitorHub {
    pub(crate) fn publish(&self, event: types::Event) {
        let Ok(value) = serde_json::to_value(MonitorReply { event }) else { return };
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        // A subscriber whose backlog is full is dropped: its stream ends, others go on.
        subs.retain(|tx| tx.try_send(value.clone()).is_ok());
    }

    pub(crate) fn close_all(&self) {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The Monitor event for a loader event.
pub(crate) fn monitor_event(event: &kmodlike::Event) -> types::Event {
    let time = epoch_secs(SystemTime::now());
    match event {
        kmodlike::Event::Loaded(info) => types::Event {
            kind: "loaded".into(),
            time,
            name: Some(info.name.clone()),
            module: Some(types::Module::from(&**info)),
            report: None,
            detail: None,
        },
        kmodlike::Event::Unloaded { name } => types::Event {
            kind: "unloaded".into(),
            time,
            name: Some(name.clone()),
            module: None,
            report: None,
            detail: None,
        },
        kmodlike::Event::Crashed(report) => types::Event {
            kind: "crashed".into(),
            time,
            name: Some(report.module.clone()),
            module: None,
            report: Some(types::CrashReport::from(&**report)),
            detail: None,
        },
        kmodlike::Event::CallTimedOut(report) => types::Event {
            kind: "call_timed_out".into(),
            time,
            name: Some(report.module.clone()),
            module: None,
            report: Some(types::CrashReport::from(&**report)),
            detail: None,
        },
        kmodlike::Event::CallSlow { module, .. } => types::Event {
            kind: "call_slow".into(),
            time,
            name: Some(module.clone()),
            module: None,
            report: None,
            detail: None,
        },
        kmodlike::Event::Hung { module, .. } => types::Event {
            kind: "hung".into(),
            time,
            name: Some(module.clone()),
            module: None,
            report: None,
            detail: None,
        },
    }
}
