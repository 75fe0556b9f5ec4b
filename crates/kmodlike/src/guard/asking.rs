//! What the watchdog does about a call it sent the interrupt signal and that is still there:
//! ask again while the handler lets library code run on (`guard.c`, `kml_interrupt_waits`),
//! then decide (end it there, or report it hung), and how it tells a thread that blocks the
//! signal. A state machine per call; `deadline.rs`'s watchdog loop drives it.

use std::ffi::c_int;
use std::time::Duration;

use super::interrupt_signal::interrupt_signal;

/// How long a thread sent the interrupt signal has to leave its call before it is reported
/// hung.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Does thread `tid` block signal `signo` while it is pending for it (`SigBlk` and `SigPnd` in
/// its status)? Blocked alone is not enough: a handler of ours runs with it blocked, after it
/// was delivered.
pub(super) fn blocks_signal(tid: i32, signo: c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    let bit = 1u64 << (signo - 1);
    let has = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    };
    has("SigBlk:") && has("SigPnd:")
}

pub(super) type Key = (i32, i32, u64);

/// How soon after an insisting interrupt the watchdog looks whether the call is still there.
pub(super) const BLOCKED_CHECK: u64 = 20_000_000;

/// How long the signal must stay blocked and pending, without a break, for the thread to be
/// taken for one that blocks it.
pub(super) const BLOCKED_FOR: u64 = 100_000_000;

/// How often the watchdog asks again while the thread runs library code outside the module
/// (the handler waits for it to come back: `guard.c`, `kml_interrupt_waits`).
pub(super) const RETRY: u64 = 1_000_000;

/// How long, and how many looks at least, the watchdog asks before it decides: then a thread
/// still in libc, ld.so or the unwinder is reported hung (ended there, it could leave their
/// locks held and the host would deadlock on its next allocation), and one in any other
/// library is ended there. A loop that spends 99% of its time in `malloc` comes back to the
/// module in 1 look of 100: 2,000 looks leave it about one chance in 10^9 of being taken for
/// hung; on a loaded machine too, since looks are counted (a request the thread has not taken
/// yet is not sent again).
pub(super) const ASK_FOR: u64 = 2_000_000_000;
pub(super) const ASKS: u32 = 2_000;

/// The runtime library holding `pc` (one whose locks an interrupt must not leave held: see
/// [`crate::crash::is_runtime_object`]), named with the function: `"malloc in libc.so.6"`.
pub(super) fn in_runtime_library(pc: u64) -> Option<String> {
    if pc == 0 {
        return None;
    }
    let at = crate::crash::locate(pc);
    let object = at.object.filter(|o| crate::crash::is_runtime_object(o))?;
    Some(match at.symbol {
        Some((name, _, _)) => format!("{name} in {object}"),
        None => format!("{pc:#x} in {object}"),
    })
}

/// An interrupt the watchdog sent for a call that has not left yet.
pub(super) struct Asking {
    first: u64,
    /// When it last sent a request, and the thread's count of requests it let pass then.
    sent_at: u64,
    waits_at_send: u64,
    /// Requests the handler let pass (the thread was in library code): each a fresh look at
    /// where the thread is. A request is sent only once the last one was taken, so a thread
    /// that is not running does not collect a queue of them, all taken at the same place.
    looks: u32,
    /// When it insisted, if it has.
    insisted: Option<u64>,
    /// Since when the checks have found the signal blocked and pending, without a break.
    blocked_since: Option<u64>,
}

/// What to do next about a call that was sent the interrupt and is still there.
pub(super) enum Step {
    /// Nothing until then.
    Wait(u64),
    /// Send the interrupt again (insisting or not).
    Ask { insist: bool },
    /// Report the call hung, for this reason (of the thread: "it ...").
    Hung(String),
}

impl Asking {
    pub(super) fn new(now: u64, waits: u64) -> Asking {
        Asking {
            first: now,
            sent_at: now,
            waits_at_send: waits,
            looks: 0,
            insisted: None,
            blocked_since: None,
        }
    }

    /// The next step at `now`: the thread blocks the signal (blocked and pending) or not, has
    /// let `waits` requests pass in all, and `in_runtime` says which runtime library the
    /// handler last found it in, if one. Blocked for [`BLOCKED_FOR`] without a break is hung:
    /// a moment may be our own handler, which runs with the signal blocked (and a thread
    /// preempted in it stays so for a while on a loaded machine).
    pub(super) fn next_step(
        &mut self,
        now: u64,
        blocked: bool,
        waits: u64,
        in_runtime: impl FnOnce() -> Option<String>,
    ) -> Step {
        self.blocked_since = if blocked { Some(self.blocked_since.unwrap_or(now)) } else { None };
        if self.blocked_since.is_some_and(|since| now >= since + BLOCKED_FOR) {
            return Step::Hung(format!("it blocks the interrupt signal {}", interrupt_signal()));
        }
        let grace = GRACE.as_nanos() as u64;
        if let Some(at) = self.insisted {
            if now >= at + grace {
                return Step::Hung(format!(
                    "it did not leave the call within {GRACE:?} of the interrupt signal {}",
                    interrupt_signal()
                ));
            }
            return Step::Wait((at + grace).min(now + BLOCKED_CHECK));
        }
        if waits == self.waits_at_send {
            // The last request is not taken yet (the thread is not running, or in a system
            // call that does not end early).
            if now >= self.sent_at + grace {
                return Step::Hung(format!(
                    "it has not taken the interrupt signal {} for {GRACE:?}",
                    interrupt_signal()
                ));
            }
            return Step::Wait((self.sent_at + grace).min(now + RETRY));
        }
        self.looks = self.looks.saturating_add((waits - self.waits_at_send) as u32);
        if now < self.first + ASK_FOR || self.looks < ASKS {
            self.sent_at = now;
            self.waits_at_send = waits;
            return Step::Ask { insist: false };
        }
        match in_runtime() {
            Some(where_) => Step::Hung(format!(
                "it has run inside {where_} for {:.1} s past its deadline without coming back \
                 to the module; interrupted there, it could leave that library's locks held",
                (now - self.first) as f64 / 1e9
            )),
            None => {
                self.insisted = Some(now);
                Step::Ask { insist: true }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_request_not_taken_waits_then_is_hung_after_the_grace() {
        let mut a = Asking::new(0, 7);
        assert!(matches!(a.next_step(RETRY, false, 7, || None), Step::Wait(_)));
        let grace = GRACE.as_nanos() as u64;
        match a.next_step(grace, false, 7, || None) {
            Step::Hung(why) => assert!(why.contains("has not taken the interrupt signal"), "{why}"),
            _ => panic!("hung after the grace"),
        }
    }

    #[test]
    fn looks_in_libc_are_asked_again_then_reported_hung_naming_the_function() {
        let mut a = Asking::new(0, 0);
        let mut now = 0;
        for waits in 1..=u64::from(ASKS) {
            now += MS / 2;
            let step = a.next_step(now, false, waits, || panic!("not asked before the end"));
            assert!(matches!(step, Step::Ask { insist: false }), "look {waits}");
        }
        // Enough looks, not enough time: still asking.
        let step = a.next_step(now + MS, false, u64::from(ASKS) + 1, || panic!("too soon"));
        assert!(matches!(step, Step::Ask { insist: false }));
        let late = ASK_FOR + 10 * MS;
        match a.next_step(late, false, u64::from(ASKS) + 2, || Some("malloc in libc.so.6".into())) {
            Step::Hung(why) => assert!(why.contains("inside malloc in libc.so.6"), "{why}"),
            _ => panic!("a thread stuck in libc is hung"),
        }
    }

    #[test]
    fn a_thread_in_another_library_is_insisted_on_then_hung_if_it_stays() {
        let mut a = Asking::new(0, 0);
        a.looks = ASKS;
        let late = ASK_FOR + MS;
        assert!(matches!(a.next_step(late, false, 1, || None), Step::Ask { insist: true }));
        assert!(matches!(a.next_step(late + MS, false, 1, || None), Step::Wait(_)));
        let grace = GRACE.as_nanos() as u64;
        match a.next_step(late + grace, false, 1, || None) {
            Step::Hung(why) => assert!(why.contains("did not leave the call"), "{why}"),
            _ => panic!("hung after the grace of an insisting request"),
        }
    }

    #[test]
    fn blocked_without_a_break_for_a_while_is_hung_briefly_is_not() {
        let mut a = Asking::new(0, 0);
        assert!(matches!(a.next_step(MS, true, 0, || None), Step::Wait(_)));
        // Taken meanwhile (it was our handler): the count starts again.
        assert!(matches!(a.next_step(BLOCKED_FOR, false, 1, || None), Step::Ask { .. }));
        let t = BLOCKED_FOR + MS;
        assert!(matches!(a.next_step(t, true, 1, || None), Step::Wait(_)));
        assert!(matches!(a.next_step(t + BLOCKED_FOR - MS, true, 1, || None), Step::Wait(_)));
        match a.next_step(t + BLOCKED_FOR, true, 1, || None) {
            Step::Hung(why) => assert!(why.contains("blocks the interrupt signal"), "{why}"),
            _ => panic!("blocked for BLOCKED_FOR is hung"),
        }
    }
}
