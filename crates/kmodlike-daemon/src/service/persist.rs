//! The service's side of [`crate::state`]: what it restores at start (quarantines, earlier runs'
//! crashes and taints) and the snapshot it writes after every change.

use std::sync::Mutex;
use std::time::SystemTime;

use kmodlike::Loader;

use crate::state::{QuarantineRecord, Snapshot, StateStore};
use crate::varlink::types::{self, epoch_secs, CrashReport, Taint, TaintAck};

/// The store and what earlier runs left that this run may still change.
pub(crate) struct Persisted {
    pub(crate) store: StateStore,
    /// An earlier run's taint not acknowledged yet.
    previous_taint: Mutex<Option<Taint>>,
    /// Acknowledgements not in this process's own list: earlier runs', and this run's of an
    /// earlier run's taint.
    acks: Mutex<Vec<TaintAck>>,
}

impl Persisted {
    /// Take over `store` and restore its quarantines into `loader`.
    pub(crate) fn restore(store: StateStore, loader: &Loader) -> Persisted {
        let previous = store.previous().clone();
        for q in &previous.quarantined {
            loader.restore_quarantine(&q.module, q.crashes as usize);
        }
        if !previous.crashes.is_empty() || !previous.quarantined.is_empty() {
            tracing::info!(
                "restored {} crash report(s) and {} quarantine(s) of earlier runs from {}",
                previous.crashes.len(),
                previous.quarantined.len(),
                store.dir().map(|d| d.display().to_string()).unwrap_or_default()
            );
        }
        if let Some(t) = &previous.taint {
            tracing::warn!(
                module = %t.module,
                "an earlier run was tainted by module {} ({}) and it was never acknowledged; \
                 kmodctl clear --taint acknowledges it",
                t.module,
                t.reason
            );
        }
        Persisted {
            store,
            previous_taint: Mutex::new(previous.taint),
            acks: Mutex::new(previous.taint_acks),
        }
    }

    /// The earlier run's unacknowledged taint.
    pub(crate) fn previous_taint(&self) -> Option<Taint> {
        self.previous_taint.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Acknowledge an earlier run's taint, when there is one.
    pub(crate) fn acknowledge_previous_taint(&self, by: &str) -> Option<TaintAck> {
        let taint = self.previous_taint.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let ack = TaintAck { taint, by: by.to_owned(), time: epoch_secs(SystemTime::now()) };
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).push(ack.clone());
        Some(ack)
    }

    /// Every acknowledgement, earlier runs' and this one's, oldest first.
    pub(crate) fn taint_acks(&self) -> Vec<TaintAck> {
        let mut all = self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.extend(kmodlike::taint_acknowledgements().iter().map(TaintAck::from));
        all.sort_by(|a, b| a.time.total_cmp(&b.time));
        all
    }

    /// The crash log: this run's (newest first), then earlier runs'.
    pub(crate) fn crashes(&self, loader: &Loader) -> Vec<CrashReport> {
        let mut all: Vec<CrashReport> = loader.crashes().iter().map(CrashReport::from).collect();
        all.extend(self.store.previous().crashes.iter().cloned());
        all
    }

    /// Write the state as it is now.
    pub(crate) fn save(&self, loader: &Loader) {
        if self.store.dir().is_none() {
            return;
        }
        let snapshot = Snapshot {
            version: 0,
            crashes: self.crashes(loader),
            quarantined: loader
                .quarantined()
                .into_iter()
                .map(|(module, n)| QuarantineRecord { module, crashes: n as u64 })
                .collect(),
            taint: kmodlike::taint().as_ref().map(types::Taint::from).or(self.previous_taint()),
            taint_acks: self.taint_acks(),
        };
        self.store.save(snapshot);
    }
}
