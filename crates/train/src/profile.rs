//! Where a training step's time goes: data, decoder forward, LM head + loss, backward,
//! optimizer. The trainer times each phase on its own thread (burn's CPU backend runs
//! eagerly, so wall time of a call is the work of that call; on a GPU backend a phase
//! ends when its results are read, and the split is only indicative) and writes the
//! split into every step record of `metrics.jsonl`.

use std::cell::RefCell;
use std::time::Instant;

use serde::Serialize;

/// Seconds spent in each phase of one step. `forward_s` is the decoder alone: the head
/// and loss (forward and, chunk by chunk, their backward) are in `head_loss_s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    pub data_s: f64,
    pub forward_s: f64,
    pub head_loss_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

/// A phase of a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Data,
    Forward,
    HeadLoss,
    Backward,
    Optimizer,
}

thread_local! {
    static TIMES: RefCell<PhaseTimes> = RefCell::new(PhaseTimes::default());
}

fn slot(t: &mut PhaseTimes, phase: Phase) -> &mut f64 {
    match phase {
        Phase::Data => &mut t.data_s,
        Phase::Forward => &mut t.forward_s,
        Phase::HeadLoss => &mut t.head_loss_s,
        Phase::Backward => &mut t.backward_s,
        Phase::Optimizer => &mut t.optimizer_s,
    }
}

/// Runs `f`, adding its wall time to `phase` on this thread.
pub fn timed<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    add(phase, t0.elapsed().as_secs_f64());
    out
}

/// Runs `f`, adding its wall time to `phase` less what `f` itself added to the head and
/// loss: the head runs inside the model's loss and inside the table's gradient sums, and
/// its time is counted once, there.
pub fn timed_besides_head<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let (head_before, t0) = (peek().head_loss_s, Instant::now());
    let out = f();
    let head = peek().head_loss_s - head_before;
    add(phase, t0.elapsed().as_secs_f64() - head);
    out
}

/// Adds `secs` to `phase` (negative moves time out of it).
pub fn add(phase: Phase, secs: f64) {
    TIMES.with(|t| *slot(&mut t.borrow_mut(), phase) += secs);
}

/// The times gathered on this thread so far.
pub fn peek() -> PhaseTimes {
    TIMES.with(|t| *t.borrow())
}

/// The times gathered on this thread since the last call, and a fresh start.
pub fn take() -> PhaseTimes {
    TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_accumulate_and_reset() {
        take();
        add(Phase::Forward, 1.5);
        add(Phase::Forward, 0.5);
        add(Phase::Optimizer, 2.0);
        let got = timed(Phase::Data, || 7);
        assert_eq!(got, 7);
        let t = take();
        assert_eq!(t.forward_s, 2.0);
        assert_eq!(t.optimizer_s, 2.0);
        assert!(t.data_s >= 0.0 && t.data_s < 1.0);
        assert_eq!(take(), PhaseTimes::default());
    }
}
