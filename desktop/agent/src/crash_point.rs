//! Stopping the agent dead at a chosen step of a swap or a send.
//!
//! The swap and send protocols promise that a process killed between any
//! two steps loses nothing and duplicates nothing: the next run only
//! finishes the job. An in-process interruption cannot prove that for the
//! real binary (its destructors, buffered writes and open transactions
//! still run), so debug builds honour [`ABORT_AT_ENV`]: the process aborts,
//! as abruptly as a power cut, when it reaches the named step. Release
//! builds compile this away and never read the variable.
//!
//! The value is `swap:<step>` or `send:<step>` (a [`crate::SwapStep`] or
//! [`crate::send::SendStep`] name, as `{:?}` prints it), optionally with
//! `#<n>` to abort the n-th time the step is reached, e.g. `send:Notified#2`
//! for after the second recipient's notification.

/// Names the step at which a debug build of the agent aborts.
pub const ABORT_AT_ENV: &str = "SEALPOST_AGENT_ABORT_AT";

/// Aborts the process if `protocol`'s `step` is the one [`ABORT_AT_ENV`] names.
#[cfg(debug_assertions)]
pub(crate) fn reached(protocol: &str, step: &dyn std::fmt::Debug) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TIMES_REACHED: AtomicU32 = AtomicU32::new(0);

    let Ok(wanted) = std::env::var(ABORT_AT_ENV) else { return };
    let (point, nth) = match wanted.split_once('#') {
        Some((point, nth)) => (point, nth.parse().unwrap_or(1)),
        None => (wanted.as_str(), 1),
    };
    if point != format!("{protocol}:{step:?}") {
        return;
    }
    if TIMES_REACHED.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("{ABORT_AT_ENV}: aborting at {point} (time {nth})");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn reached(_protocol: &str, _step: &dyn std::fmt::Debug) {}
