//! `fp8 model info`: what a model config amounts to, without building it.
//!
//! Everything printed is computed from the config alone (`fp8_models::ModelConfig`), so it
//! answers instantly even for `llama2-7b`. The site list is what recipe globs (`h.0.*`,
//! `*.attn.scores`, `lm_head`) are matched against, so this is the place to check a pattern.

use std::process::ExitCode;

use fp8_models::ModelConfig;

/// `fp8 model …`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do with the model config.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// Subcommands of `fp8 model`.
#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Parameter count, training FLOPs per token and the GEMM site list of a model config.
    Info(InfoArgs),
}

/// `fp8 model info`
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// A preset (tiny, gpt2-mini, gpt2-124m, llama-120m, llama2-7b), a model .ron file, or hf:DIR
    /// (a Hugging Face checkpoint's config.json).
    #[arg(long, short)]
    pub model: String,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "ron")]
    pub json: bool,
    /// Print the resolved config as RON (a starting point for your own model file).
    #[arg(long)]
    pub ron: bool,
}

const FLOPS_FORMULA: &str = "training, fwd+bwd: 6*N_gemm + 12*n_layer*context*d_attn";

/// Run `fp8 model …`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelCommand::Info(a) => info(a),
    }
}

fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let cfg = ModelConfig::from_preset_or_file(&args.model)?;
    if args.ron {
        println!("{}", cfg.to_ron());
    } else if args.json {
        let value = serde_json::json!({
            "model": args.model,
            "config": cfg,
            "param_count": cfg.param_count(),
            "gemm_param_count": cfg.gemm_param_count(),
            "flops_per_token": cfg.flops_per_token(),
            "flops_formula": FLOPS_FORMULA,
            "sites": cfg.sites(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", text(&args.model, &cfg));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(name: &str, cfg: &ModelConfig) -> String {
    let sites = cfg.sites();
    let mut out = format!(
        "model        {name} ({arch})\n\
         shape        {l} layers, {h} heads ({kv} kv), d_model {d}, d_ff {ff}, vocab {v}, context {t}, {tied}\n\
         parameters   {p} ({pm:.1} M)\n\
         GEMM weights {g}\n\
         FLOPs/token  {f} ({FLOPS_FORMULA})\n\
         sites        {n}\n",
        arch = cfg.arch,
        l = cfg.n_layer,
        h = cfg.n_head,
        kv = cfg.n_kv_head,
        d = cfg.d_model,
        ff = cfg.d_ff,
        v = cfg.vocab_size,
        t = cfg.context,
        tied = if cfg.tie_embeddings { "tied embeddings" } else { "untied head" },
        p = thousands(cfg.param_count()),
        pm = cfg.param_count() as f64 / 1e6,
        g = thousands(cfg.gemm_param_count()),
        f = thousands(cfg.flops_per_token()),
        n = sites.len(),
    );
    for s in sites {
        out.push_str("  ");
        out.push_str(&s);
        out.push('\n');
    }
    out
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_counts_and_every_site() {
        let cfg = ModelConfig::from_preset_or_file("gpt2-124m").unwrap();
        let t = text("gpt2-124m", &cfg);
        assert!(t.contains("124,439,808"), "{t}");
        assert!(t.contains("  h.11.mlp.proj\n  lm_head\n"), "{t}");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
