//! Ctrl-C and friends: a handler that only sets a flag, which the controller polls; the run
//! then stops the sandbox and cleans up like any other early end.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the flag-setting handler for SIGINT, SIGTERM and SIGHUP (for programs that run
/// sandboxes: the CLI calls it once).
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to atomics
        // (async-signal-safe), installed with sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether an interrupt arrived (and which signal).
pub fn interrupted() -> Option<i32> {
    INTERRUPTED
        .load(Ordering::SeqCst)
        .then(|| SIGNAL.load(Ordering::SeqCst))
}

/// Simulates an interrupt (tests).
pub fn raise_interrupt_flag(sig: i32) {
    on_signal(sig);
}

/// Clears the flag (tests that run several sandboxes in one process).
pub fn clear_interrupt_flag() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
