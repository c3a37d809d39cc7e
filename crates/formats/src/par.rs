//! A fork-join team for the short parallel loops of a training step: [`for_each`] and [`map`].
//! The casts of this crate and fp8-kernels' GEMMs and row kernels all run on it, so a step's
//! loops share one set of threads (a cast on rayon's pool found the team's helper still
//! polling for the next GEMM, and the two took turns on the cores).
//!
//! # Why not rayon
//!
//! A training step issues a few hundred parallel loops of 10–500 µs each (GEMM tiles, row
//! kernels) from the thread that runs the step, which is not a rayon worker. Rayon hands each
//! such loop to its pool and blocks the caller on a lock until the pool's workers, asleep between
//! loops, have been woken and have finished it: every loop costs a sleep and a wake of the caller
//! and of each worker, and the caller's core does none of the loop's work (a 2-core bench of
//! gpt2-mini: 27 k context switches in 2.6 s, 1.26 CPUs busy). Here the caller runs its own loop
//! together with `threads() − 1` helper threads, and helpers that finish a loop keep watching for
//! the next one for [`SPIN`] before they sleep, so back-to-back loops find them awake. (OpenMP
//! runtimes, and so PyTorch on CPU, work the same way.)
//!
//! # Size and determinism
//!
//! The team has [`threads`] members: rayon's thread count (`RAYON_NUM_THREADS`, or the pool the
//! caller runs in), so one setting governs both, capped at the machine's cores. With one thread
//! nothing is started and every loop runs inline. One loop runs at a time: a loop started while
//! another is open (on another thread, or nested inside a task) runs on its caller alone.
//! Results never depend on any of this, by the contract of [`for_each`]: the tasks are
//! independent and each writes only its own outputs, so which thread runs a task cannot matter.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper keeps polling for the next loop before it sleeps. Longer than the
/// serial stretches between the parallel loops of a step (elementwise ops, 10–300 µs), shorter
/// than the optimizer and logging between steps.
pub const SPIN: Duration = Duration::from_micros(1000);

/// How many threads a loop may use: rayon's `current_num_threads()`, at most the number of
/// cores (a spinning helper on an oversubscribed core would only take time from the others).
pub fn threads() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::current_num_threads().clamp(1, cores)
}

/// Run `task(i)` for every `i` in `0..n`, spread over the team (the caller included); returns when
/// all have run. Tasks must be independent: the order and the thread they run on are unspecified.
/// A panicking task is re-raised here after the others have stopped.
pub fn for_each(n: usize, task: impl Fn(usize) + Sync) {
    let width = threads().min(n);
    if width <= 1 {
        (0..n).for_each(task);
        return;
    }
    let team = team();
    if team
        .busy
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_err()
    {
        (0..n).for_each(task);
        return;
    }
    team.ensure_helpers(width - 1);
    let job = Job {
        task: &task,
        n,
        next: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    {
        // Closes the loop and waits for the helpers even if a task panics here: they hold
        // references into this stack frame.
        let _open = Open::new(team, &job, width - 1);
        job.run();
    }
    let payload = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(payload) = payload {
        panic::resume_unwind(payload);
    }
}

/// `f(i)` for every `i` in `0..n`, run as [`for_each`] does, collected in index order.
pub fn map<T: Send + Default>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out: Vec<T> = (0..n).map(|_| T::default()).collect();
    let slots = Chunks::new(&mut out, 1);
    // SAFETY: task `i` is the only one that takes slot `i`.
    for_each(n, |i| unsafe { slots.get(i) }[0] = f(i));
    out
}

/// One open loop: tasks `0..n`, handed out in order by `next`.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return;
            }
            (self.task)(i);
        }
    }

    /// [`run`](Self::run) on a helper: a panic is kept for the caller and stops the loop.
    fn run_caught(&self) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| self.run())) {
            self.next.store(self.n, Relaxed);
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(payload);
        }
    }
}

struct Helper {
    thread: Thread,
    /// Set by the helper just before it parks; cleared by whoever wakes it.
    sleeping: Arc<AtomicBool>,
}

struct Team {
    /// A caller owns the team (one loop at a time).
    busy: AtomicBool,
    /// Odd while a loop is open; every open and every close adds one.
    epoch: AtomicUsize,
    /// The open loop (valid while `epoch` is odd and a helper is counted in `joined`).
    job: AtomicPtr<Job<'static>>,
    /// How many helpers (indices `0..width`) may join the open loop.
    width: AtomicUsize,
    /// Helpers inside the open loop.
    joined: AtomicUsize,
    helpers: Mutex<Vec<Helper>>,
    started: AtomicUsize,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team {
        busy: AtomicBool::new(false),
        epoch: AtomicUsize::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        width: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        helpers: Mutex::new(Vec::new()),
        started: AtomicUsize::new(0),
    })
}

impl Team {
    fn ensure_helpers(&'static self, count: usize) {
        if self.started.load(Acquire) >= count {
            return;
        }
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        while helpers.len() < count {
            let index = helpers.len();
            let sleeping = Arc::new(AtomicBool::new(false));
            let flag = sleeping.clone();
            let handle = thread::Builder::new()
                .name(format!("fp8-par-{}", index + 1))
                .spawn(move || self.helper(index, &flag))
                .expect("starting a helper thread");
            helpers.push(Helper {
                thread: handle.thread().clone(),
                sleeping,
            });
        }
        self.started.store(helpers.len(), Release);
    }

    /// Wake the first `width` helpers that are asleep.
    fn wake(&self, width: usize) {
        let helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        for h in helpers.iter().take(width) {
            if h.sleeping.swap(false, SeqCst) {
                h.thread.unpark();
            }
        }
    }

    fn helper(&self, index: usize, sleeping: &AtomicBool) {
        let mut seen = 0;
        loop {
            let epoch = self.next_epoch(seen, sleeping);
            seen = epoch;
            if epoch.is_multiple_of(2) || index >= self.width.load(Acquire) {
                continue;
            }
            // Join, then check the loop is still the one seen: the caller closes it and then
            // waits for `joined` to drop to zero, so a loop confirmed open here stays valid
            // until this helper leaves it.
            self.joined.fetch_add(1, SeqCst);
            if self.epoch.load(SeqCst) == epoch {
                // SAFETY: see above; the pointer was stored before the epoch was opened.
                let job = unsafe { &*self.job.load(Acquire) };
                job.run_caught();
            }
            self.joined.fetch_sub(1, Release);
        }
    }

    /// Wait until `epoch` differs from `seen`: poll for [`SPIN`], then park (and poll again
    /// when woken).
    fn next_epoch(&self, seen: usize, sleeping: &AtomicBool) -> usize {
        let mut start = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = self.epoch.load(Acquire);
            if e != seen {
                return e;
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN {
                // Let any other runnable thread on this core go first.
                thread::yield_now();
                continue;
            }
            sleeping.store(true, SeqCst);
            let e = self.epoch.load(SeqCst);
            if e != seen {
                sleeping.store(false, Relaxed);
                return e;
            }
            thread::park();
            sleeping.store(false, Relaxed);
            start = Instant::now();
        }
    }
}

/// An open loop; dropping it closes the loop and waits until no helper is inside it.
struct Open {
    team: &'static Team,
    job: *const Job<'static>,
}

impl Open {
    fn new(team: &'static Team, job: &Job<'_>, width: usize) -> Self {
        // Lifetime erased: `Drop` keeps the job alive for as long as a helper can reach it.
        let job: *const Job<'static> = std::ptr::from_ref(job).cast();
        team.job.store(job.cast_mut(), Release);
        team.width.store(width, Release);
        team.epoch.fetch_add(1, SeqCst);
        team.wake(width);
        Open { team, job }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // SAFETY: the job outlives this guard (both live in `for_each`'s frame).
        let job = unsafe { &*self.job };
        job.next.store(job.n, Relaxed);
        self.team.epoch.fetch_add(1, SeqCst);
        let mut polls = 0u32;
        while self.team.joined.load(SeqCst) != 0 {
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        self.team.job.store(std::ptr::null_mut(), Relaxed);
        self.team.busy.store(false, Release);
    }
}

/// A mutable slice cut into chunks of `chunk` elements (the last may be shorter), for loops whose
/// task `i` writes chunk `i`.
pub struct Chunks<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `Chunks` hands out disjoint chunks (see `get`), like `par_chunks_mut`.
unsafe impl<T: Send> Send for Chunks<'_, T> {}
unsafe impl<T: Send> Sync for Chunks<'_, T> {}

impl<'a, T> Chunks<'a, T> {
    pub fn new(slice: &'a mut [T], chunk: usize) -> Self {
        assert!(chunk > 0, "Chunks: chunk must be > 0");
        Chunks {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            chunk,
            _slice: std::marker::PhantomData,
        }
    }

    /// Number of chunks.
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Chunk `i`.
    ///
    /// # Safety
    /// No two live references to the same chunk: call it once per `i`, as the task that owns
    /// chunk `i` in a [`for_each`] loop does.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, i: usize) -> &'a mut [T] {
        let start = i * self.chunk;
        assert!(
            start < self.len || (self.len == 0 && i == 0),
            "Chunks: chunk {i} out of range"
        );
        let n = self.chunk.min(self.len - start);
        // SAFETY: in bounds; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }
}
