//! Ctrl-C (SIGINT) and SIGTERM (what Slurm sends at a time limit or `scancel`) during
//! training: the step in progress finishes, a checkpoint of it is written, and the run
//! stops with an error saying how to resume. A second signal stops the process at once,
//! and outside training a signal stops it at once as it would without this module.
//!
//! One flag does it: each signal first exits if the flag is set, then sets it. The flag is
//! set except while a run trains ([`Training`]), so the first signal during training only
//! sets it, and the trainer sees it after the step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag, with the two actions registered for both signals the first time (before that,
/// the signals keep their default action).
fn flag() -> &'static Arc<AtomicBool> {
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(true));
        for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
            // Registration fails only for signals that cannot be caught; these can.
            signal_hook::flag::register_conditional_shutdown(signal, status, Arc::clone(&flag)).ok();
            signal_hook::flag::register(signal, Arc::clone(&flag)).ok();
        }
        flag
    })
}

/// While alive, a signal asks the run to stop after its step instead of stopping the
/// process; dropping it restores stopping at once.
pub struct Training(());

impl Training {
    pub fn start() -> Training {
        flag().store(false, Ordering::SeqCst);
        Training(())
    }

    /// Whether a signal asked the run to stop.
    pub fn stop_requested(&self) -> bool {
        flag().load(Ordering::SeqCst)
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        flag().store(true, Ordering::SeqCst);
    }
}
