//! The precision context: the active recipe, the step counter and this step's telemetry.
//!
//! A training loop creates one [`PrecisionContext`], activates it on its thread, runs forward and
//! backward, then calls [`PrecisionContext::end_step`]. The decorator finds it through
//! [`quantize_host`]. The context is thread-local for the same reason as the site scopes: burn's
//! CPU backends run forward and backward on the calling thread, and parallel tests must not see
//! each other's recipes.
//!
//! # What a cast measures
//!
//! Statistics cost more than the cast itself, and most steps need none of them: telemetry is
//! written only every `log_every` steps, and only recipes with scaling state (delayed scaling's
//! amax history) look at every step's casts. [`PrecisionContext::measure`] combines the two: the
//! trainer turns [`PrecisionContext::set_telemetry`] on for the steps it logs, and
//! [`Recipe::observe_needs`] says what the recipe reads. Quantized values never depend on it.

use crate::{Recipe, Role};
use fp8_formats::{DynamicRangeBlocks, Inspection, Measure, QuantSpec, Source, Stats};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Per (site, role) statistics of the casts made during one step.
pub type Telemetry = BTreeMap<(String, Role), Stats>;

/// TE-debug-style statistics of one step ([`fp8_formats::inspect`]) per (site, role, recipe):
/// the recipe is `""` for the active one, else the name a counterfactual was added under. A
/// site cast several times in one step keeps its last inspection.
pub type Inspections = BTreeMap<(String, Role, String), Inspection>;

/// A recipe measured on the active recipe's tensors without being applied.
struct Counterfactual {
    name: String,
    recipe: Box<dyn Recipe>,
}

/// The active recipe and what it has done this step.
pub struct PrecisionContext {
    recipe: Box<dyn Recipe>,
    step: u64,
    telemetry: Telemetry,
    recording: bool,
    /// Gather this step's telemetry (see [`PrecisionContext::set_telemetry`]).
    logging: bool,
    /// Inspect casts on logging steps, with this per-block dynamic-range geometry.
    inspect: Option<DynamicRangeBlocks>,
    counterfactuals: Vec<Counterfactual>,
    inspections: Inspections,
    /// This step's largest amax per (site, role), while data-parallel training gathers them
    /// ([`gather_amaxes`](Self::gather_amaxes)).
    step_amaxes: Option<BTreeMap<(String, Role), f32>>,
}

impl PrecisionContext {
    pub fn new(recipe: Box<dyn Recipe>) -> Self {
        PrecisionContext {
            recipe,
            step: 0,
            telemetry: Telemetry::new(),
            recording: true,
            logging: true,
            inspect: None,
            counterfactuals: Vec::new(),
            inspections: Inspections::new(),
            step_amaxes: None,
        }
    }

    /// On logging steps, also compute TE-debug statistics ([`Inspections`]) of every cast the
    /// active recipe makes (`Some(blocks)`), or stop (`None`). Steps that log no telemetry pay
    /// nothing for it.
    pub fn set_inspection(&mut self, blocks: Option<DynamicRangeBlocks>) {
        self.inspect = blocks;
    }

    /// Measure `recipe` too, on the same tensors, on logging steps ("what would MXFP8's
    /// underflow be during this delayed-scaling run?"): it changes nothing in training. Its
    /// scaling state follows the tensors it sees, on the steps it sees them. Turns inspection
    /// on (1×32 blocks) if it was off.
    pub fn add_counterfactual(&mut self, name: &str, recipe: Box<dyn Recipe>) {
        self.inspect.get_or_insert(DynamicRangeBlocks {
            size: 32,
            two_d: false,
        });
        self.counterfactuals.push(Counterfactual {
            name: name.to_string(),
            recipe,
        });
    }

    /// Whether a cast made now should be handed to [`inspect`](Self::inspect).
    pub fn wants_inspection(&self) -> bool {
        self.recording && self.logging && self.inspect.is_some()
    }

    /// Inspect the high-precision tensor `data` (C order, `shape`) of `role` at `site` under
    /// the active recipe and every counterfactual that quantizes it.
    pub fn inspect(&mut self, site: &str, role: Role, data: &[f32], shape: &[usize]) {
        let Some(blocks) = self.inspect.filter(|_| self.wants_inspection()) else {
            return;
        };
        let step = self.step;
        if let Some(spec) = self.recipe.spec(site, role, step) {
            let i = fp8_formats::inspect(data, shape, &spec, blocks);
            self.inspections
                .insert((site.to_string(), role, String::new()), i);
        }
        for cf in &mut self.counterfactuals {
            if let Some(spec) = cf.recipe.spec(site, role, step) {
                let i = fp8_formats::inspect(data, shape, &spec, blocks);
                cf.recipe.observe(site, role, &i.cast);
                self.inspections
                    .insert((site.to_string(), role, cf.name.clone()), i);
            }
        }
    }

    /// The inspections gathered since the last call.
    pub fn take_inspections(&mut self) -> Inspections {
        std::mem::take(&mut self.inspections)
    }

    /// Each counterfactual recipe's scaling state by name, for a checkpoint, so a resumed run's
    /// counterfactual statistics continue exactly.
    pub fn counterfactual_states(&self) -> BTreeMap<String, serde_json::Value> {
        self.counterfactuals
            .iter()
            .map(|cf| (cf.name.clone(), cf.recipe.state()))
            .collect()
    }

    /// Restore the counterfactuals' states saved by
    /// [`counterfactual_states`](Self::counterfactual_states). Every counterfactual must have
    /// one, and every state a counterfactual: anything else means the checkpoint was written
    /// with other counterfactuals.
    pub fn restore_counterfactuals(
        &mut self,
        mut states: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), crate::RecipeError> {
        for cf in &mut self.counterfactuals {
            let state = states.remove(&cf.name).ok_or_else(|| {
                crate::RecipeError::State(format!(
                    "the checkpoint holds no state for counterfactual recipe `{}`",
                    cf.name
                ))
            })?;
            cf.recipe.restore(state)?;
        }
        if let Some(name) = states.keys().next() {
            return Err(crate::RecipeError::State(format!(
                "the checkpoint holds state for counterfactual recipe `{name}`, which this run \
                 does not measure"
            )));
        }
        Ok(())
    }

    /// Wrap in the shared handle that [`activate`] takes.
    pub fn shared(self) -> Arc<Mutex<PrecisionContext>> {
        Arc::new(Mutex::new(self))
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// A context for training a model with these GEMM sites: [`PrecisionContext::new`] plus
    /// [`PrecisionContext::bind_sites`], so layer-range overrides (`first: N`, `last: M`) know the
    /// model's depth. Every trainer-side caller uses this one.
    pub fn for_sites(
        recipe: Box<dyn Recipe>,
        sites: &[String],
    ) -> Result<Self, crate::RecipeError> {
        let mut ctx = PrecisionContext::new(recipe);
        ctx.bind_sites(sites)?;
        Ok(ctx)
    }

    /// Tell the recipe the model's GEMM sites ([`Recipe::bind_sites`]); call once before the
    /// first step when the recipe overrides layer ranges.
    pub fn bind_sites(&mut self, sites: &[String]) -> Result<(), crate::RecipeError> {
        self.recipe.bind_sites(sites)
    }

    pub fn recipe(&self) -> &dyn Recipe {
        self.recipe.as_ref()
    }

    pub fn recipe_mut(&mut self) -> &mut dyn Recipe {
        self.recipe.as_mut()
    }

    /// The spec for `role` of `site` at the current step.
    pub fn spec(&self, site: &str, role: Role) -> Option<QuantSpec> {
        self.recipe.spec(site, role, self.step)
    }

    /// Evaluation passes cast exactly like training but must not feed the recipe's scaling
    /// state nor the step's telemetry: turn recording off around them.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Whether this step's casts gather telemetry (on by default). A training loop turns it
    /// off for the steps whose telemetry it does not log: their casts then measure only what
    /// the recipe itself needs ([`Recipe::observe_needs`]), and [`end_step`](Self::end_step)
    /// hands back an empty map. The quantized values are the same either way.
    pub fn set_telemetry(&mut self, on: bool) {
        self.logging = on;
    }

    /// What a cast made now must measure: everything when telemetry is gathered, nothing while
    /// recording is off, else what the recipe observes.
    pub fn measure(&self) -> Measure {
        if !self.recording {
            Measure::Nothing
        } else if self.logging {
            Measure::Full
        } else {
            self.recipe.observe_needs()
        }
    }

    /// Record one cast: tell the recipe, and merge into this step's telemetry when it is
    /// gathered (a site called several times in one step, as with gradient accumulation, keeps
    /// the largest amax and count-weighted fractions and SNR).
    pub fn record(&mut self, site: &str, role: Role, stats: &Stats) {
        if !self.recording {
            return;
        }
        self.recipe.observe(site, role, stats);
        if let Some(amaxes) = &mut self.step_amaxes {
            let a = amaxes.entry((site.to_string(), role)).or_insert(stats.amax);
            *a = max_nan(*a, stats.amax);
        }
        if !self.logging {
            return;
        }
        self.telemetry
            .entry((site.to_string(), role))
            .and_modify(|t| *t = merge(t, stats))
            .or_insert(*stats);
    }

    /// Telemetry recorded since the last [`end_step`](Self::end_step).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Finish an optimizer step: the recipe updates its scales, the step advances, and the
    /// step's telemetry is handed back.
    pub fn end_step(&mut self) -> Telemetry {
        if let Some(amaxes) = &mut self.step_amaxes {
            amaxes.clear();
        }
        self.recipe.end_step();
        for cf in &mut self.counterfactuals {
            cf.recipe.end_step();
        }
        self.step += 1;
        std::mem::take(&mut self.telemetry)
    }
}

// ---- Data parallelism: the amax reduction hook ------------------------------------------------
// TransformerEngine max-reduces each tensor's amax over the data-parallel group before the
// scale update, so every rank computes the same scales (a wrong reduction group diverged
// Megatron-LM runs). The trainer's data-parallel layer (fp8-train `parallel`) gathers this
// step's local amaxes, reduces them across ranks, and hands them back before `end_step`.
impl PrecisionContext {
    /// Gather this step's largest amax per (site, role) for [`step_amaxes`](Self::step_amaxes)
    /// (on) or stop (off, the default). Data-parallel training turns it on when the recipe
    /// observes casts at all.
    pub fn gather_amaxes(&mut self, on: bool) {
        self.step_amaxes = on.then(BTreeMap::new);
    }

    /// The amaxes recorded since the last [`end_step`](Self::end_step), in (site, role) order;
    /// empty unless [`gather_amaxes`](Self::gather_amaxes) is on.
    pub fn step_amaxes(&self) -> Vec<((String, Role), f32)> {
        self.step_amaxes
            .iter()
            .flatten()
            .map(|(k, &a)| (k.clone(), a))
            .collect()
    }

    /// Tell the recipe each (site, role)'s amax max-reduced over every data-parallel rank,
    /// before [`end_step`](Self::end_step). It arrives as one more
    /// [`Recipe::observe`] call whose `Stats` carry only the amax (`count` 0, no underflow,
    /// saturation or error): delayed scaling keeps the largest amax of a step, so its history
    /// then holds the group's maximum, as TransformerEngine's does.
    pub fn observe_reduced_amaxes(&mut self, reduced: &[((String, Role), f32)]) {
        for ((site, role), amax) in reduced {
            let stats = Stats {
                amax: *amax,
                scale: 1.0,
                snr_db: f64::INFINITY,
                ..Stats::default()
            };
            self.recipe.observe(site, *role, &stats);
        }
    }
}

/// The larger of two amaxes, NaN if either is (a NaN amax must reach the scale update).
pub fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn merge(a: &Stats, b: &Stats) -> Stats {
    let n = (a.count + b.count).max(1) as f64;
    let (wa, wb) = (a.count as f64 / n, b.count as f64 / n);
    Stats {
        amax: a.amax.max(b.amax),
        scale: b.scale,
        underflow: a.underflow * wa + b.underflow * wb,
        saturation: a.saturation * wa + b.saturation * wb,
        snr_db: if a.snr_db.is_infinite() || b.snr_db.is_infinite() {
            a.snr_db.min(b.snr_db)
        } else {
            a.snr_db * wa + b.snr_db * wb
        },
        count: a.count + b.count,
    }
}

thread_local! {
    static ACTIVE: RefCell<Vec<Arc<Mutex<PrecisionContext>>>> = const { RefCell::new(Vec::new()) };
}

/// Deactivates its context when dropped.
#[must_use = "the context is deactivated when this guard is dropped"]
pub struct ActiveGuard {
    depth: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.borrow_mut().truncate(self.depth - 1));
    }
}

/// Make `ctx` the active context on this thread until the guard drops.
pub fn activate(ctx: Arc<Mutex<PrecisionContext>>) -> ActiveGuard {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        a.push(ctx);
        ActiveGuard { depth: a.len() }
    })
}

/// Run `f` on the active context, if there is one.
pub fn with_active<R>(f: impl FnOnce(&mut PrecisionContext) -> R) -> Option<R> {
    let ctx = ACTIVE.with(|a| a.borrow().last().cloned())?;
    let mut guard = ctx.lock().unwrap_or_else(|p| p.into_inner());
    Some(f(&mut guard))
}

/// The spec the active recipe gives `role` of `site` now, if any.
pub fn active_spec(site: &str, role: Role) -> Option<QuantSpec> {
    with_active(|c| c.spec(site, role)).flatten()
}

/// The spec the active recipe gives `role` of `site` now and what the cast must measure
/// ([`PrecisionContext::measure`]); `None` when no context is active or the tensor stays f32.
pub fn active_cast(site: &str, role: Role) -> Option<(QuantSpec, Measure)> {
    with_active(|c| c.spec(site, role).map(|s| (s, c.measure()))).flatten()
}

/// Record a cast made under [`active_cast`] with the statistics its `measure` gathered (a cast
/// that measured nothing has nothing to tell).
pub fn record_cast(site: &str, role: Role, stats: &Stats, measure: Measure) {
    if measure != Measure::Nothing {
        with_active(|c| c.record(site, role, stats));
    }
}

/// Quantize host data in place for `role` of `site` under the active recipe and record the
/// telemetry. Returns false (and leaves `data` alone) when no recipe is active or the recipe keeps
/// this tensor in f32.
pub fn quantize_host(site: &str, role: Role, data: &mut [f32], shape: &[usize]) -> bool {
    with_active(|c| {
        let Some(spec) = c.spec(site, role) else {
            return false;
        };
        let measure = c.measure();
        let stats = fp8_formats::quantize_from(Source::InPlace, data, shape, &spec, measure);
        if measure != Measure::Nothing {
            c.record(site, role, &stats);
        }
        true
    })
    .unwrap_or(false)
}
