//! A team of worker threads that share one operator's work with the thread
//! running a frame.
//!
//! A frame of a small model runs a dozen operators of 5–50 µs each. Handing
//! half of each to a thread pool that sleeps between tasks costs about as
//! much as the half itself (a futex wake-up per task), so two threads were
//! no faster than one. A [`Team`] keeps its workers spinning for as long as a
//! frame runs ([`frame`]), and lets them sleep between frames: splitting an
//! operator ([`split`]) then costs one cache-line hand-over.
//!
//! Work is split into numbered parts that any member claims; the calling
//! thread claims parts too, so a worker that is late (still waking up, or
//! descheduled) never holds the frame back: its parts are simply done by the
//! caller.
//!
//! One frame runs on a team at a time. A frame started on another thread
//! while the team is busy runs alone, as do [`split`]s outside a frame.

use std::cell::{Cell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long idle workers keep spinning after a frame before they sleep, so
/// that back-to-back frames do not pay a wake-up each.
const LINGER: Duration = Duration::from_micros(200);

/// A job: the part function of the [`split`] running now, its lifetime
/// erased (see the safety argument in [`Team::split`]).
type Job = *const (dyn Fn(usize) + Sync);

/// State shared by the team's members.
struct Shared {
    /// `job id << 32 | parts << 16 | next part to claim`: one word, so that
    /// a claim is a single compare-and-swap that also checks the job.
    state: AtomicU64,
    /// Parts of the current job finished.
    done: AtomicUsize,
    /// The current job's function; written only while no part of any job is
    /// claimed and unfinished, read only by a member holding a claim.
    job: UnsafeCell<Option<Job>>,
    /// A part panicked.
    panicked: AtomicBool,
    /// A frame is running: workers spin instead of sleeping.
    active: AtomicBool,
    /// The team is being dropped.
    stop: AtomicBool,
    /// Sleeping workers wait on this (with `active` and `stop` checked under
    /// the lock, so that no wake-up is lost).
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is the only non-Sync field; its accesses are ordered by the
// claim protocol described on the field and in `Team::split`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

const PART_BITS: u32 = 16;
const PART_MASK: u64 = (1 << PART_BITS) - 1;

fn unpack(state: u64) -> (u64, usize, usize) {
    (
        state >> 32,
        ((state >> PART_BITS) & PART_MASK) as usize,
        (state & PART_MASK) as usize,
    )
}

impl Shared {
    /// Claims the next part of the current job, if one is left.
    fn claim(&self) -> Option<usize> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (_, parts, next) = unpack(s);
            if next >= parts {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next),
                Err(now) => s = now,
            }
        }
    }

    /// Runs claimed part `i` of the current job and counts it done.
    ///
    /// # Safety
    /// The caller holds the claim of part `i` of the current job.
    unsafe fn run_part(&self, i: usize) {
        // SAFETY: a claim of the current job keeps `job` unchanged and its
        // function alive until `done` reaches the job's parts (see
        // `Team::split`).
        let job = unsafe { *self.job.get() };
        if let Some(f) = job {
            // SAFETY: as above.
            let f = unsafe { &*f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    fn work(&self) {
        loop {
            // Spin while a frame runs, and for `LINGER` after it.
            let mut idle_since = None::<Instant>;
            let mut spins = 0u32;
            loop {
                if let Some(i) = self.claim() {
                    // SAFETY: the claim was just made.
                    unsafe { self.run_part(i) };
                    idle_since = None;
                    continue;
                }
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                // Look at the flags and the clock now and then only: the
                // claim above is the hot path.
                if !spins.is_multiple_of(256) {
                    continue;
                }
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if self.active.load(Ordering::Relaxed) {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() > LINGER {
                    break;
                }
            }
            let Ok(mut guard) = self.sleep.lock() else {
                return;
            };
            while !self.active.load(Ordering::Acquire) && !self.stop.load(Ordering::Acquire) {
                guard = match self.wake.wait(guard) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        }
    }
}

/// Worker threads that share operators' work with the thread running a
/// frame; see the module documentation.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the thread running a frame on the team.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Team {
    /// A team of `threads` members: the thread running a frame and
    /// `threads - 1` workers started here.
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            active: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut team = Team {
            shared,
            workers: Vec::new(),
            busy: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let shared = team.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("bvae-team-{i}"))
                .spawn(move || shared.work())?;
            team.workers.push(handle);
        }
        Ok(team)
    }

    /// Members of the team, the calling thread included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)`, …, `f(parts - 1)`, shared between the calling thread and
    /// the workers, and returns when all have returned.
    ///
    /// # Panics
    /// When a part panicked (after every part has finished), or when
    /// `parts` is 65,536 or more.
    fn split(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(parts as u64 <= PART_MASK, "too many parts");
        let sh = &*self.shared;
        let id = (sh.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        // SAFETY (of the job slot): the previous job's parts are all done
        // (this thread waited for them below), so no member holds a claim
        // and none reads the slot; members claim only after the release
        // store of `state` below, which orders this write before their
        // reads. The erased lifetime is sound because this function does
        // not return before every claimed part has finished with `f`.
        let erased: Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _)
        };
        // SAFETY: as above.
        unsafe { *sh.job.get() = Some(erased) };
        sh.done.store(0, Ordering::Relaxed);
        sh.state
            .store(id << 32 | (parts as u64) << PART_BITS, Ordering::Release);
        while let Some(i) = sh.claim() {
            // SAFETY: the claim was just made.
            unsafe { sh.run_part(i) };
        }
        while sh.done.load(Ordering::Acquire) < parts {
            std::hint::spin_loop();
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a part of a team's job panicked");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Ok(_guard) = self.shared.sleep.lock() {
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = w.join();
        }
    }
}

thread_local! {
    /// The team this thread runs a frame on, if any.
    static CURRENT: Cell<Option<*const Team>> = const { Cell::new(None) };
}

/// Runs `f` as one frame on `team` (when given and free): its workers spin
/// until `f` returns, and [`split`]s inside `f` on this thread use them.
pub fn frame<R>(team: Option<&Team>, f: impl FnOnce() -> R) -> R {
    let Some(team) = team else { return f() };
    if CURRENT.with(|c| c.get()).is_some() {
        return f();
    }
    let Ok(_busy) = team.busy.try_lock() else {
        return f();
    };
    let sh = &*team.shared;
    sh.active.store(true, Ordering::Release);
    if let Ok(_guard) = sh.sleep.lock() {
        sh.wake.notify_all();
    }
    /// Ends the frame, also when `f` unwinds.
    struct End<'a>(&'a Shared);
    impl Drop for End<'_> {
        fn drop(&mut self) {
            self.0.active.store(false, Ordering::Release);
            CURRENT.with(|c| c.set(None));
        }
    }
    let _end = End(sh);
    CURRENT.with(|c| c.set(Some(team as *const Team)));
    f()
}

/// Members available to [`split`] on this thread: the team's size inside a
/// [`frame`], else 1.
pub fn threads() -> usize {
    // SAFETY: `CURRENT` is set only for the duration of `frame`, which
    // borrows the team.
    CURRENT.with(|c| c.get().map_or(1, |t| unsafe { (*t).threads() }))
}

/// Runs `f(0)`, …, `f(parts - 1)`: on the team of the current [`frame`]
/// when there is one and more than one part, else one after the other on
/// this thread. Parts may run in any order and at the same time.
pub fn split(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let team = CURRENT.with(|c| c.get());
    match team {
        // SAFETY: as in `threads`.
        Some(t) if parts > 1 => unsafe { (*t).split(parts, f) },
        _ => (0..parts).for_each(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_per_split() {
        let team = Team::new(2).expect("threads");
        let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        frame(Some(&team), || {
            assert_eq!(threads(), 2);
            for round in 0..2000 {
                let parts = 1 + round % 64;
                split(parts, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        let total: usize = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
        let expected: usize = (0..2000).map(|r| 1 + r % 64).sum();
        assert_eq!(total, expected);
        // Part 0 runs in every split, part 63 in one of every 64.
        assert_eq!(hits[0].load(Ordering::Relaxed), 2000);
        assert_eq!(hits[63].load(Ordering::Relaxed), 2000 / 64);
    }

    #[test]
    fn outside_a_frame_parts_run_on_this_thread() {
        assert_eq!(threads(), 1);
        let me = std::thread::current().id();
        let seen = Mutex::new(vec![]);
        split(4, &|i| {
            assert_eq!(std::thread::current().id(), me);
            if let Ok(mut s) = seen.lock() {
                s.push(i);
            }
        });
        assert_eq!(seen.into_inner().ok(), Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn a_busy_team_leaves_other_threads_alone_and_survives_panics() {
        let team = Team::new(3).expect("threads");
        frame(Some(&team), || {
            std::thread::scope(|s| {
                s.spawn(|| frame(Some(&team), || assert_eq!(threads(), 1)));
            });
            let r = catch_unwind(AssertUnwindSafe(|| {
                split(8, &|i| assert!(i != 5, "part 5 fails"));
            }));
            assert!(r.is_err());
            let n = AtomicUsize::new(0);
            split(8, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 8);
        });
        assert_eq!(threads(), 1);
    }
}
