//! Command-line front end; all behaviour lives in the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "muxmed", version, about = "Fine-tune MUXNet on ChestX-Ray14 and report per-disease AUROC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct PipelineArgs {
    /// Pipeline name (pipelines/NAME.yaml) or path to a pipeline YAML file.
    #[arg(long, default_value = "chestxray")]
    pipeline: String,
    /// Override a config key, e.g. --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the environment: versions, libtorch, threads, CUDA, folders in use.
    Doctor(PipelineArgs),
    /// Print a pipeline's fully resolved config (after --set overrides) as YAML.
    Config(PipelineArgs),
}

fn load_pipeline(args: &PipelineArgs) -> Result<muxmed::config::LoadedPipeline> {
    let path = muxmed::config::resolve_pipeline_path(&args.pipeline, Path::new("pipelines"))?;
    Ok(muxmed::config::load(&path, &args.set)?)
}

fn doctor(args: &PipelineArgs) -> Result<ExitCode> {
    let data_root = load_pipeline(args)
        .map(|p| p.config.data.root)
        .unwrap_or_else(|_| PathBuf::from("data/nih"));
    let mut checks =
        muxmed::doctor::static_checks(&data_root, Path::new("data_manifests"), Path::new("reports"));
    #[cfg(feature = "torch")]
    let ok = {
        let (more, probe) = muxmed::doctor::torch::checks();
        checks.extend(more);
        probe.is_ok()
    };
    #[cfg(not(feature = "torch"))]
    let ok = {
        checks.push(muxmed::doctor::Check {
            name: "libtorch",
            value: "not compiled in (built without the `torch` feature)".into(),
        });
        false
    };
    for c in &checks {
        println!("{:<22} {}", c.name, c.value);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Doctor(a) => doctor(a),
        Command::Config(a) => load_pipeline(a)
            .context("loading the pipeline")
            .map(|p| {
                print!("{}", p.config.to_yaml());
                ExitCode::SUCCESS
            }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
