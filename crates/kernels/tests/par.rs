//! The fork-join team: every task runs exactly once, on more than one thread when there are
//! cores for it, nested and concurrent loops complete, and a panic reaches the caller.

use fp8_kernels::par;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The team is process-wide and a loop opened while another is running stays on its caller, so
/// the test harness's parallel threads would make these tests see each other's loops: each test
/// holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn every_task_runs_exactly_once() {
    let _serial = serial();
    for threads in [1, 2, 4] {
        pool(threads).install(|| {
            for n in [0, 1, 2, 3, 17, 1000] {
                let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                par::for_each(n, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                for (i, c) in counts.iter().enumerate() {
                    assert_eq!(
                        c.load(Ordering::Relaxed),
                        1,
                        "task {i} of {n}, {threads} threads"
                    );
                }
            }
        });
    }
}

#[test]
fn threads_follow_rayon_capped_at_the_cores() {
    let _serial = serial();
    assert_eq!(pool(1).install(par::threads), 1);
    assert_eq!(pool(2).install(par::threads), 2.min(cores()));
    assert_eq!(pool(64).install(par::threads), cores());
}

#[test]
fn a_loop_uses_more_than_one_thread() {
    let _serial = serial();
    if cores() < 2 {
        eprintln!("skipped: one core");
        return;
    }
    pool(2).install(|| {
        let ids = Mutex::new(HashSet::new());
        par::for_each(8, |_| {
            ids.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(20));
        });
        assert_eq!(
            ids.lock().unwrap().len(),
            2,
            "8 tasks of 20 ms on a team of 2"
        );
    });
}

#[test]
fn one_thread_runs_on_the_caller() {
    let _serial = serial();
    pool(1).install(|| {
        let me = std::thread::current().id();
        par::for_each(16, |_| assert_eq!(std::thread::current().id(), me));
    });
}

#[test]
fn nested_loops_complete() {
    let _serial = serial();
    pool(2).install(|| {
        let total = AtomicUsize::new(0);
        par::for_each(6, |_| {
            par::for_each(7, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 42);
    });
}

#[test]
fn concurrent_callers_complete() {
    let _serial = serial();
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    par::for_each(10, |_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 3 * 200 * 10);
}

#[test]
fn a_panicking_task_reaches_the_caller_and_the_team_recovers() {
    let _serial = serial();
    pool(2).install(|| {
        for bad in [0, 5, 99] {
            let r = std::panic::catch_unwind(|| {
                par::for_each(100, |i| {
                    if i == bad {
                        panic!("task {i} failed");
                    }
                })
            });
            let msg = r.expect_err("the panic propagates");
            let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(msg, format!("task {bad} failed"));
        }
        let n = AtomicUsize::new(0);
        par::for_each(50, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 50);
    });
}

#[test]
fn chunks_cover_the_slice() {
    let _serial = serial();
    let mut v = vec![0u32; 103];
    let chunks = par::Chunks::new(&mut v, 10);
    assert_eq!(chunks.count(), 11);
    pool(2).install(|| {
        par::for_each(chunks.count(), |i| {
            // SAFETY: task i takes chunk i only.
            for x in unsafe { chunks.get(i) } {
                *x = i as u32 + 1;
            }
        })
    });
    for (j, &x) in v.iter().enumerate() {
        assert_eq!(x, j as u32 / 10 + 1, "element {j}");
    }
}
