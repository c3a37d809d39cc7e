//! `fp8 recipes`: what recipe kinds this binary knows, and whether recipe files build.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Recipe files to check: each is parsed and built, and errors are reported with their
    /// position. With no files, list the registered kinds.
    files: Vec<PathBuf>,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.files.is_empty() {
        let kinds = fp8_core::recipe::kinds();
        if args.json {
            let list: Vec<_> = kinds
                .iter()
                .map(|k| serde_json::json!({"name": k.name, "description": k.description}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            let width = kinds.iter().map(|k| k.name.len()).max().unwrap_or(0);
            for k in kinds {
                println!("{:width$}  {}", k.name, k.description);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for f in &args.files {
        fp8_core::recipe::from_file(f).with_context(|| format!("checking {}", f.display()))?;
        println!("{}: ok", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
