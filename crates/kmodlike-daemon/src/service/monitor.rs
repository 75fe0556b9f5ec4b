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
    let now = SystemTime::now();
    let mut e = types::Event::started();
    e.time = epoch_secs(now);
    match event {
        kmodlike::Event::Loaded(info) => {
            e.kind = "loaded".into();
            e.name = Some(info.name.clone());
            e.module = Some(types::Module::from(&**info));
        }
        kmodlike::Event::Unloaded { name } => {
            e.kind = "unloaded".into();
            e.name = Some(name.clone());
        }
        kmodlike::Event::Crashed(report) => {
            e.kind = "crashed".into();
            e.name = Some(report.module.clone());
            e.report = Some(types::CrashReport::from(&**report));
        }
        kmodlike::Event::CallTimedOut(report) => {
            e.kind = "call_timed_out".into();
            e.name = Some(report.module.clone());
            e.call = Some(types::CallInFlight::timed_out(report));
            e.ran_for = report.timeout.map(|t| t.ran.as_secs_f64());
            e.report = Some(types::CrashReport::from(&**report));
        }
        kmodlike::Event::CallSlow { module, function, thread, running, frames } => {
            e.kind = "call_slow".into();
            e.name = Some(module.clone());
            e.call = Some(types::CallInFlight {
                module: module.clone(),
                function: function.clone(),
                thread: *thread,
                since: epoch_secs(now.checked_sub(*running).unwrap_or(now)),
                deadline: None,
            });
            e.ran_for = Some(running.as_secs_f64());
            e.sample =
                (!frames.is_empty()).then(|| frames.iter().map(types::CrashFrame::from).collect());
        }
        kmodlike::Event::Hung { module, function, thread, detail } => {
            e.kind = "hung".into();
            e.name = Some(module.clone());
            e.call = Some(types::CallInFlight {
                module: module.clone(),
                function: function.clone(),
                thread: *thread,
                since: e.time,
                deadline: None,
            });
            e.detail = Some(detail.clone());
        }
    }
    e
}
