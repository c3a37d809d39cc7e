//! TensorBoard views of a sweep, written when a sweep invocation ends: the HParams dashboard
//! (one session per finished point: recipe, format, learning rate, seed, model and data as
//! hyperparameters; final and best loss, outcome, spike count and max sharpness as metrics) and
//! a Custom Scalars layout that charts one role's statistic for all sites of a layer together,
//! and, when a run inspects its casts, their TransformerEngine-style statistics for the active and
//! the counterfactual recipes the same way (see `fp8_io::tensorboard::{hparams, custom_scalars}`). Both go to fixed file names, so a
//! resumed sweep replaces them; `tensorboard --logdir OUT` shows them.

use crate::sweep::{status, Grid, PointStatus};
use anyhow::Context;
use fp8_core::Role;
use fp8_io::tensorboard::custom_scalars::{
    inspection_layout, precision_layout, write_layout, ROLES, STATS,
};
use fp8_io::tensorboard::hparams::{write_sweep, SweepRun};
use fp8_stats::results::Outcome;
use std::path::Path;

/// Write the HParams summaries of every finished point of `grid` and the precision layout of
/// its models' GEMM sites into the sweep directory `out`.
pub fn write_tensorboard(grid: &Grid, out: &Path) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let mut sites: Vec<String> = Vec::new();
    for point in &grid.points {
        for site in point.identity.model.sites() {
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        let PointStatus::Finished(run) = status(point) else {
            continue;
        };
        let dir = point.run_dir();
        let s = &run.summary;
        runs.push(SweepRun {
            run_dir: dir.strip_prefix(out).unwrap_or(&dir).display().to_string(),
            recipe: point.config.recipe_name(),
            format: element_format(&point.identity.recipe, &point.identity.model.sites()),
            lr: point.config.lr,
            seed: point.config.seed,
            model: point.config.model.clone(),
            data: point.config.data.clone(),
            final_loss: s.final_train_loss.unwrap_or(f64::NAN),
            best_loss: s.best_train_loss.unwrap_or(f64::NAN),
            diverged: s.outcome == Outcome::Diverged,
            spike_count: s.spike_count,
            max_sharpness: s.max_sharpness,
            steps: s.steps,
        });
    }
    let description = format!(
        "fp8 sweep: {} of {} runs finished",
        runs.len(),
        grid.points.len()
    );
    write_sweep(out, &description, &runs)
        .with_context(|| format!("writing TensorBoard HParams into {}", out.display()))?;
    let mut layout = precision_layout(&sites, &ROLES, &STATS);
    let inspects = grid
        .points
        .iter()
        .any(|p| p.config.inspect.is_some() || !p.config.counterfactuals.is_empty());
    if inspects {
        layout
            .category
            .extend(inspection_layout(&sites, &ROLES).category);
    }
    write_layout(out, &layout)
        .with_context(|| format!("writing the TensorBoard layout into {}", out.display()))
}

/// The recipe's element format for the HParams table: what the first site whose forward input
/// it quantizes is cast to at step 0 (`"-"` when it quantizes none, e.g. `fp32`).
fn element_format(recipe_text: &str, sites: &[String]) -> String {
    let Ok(mut recipe) = fp8_core::recipe::from_ron_str(recipe_text, "recipe") else {
        return "-".into();
    };
    // Layer-range overrides need the model's depth; the sweep checked this binding already.
    if recipe.bind_sites(sites).is_err() {
        return "-".into();
    }
    sites
        .iter()
        .find_map(|site| recipe.spec(site, Role::X, 0))
        .map_or_else(|| "-".into(), |spec| spec.cast.format.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout charts every role training can log: the list in fp8-io (which knows nothing
    /// of fp8-core) must be `Role::ALL`'s names.
    #[test]
    fn the_layouts_roles_are_every_role() {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ROLES);
    }
}
