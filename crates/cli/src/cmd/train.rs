//! `fp8 train`: train one model under one recipe.

use crate::progress::TrainProgress;
use fp8_train::backend::ComputeDtype;
use fp8_train::parallel::{self, launch::ScratchRunDir, Launch, WorkerSpec};
use fp8_train::{train, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of a run that diverged (it still wrote its logs and summary).
pub const EXIT_DIVERGED: u8 = 3;

#[derive(clap::Args, Debug, Default)]
// A flag given twice takes its last value, so scripts can append overrides.
#[command(args_override_self = true)]
pub struct Args {
    /// Recipe file (RON), e.g. recipes/delayed_scaling.ron.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// A RON file holding any of the options below; flags given on the command line win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model preset (tiny, gpt2-mini, gpt2-124m, llama-120m, llama2-7b), model RON file, or hf:DIR
    /// (a Hugging Face checkpoint to fine-tune: architecture from config.json, weights loaded).
    #[arg(long)]
    pub model: Option<String>,
    /// Data: `synthetic[:vocab=V,order=K,tokens=N,seed=S]`, a text file or directory
    /// (byte-level), `bpe:PATH[:VOCAB]`, or a directory with nanoGPT train.bin/val.bin.
    #[arg(long)]
    pub data: Option<String>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// AdamW decoupled weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip (0 turns it off).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Seed for initialization and data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate (validation loss, sharpness) every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Log training scalars every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Write a checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Estimate the Hessian's top eigenvalue every N steps (0 = never; costs up to 40
    /// forward+backward passes each), logged as `stability/hessian_top_eig`.
    #[arg(long)]
    pub hessian_every: Option<u64>,
    /// Log weight and gradient histograms every N steps (0 = never).
    #[arg(long)]
    pub histogram_every: Option<u64>,
    /// Measure the gradient's quantization noise every N steps (0 = never; one extra
    /// unquantized forward+backward each), logged as `stability/grad_noise_ratio`.
    #[arg(long)]
    pub grad_noise_every: Option<u64>,
    /// Debug statistics of every cast on logging steps, as TransformerEngine's LogTensorStats
    /// and LogFp8TensorStats compute them (tags inspect/<site>/<role>/…): dynamic range, the
    /// largest per-block dynamic range over BLOCKS (1xN: N elements of a row; NxN: N×N tiles,
    /// e.g. 1x32 or 16x16), MSE, underflow and overflow %, scale-inverse min and max.
    #[arg(long, value_name = "BLOCKS")]
    pub inspect: Option<String>,
    /// Also measure this recipe on the same tensors on logging steps without applying it (tags
    /// counterfactual/<file stem>/<site>/<role>/…; implies --inspect 1x32 unless given).
    /// Training is unchanged. Repeatable.
    #[arg(long = "counterfactual", value_name = "RECIPE.ron")]
    pub counterfactuals: Vec<PathBuf>,
    /// Validation batches per evaluation.
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// ε of the logit sharpness (the box is |y_i| ≤ ε(|x_i|+1)).
    #[arg(long)]
    pub sharpness_eps: Option<f64>,
    /// A loss above this multiple of the first loss counts as divergence (must be > 1).
    #[arg(long)]
    pub divergence_threshold: Option<f64>,
    /// Run directory (default runs/<recipe>-<model>-lr<lr>-s<seed>-<id>, where <id> is the hash
    /// of the resolved configuration).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the run directory's newest intact checkpoint, after checking that the
    /// directory holds a run with exactly these settings. Without it the directory must be new
    /// or empty.
    #[arg(long)]
    pub resume: bool,
    /// Device: cpu, cuda:N (built with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long)]
    pub device: Option<String>,
    /// burn's compute element type: f32, or bf16 (CUDA only; real bf16 compute, unlike the
    /// simulated recipes/bf16.ron).
    #[arg(long, default_value = "f32")]
    pub compute_dtype: ComputeDtype,
    /// Data-parallel training: start N worker processes on this machine (like torchrun's
    /// --nproc-per-node), each computing --grad-accum micro-batches of --batch sequences of every
    /// step; gradients are summed and amaxes max-reduced across all of them. The run records
    /// the global grad_accum (N × nnodes × --grad-accum), so --resume works with any N that
    /// divides it. Each worker gets RAYON_NUM_THREADS = cores / N unless it is set.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Data-parallel training over M machines: run `fp8 train` with the same flags on each, with
    /// --nnodes M, its own --node-rank and the same --orchestrator.
    #[arg(long, value_name = "M")]
    pub nnodes: Option<usize>,
    /// This machine's index among --nnodes (0 hosts global rank 0).
    #[arg(long, value_name = "R")]
    pub node_rank: Option<usize>,
    /// HOST:PORT where global rank 0 (on --node-rank 0) listens for the other ranks.
    #[arg(long, value_name = "HOST:PORT")]
    pub orchestrator: Option<String>,
    /// Under srun: take --nnodes and --node-rank from SLURM_NNODES and SLURM_NODEID (one task
    /// per node, --nproc workers each), or make every task a rank (srun --ntasks-per-node K);
    /// the orchestrator defaults to the first node, port 29500.
    #[arg(long)]
    pub slurm: bool,
}

impl Args {
    /// Defaults, then `--config`, then flags.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { c.$f = v.clone(); })* };
        }
        set!(
            recipe,
            model,
            data,
            steps,
            batch,
            seq,
            lr,
            warmup,
            min_lr,
            weight_decay,
            clip
        );
        set!(
            grad_accum,
            seed,
            eval_every,
            log_every,
            checkpoint_every,
            hessian_every,
            device
        );
        set!(
            histogram_every,
            grad_noise_every,
            eval_batches,
            sharpness_eps,
            divergence_threshold
        );
        if let Some(d) = &self.run_dir {
            c.run_dir = Some(d.clone());
        }
        if let Some(blocks) = &self.inspect {
            c.inspect = Some(blocks.clone());
        }
        if !self.counterfactuals.is_empty() {
            c.counterfactuals = self.counterfactuals.clone();
        }
        if self.recipe.is_none() && self.config.is_none() {
            anyhow::bail!("give a recipe: --recipe FILE.ron (see `fp8 recipes` and recipes/)");
        }
        Ok(c)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = args.resolve()?;
    let launch = parallel::launch::resolve_launch(
        &parallel::LaunchFlags {
            nproc: args.nproc,
            nnodes: args.nnodes,
            node_rank: args.node_rank,
            orchestrator: args.orchestrator.clone(),
            slurm: args.slurm,
        },
        &|name| std::env::var(name).ok(),
    )?;
    // --grad-accum is per rank; the run records the step's micro-batches over all ranks.
    cfg.grad_accum *= parallel::WorkerSpec::world_of(&launch);
    let worker = match launch {
        Launch::Single => None,
        Launch::Launcher { .. } => {
            // Check everything before starting any worker, so a bad flag is one clear error.
            fp8_train::setup::resolve(&cfg)?;
            let exe = std::env::current_exe()?;
            let argv: Vec<_> = std::env::args_os().skip(1).collect();
            let code = parallel::launch::run_workers(&launch, &exe, &argv)?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Launch::Worker(w) => Some(w),
    };
    let dev = fp8_train::backend::train_device(&cfg.device, args.compute_dtype)?;
    let (_group, _scratch) = match &worker {
        Some(w) => join_group(&mut cfg, w, args.resume)?,
        None => (None, None),
    };
    let lead = worker.as_ref().is_none_or(|w| w.rank == 0);
    let mut progress = TrainProgress::default();
    let mut silent = fp8_train::Silent;
    let observer: &mut dyn fp8_train::Observer = if lead { &mut progress } else { &mut silent };
    let summary =
        fp8_train::with_train_backend!(dev, |B, d| train::<B>(&cfg, &d, args.resume, observer))
            .map_err(|e| match &worker {
                Some(w) => e.context(format!("rank {} of {}", w.rank, w.world)),
                None => e,
            })?;
    if lead {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(if summary.diverged() {
        ExitCode::from(EXIT_DIVERGED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Join the data-parallel group as `w.rank`: ranks other than 0 train in a private scratch
/// directory (seeded with the run's checkpoints when resuming), rank 0 in the run directory.
fn join_group(
    cfg: &mut TrainConfig,
    w: &WorkerSpec,
    resume: bool,
) -> anyhow::Result<(Option<parallel::GroupGuard>, Option<ScratchRunDir>)> {
    let resolved = fp8_train::setup::resolve(cfg)?;
    let scratch = if w.rank == 0 {
        None
    } else {
        let s = ScratchRunDir::create(&resolved.run_dir(), w.rank, resume)?;
        cfg.run_dir = Some(s.path.clone());
        Some(s)
    };
    let link = parallel::wire::Link::join(
        w.rank,
        w.world,
        &w.orchestrator,
        &resolved.identity.id(),
        w.timeout,
    )?;
    Ok((Some(parallel::activate(link, cfg.grad_accum)?), scratch))
}
