//! The threads and kernels plans run with: an explicit value handed to a
//! model ([`super::Model::with_runtime`]), never a process global.

use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{Executor, multithread_tract_scope};

use super::MAX_THREADS;
use crate::error::ModelError;
use crate::kernels::{Isa, Kernels};

/// What a [`Runtime`] is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Cores one frame's inference may use (1 = the calling thread only).
    pub threads: usize,
    /// Which kernels plans run where they apply: a variant of bvae's own
    /// convolution and dense kernels (the default: [`Isa::detect`]), or
    /// tract's operators everywhere (`BVAE_KERNELS=tract`, or
    /// `bvae bench --tract-conv` to compare the two).
    pub kernels: Kernels,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            threads: 1,
            kernels: Isa::detect().map_or(Kernels::Tract, Kernels::Own),
        }
    }
}

/// How one frame's inference uses more than one core.
#[derive(Debug)]
enum Threads {
    /// The calling thread alone.
    One,
    /// bvae's convolutions split across a spinning team
    /// ([`crate::kernels::team`]); tract's own operators (small here) run on the
    /// frame's thread.
    Team(crate::kernels::team::Team),
    /// No bvae kernel on this CPU (or they are turned off): tract's matrix
    /// products use a thread pool, scoped to the frame's thread.
    Pool {
        pool: Arc<rayon::ThreadPool>,
        /// Held while a frame runs in the pool: one frame at a time.
        frame: Mutex<()>,
    },
}

#[derive(Debug)]
struct Inner {
    options: RuntimeOptions,
    threads: Threads,
}

/// The threads and kernel choice of inference. Cheap to clone: clones
/// share the same threads. Plans keep the runtime of the model they were
/// built from, so a runtime lives as long as its last plan.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Default for Runtime {
    /// One thread, bvae's kernels where the CPU has them; starts no thread.
    fn default() -> Self {
        Runtime {
            inner: Arc::new(Inner {
                options: RuntimeOptions::default(),
                threads: Threads::One,
            }),
        }
    }
}

impl Runtime {
    /// Starts the threads `options` asks for. With more than one thread:
    /// where bvae's convolution kernels run (see [`crate::tract_conv`]),
    /// each frame's convolutions are split across a team of threads that
    /// spin while the frame runs and sleep between frames
    /// ([`crate::kernels::team`]); elsewhere tract's matrix products use a pool.
    pub fn new(options: RuntimeOptions) -> Result<Runtime, ModelError> {
        let n = options.threads;
        if !(1..=MAX_THREADS).contains(&n) {
            return Err(ModelError::Usage(format!(
                "{n} inference threads: expected 1 to {MAX_THREADS} (at most one per core helps)"
            )));
        }
        let cannot =
            |e: &dyn std::fmt::Display| ModelError::Usage(format!("cannot start {n} threads: {e}"));
        let threads = if n == 1 {
            Threads::One
        } else if let Kernels::Own(isa) = options.kernels {
            if !isa.supported() {
                return Err(ModelError::Usage(format!(
                    "this CPU cannot run the {isa} kernels"
                )));
            }
            Threads::Team(crate::kernels::team::Team::new(n).map_err(|e| cannot(&e))?)
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("bvae-infer-{i}"))
                .build()
                .map_err(|e| cannot(&e))?;
            Threads::Pool {
                pool: Arc::new(pool),
                frame: Mutex::new(()),
            }
        };
        Ok(Runtime {
            inner: Arc::new(Inner { options, threads }),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> RuntimeOptions {
        self.inner.options
    }

    /// Cores one frame may use.
    pub fn threads(&self) -> usize {
        self.inner.options.threads
    }

    /// The kernels plans run where they apply.
    pub fn kernels(&self) -> Kernels {
        self.inner.options.kernels
    }

    /// Runs `f`, one frame's inference, with this runtime's threads.
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner.threads {
            Threads::One => f(),
            Threads::Team(team) => crate::kernels::team::frame(Some(team), f),
            Threads::Pool { pool, frame } => {
                // The frame runs on this thread; only tract's matrix
                // products inside it go to the pool (the executor is set
                // for this thread and this call only). One frame at a time:
                // two frames' products in one pool are not known to be safe
                // (tract keeps per-thread scratch; a panic was once seen on
                // armv7 with sessions on two threads).
                let _one = frame.lock().unwrap_or_else(|e| e.into_inner());
                multithread_tract_scope(Executor::MultiThread(pool.clone()), f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded() {
        for n in [0, MAX_THREADS + 1] {
            let e = Runtime::new(RuntimeOptions {
                threads: n,
                kernels: Kernels::Own(Isa::Scalar),
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("expected 1 to 256"), "{e}");
        }
    }

    #[test]
    fn two_runtimes_keep_their_own_settings() {
        let a = Runtime::new(RuntimeOptions {
            threads: 2,
            kernels: Kernels::Tract,
        })
        .unwrap();
        let b = Runtime::default();
        assert_eq!((a.threads(), a.kernels()), (2, Kernels::Tract));
        assert_eq!((b.threads(), b.kernels().isa()), (1, Isa::detect()),);
        // A pool runtime runs the frame on the calling thread.
        let me = std::thread::current().id();
        assert_eq!(a.run(|| std::thread::current().id()), me);
        assert_eq!(b.run(|| 7), 7);
    }
}
