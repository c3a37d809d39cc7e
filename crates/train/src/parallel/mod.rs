//! Data-parallel training: N worker processes train one run, each on its own slice of every
//! global batch, with gradients and recipe scaling state reduced across them every step.
//!
//! # What a data-parallel run computes
//!
//! A step's global batch is `grad_accum` micro-batches of `batch` sequences, micro-batch `m`
//! being `Batcher::batch(…, step, m)` as in one process. With `world` ranks, rank `r` computes
//! micro-batches `r·A .. (r+1)·A` (`A = grad_accum / world`, [`local_micro_batches`]), each
//! loss divided by the *global* `grad_accum` exactly as one process does, and the ranks' sums
//! are then added in rank order ([`wire`]). So `--nproc 2 --batch B` computes what one process
//! computes with `--batch B --grad-accum 2`, addition for addition: the losses agree bit for bit
//! (the integration test `crates/cli/tests/data_parallel.rs` checks it for fp32 and delayed
//! scaling). With more than one micro-batch per rank the additions are grouped per rank
//! (`(g0+g1) + (g2+g3)` instead of `((g0+g1)+g2)+g3`), a rounding-level difference.
//!
//! The run's configuration records the global `grad_accum` (the CLI multiplies its per-rank
//! `--grad-accum` by the number of ranks), so the run's identity does not depend on how many
//! processes computed it, and `--resume` continues it on any number of ranks that divides it.
//!
//! Per step ([`all_reduce_step`], called by the loop between the backward pass and the
//! recipe's `end_step`): the gradients (flattened, [`grads`]) and the loss are summed, and the
//! amax of every (site, role) the recipe observed is max-reduced and handed back to the recipe
//! before its scale update, as TransformerEngine reduces amaxes over the data-parallel group
//! (`fp8_core::PrecisionContext::observe_reduced_amaxes`). Clipping, AdamW and the divergence
//! check then see identical values on every rank, so the weights never drift apart and every
//! rank stops at the same step.
//!
//! Every rank runs the whole loop (evaluation included: the ranks stay in step); only rank 0
//! writes the run directory. The other ranks write their logs into a private scratch directory
//! that is removed when they finish, and write no checkpoints ([`writes_checkpoints`]); on
//! resume they read rank 0's checkpoints (hard links in the scratch directory, [`launch`]).
//!
//! # Why not burn-collective
//!
//! burn-collective 0.21 and its global orchestrator (one "node" per process) were the first
//! choice. Its multi-process path cannot serve a training loop, as its 0.21.0 source shows
//! (`src/global/node/sync.rs`): every global all-reduce ends with `SyncService::sync`, which
//! clears a *copy* of its list of synced peers (`to_vec()`, then `clear()` on the copy), so the
//! shared list only grows, and a process's second all-reduce waits for a list equal to the
//! node set that it can never again be. It also has only `Sum` and
//! `Mean` (amaxes need `Max`), numbers nodes in the order they happen to register (so the ring's
//! summation order changes from run to run with 3 or more ranks), answers a dead peer with a
//! panic inside its runtime (`expect("Peer closed download connection")`), and has no timeout
//! anywhere, so a peer that hangs makes the others wait forever. What it would have provided is a transport; [`wire`]
//! is the smallest one that reduces in a fixed order and reports a lost rank by name.

pub mod grads;
pub mod launch;
pub mod wire;

use crate::step::lock;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_formats::Measure;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;
use wire::{Link, Payload};

pub use launch::{Launch, LaunchFlags, WorkerSpec};

thread_local! {
    static GROUP: RefCell<Option<Link>> = const { RefCell::new(None) };
}

/// Leaves the group (closing the connections) when dropped.
#[must_use = "the group is left when this guard is dropped"]
pub struct GroupGuard(());

impl Drop for GroupGuard {
    fn drop(&mut self) {
        GROUP.with(|g| g.borrow_mut().take());
    }
}

/// Make `link` this thread's data-parallel group until the guard drops: the training loop run
/// on this thread then trains this rank's share of every step. Refuses a `grad_accum` the
/// group's size does not divide.
pub fn activate(link: Link, grad_accum: usize) -> anyhow::Result<GroupGuard> {
    if !grad_accum.is_multiple_of(link.world()) {
        anyhow::bail!(
            "`grad_accum` = {grad_accum}: must be a multiple of the {} ranks",
            link.world()
        );
    }
    GROUP.with(|g| *g.borrow_mut() = Some(link));
    Ok(GroupGuard(()))
}

/// This thread's rank and group size, `None` outside data-parallel training.
pub fn rank_and_world() -> Option<(usize, usize)> {
    GROUP.with(|g| g.borrow().as_ref().map(|l| (l.rank(), l.world())))
}

/// The micro-batch indices of a step this rank computes, out of `grad_accum` in all (all of
/// them outside data-parallel training).
pub fn local_micro_batches(grad_accum: usize) -> Range<usize> {
    match rank_and_world() {
        Some((rank, world)) => {
            let share = grad_accum / world;
            rank * share..(rank + 1) * share
        }
        None => 0..grad_accum,
    }
}

/// Whether this process writes checkpoints: rank 0, or a run that is not data-parallel.
pub fn writes_checkpoints() -> bool {
    rank_and_world().is_none_or(|(rank, _)| rank == 0)
}

/// Prepare the run's precision context for data parallelism: gather each step's amaxes when
/// the recipe observes casts at all. A no-op outside data-parallel training.
pub fn attach(ctx: &Mutex<PrecisionContext>) {
    if rank_and_world().is_some() {
        let mut c = lock(ctx);
        let observes = c.recipe().observe_needs() != Measure::Nothing;
        c.gather_amaxes(observes);
    }
}

/// The step's all-reduce (see the module docs): sums the gradients in `grads` and `loss` over
/// the ranks, and max-reduces the step's amaxes into the recipe. Returns the global loss.
/// Outside data-parallel training it returns `loss` and changes nothing.
pub fn all_reduce_step<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    loss: f64,
    grads: &mut GradientsParams,
    ctx: &Mutex<PrecisionContext>,
) -> anyhow::Result<f64> {
    if rank_and_world().is_none() {
        return Ok(loss);
    }
    let (step, amaxes) = {
        let c = lock(ctx);
        (c.step(), c.step_amaxes())
    };
    let mut payload = Payload {
        sum_f32: grads::flatten::<B, M>(model, grads)?,
        sum_f64: vec![loss],
        max_f32: amaxes.iter().map(|(_, a)| *a).collect(),
    };
    GROUP.with(|g| match g.borrow_mut().as_mut() {
        Some(link) => link.all_reduce(step, &mut payload),
        None => Ok(()),
    })?;
    grads::unflatten::<B, M>(model, grads, &payload.sum_f32);
    let reduced: Vec<_> = amaxes
        .into_iter()
        .zip(payload.max_f32)
        .map(|((key, _), a)| (key, a))
        .collect();
    lock(ctx).observe_reduced_amaxes(&reduced);
    Ok(payload.sum_f64[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fp8_core::Role;
    use fp8_formats::{Scaling, Stats, TensorScale};

    fn delayed_context() -> PrecisionContext {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../recipes/delayed_scaling.ron"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let recipe = fp8_core::recipe::from_ron_str(&text, "delayed_scaling.ron").unwrap();
        let mut c = PrecisionContext::new(recipe);
        c.gather_amaxes(true);
        c
    }

    fn given_scale(c: &PrecisionContext, site: &str, role: Role) -> f32 {
        match c.spec(site, role).unwrap().scaling {
            Scaling::Tensor(TensorScale::Given(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Two ranks see different amaxes; after the reduction both scale from the larger one,
    /// as TransformerEngine's reduced `amax_history[0]` makes them (E4M3: 448 / amax).
    #[test]
    fn reduced_amaxes_give_every_rank_the_group_scale() {
        let site = "h.0.mlp.fc";
        let stats = |amax| Stats {
            amax,
            count: 16,
            ..Stats::default()
        };
        let mut ranks = [delayed_context(), delayed_context()];
        ranks[0].record(site, Role::X, &stats(2.0));
        ranks[0].record(site, Role::X, &stats(1.0)); // a second cast this step: the max stays
        ranks[1].record(site, Role::X, &stats(8.0));
        ranks[0].record(site, Role::W, &stats(0.5));
        ranks[1].record(site, Role::W, &stats(0.25));
        let (a, b) = (ranks[0].step_amaxes(), ranks[1].step_amaxes());
        assert_eq!(a.len(), 2);
        let reduced: Vec<_> = a
            .iter()
            .zip(&b)
            .map(|((key, x), (key_b, y))| {
                assert_eq!(key, key_b);
                (key.clone(), fp8_core::context::max_nan(*x, *y))
            })
            .collect();
        let mut alone = delayed_context();
        alone.record(site, Role::X, &stats(2.0));
        alone.end_step();
        for c in &mut ranks {
            c.observe_reduced_amaxes(&reduced);
            c.end_step();
            assert_eq!(given_scale(c, site, Role::X), 448.0 / 8.0);
            assert_eq!(given_scale(c, site, Role::W), 448.0 / 0.5);
            assert!(c.step_amaxes().is_empty(), "end_step starts a new step");
        }
        // Without the reduction, rank 0 would have scaled from its own amax.
        assert_eq!(given_scale(&alone, site, Role::X), 448.0 / 2.0);
    }

    #[test]
    fn micro_batches_are_split_in_rank_order() {
        assert_eq!(local_micro_batches(4), 0..4);
        assert!(writes_checkpoints());
        assert_eq!(rank_and_world(), None);
    }
}
