//! Ctrl-C (SIGINT) and SIGTERM (what Slurm sends at a time limit or `scancel`) during work
//! that writes an output directory: the unit in progress (a training step, a group of
//! scored documents) finishes and is written, and the run stops with an error saying how
//! to resume. A second signal stops the process at once, and outside such work a signal
//! stops it at once as it would without this module.
//!
//! Each signal runs two actions, registered once per process: exit if `EXIT_NOW` is set,
//! then set `EXIT_NOW` and `SIGNALLED`. `EXIT_NOW` is cleared only while some run works
//! ([`Stoppable`]), so the first signal then only asks the runs to stop; runs on other
//! threads of the same process never stop one another.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

struct Flags {
    /// A signal arrived while some run worked.
    signalled: Arc<AtomicBool>,
    /// The next signal ends the process.
    exit_now: Arc<AtomicBool>,
    /// Runs working now.
    working: AtomicUsize,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// The flags, with the actions registered for both signals the first time (before that,
/// the signals keep their default action).
fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| {
        let flags = Flags {
            signalled: Arc::new(AtomicBool::new(false)),
            exit_now: Arc::new(AtomicBool::new(true)),
            working: AtomicUsize::new(0),
        };
        for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
            // Registration fails only for signals that cannot be caught; these can.
            signal_hook::flag::register_conditional_shutdown(signal, status, Arc::clone(&flags.exit_now)).ok();
            signal_hook::flag::register(signal, Arc::clone(&flags.exit_now)).ok();
            signal_hook::flag::register(signal, Arc::clone(&flags.signalled)).ok();
        }
        flags
    })
}

/// While one is alive, a signal asks the runs to stop at their next safe point instead of
/// stopping the process; when the last is dropped, a signal stops the process at once again.
pub struct Stoppable(());

impl Stoppable {
    pub fn start() -> Stoppable {
        let f = flags();
        if f.working.fetch_add(1, Ordering::SeqCst) == 0 {
            f.signalled.store(false, Ordering::SeqCst);
            f.exit_now.store(false, Ordering::SeqCst);
        }
        Stoppable(())
    }

    /// Whether a signal asked the runs to stop.
    pub fn stop_requested(&self) -> bool {
        flags().signalled.load(Ordering::SeqCst)
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        let f = flags();
        if f.working.fetch_sub(1, Ordering::SeqCst) == 1 {
            f.exit_now.store(true, Ordering::SeqCst);
        }
    }
}
