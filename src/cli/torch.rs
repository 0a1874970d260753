//! The commands that need libtorch: `muxmed-torch` runs these (and everything else).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::commands::{self, compare_cmd, load_pipeline, report_failures};
use super::{
    BenchCmd, BenchModelArgs, Command, EvalArgs, ModelCmd, PipelineArgs, SearchCmd, TensorArgs,
    MANIFESTS_DIR, REPORTS_DIR,
};

/// Runs a command that needs libtorch (the ones [`super::commands::run`] leaves).
pub(super) fn run(cmd: &Command) -> Result<ExitCode> {
    match cmd {
        Command::Doctor(a) => commands::doctor(a, || {
            let (checks, probe) = crate::doctor::torch::checks();
            (checks, probe.is_ok())
        }),
        Command::Predict {
            checkpoint,
            model,
            images,
            out,
            device,
            strict,
            calibrated,
        } => predict_cmd(
            checkpoint.as_deref(),
            model.as_deref(),
            images,
            out,
            device.as_deref(),
            (*strict, *calibrated),
        ),
        Command::Export {
            checkpoint,
            out,
            device,
        } => export_cmd(checkpoint, out, device.as_deref()),
        Command::Explain {
            checkpoint,
            images,
            labels,
            top,
            out,
            device,
        } => explain_cmd(checkpoint, images, labels, *top, out, device.as_deref()),
        Command::Localize {
            run,
            split,
            checkpoint,
            boxes,
            on,
            threshold,
            seed,
            device,
        } => localize_cmd(
            on.as_deref(),
            crate::explain::localize::LocalizeArgs {
                run,
                split: *split,
                checkpoint: *checkpoint,
                boxes: boxes.as_deref(),
                on: None,
                threshold: *threshold,
                seed: *seed,
                device: device.as_deref(),
            },
        ),
        Command::Train {
            pipeline,
            run_name,
            overwrite,
            device,
            resume,
            stop_after_steps,
        } => train_cmd(
            pipeline,
            run_name,
            *overwrite,
            device,
            resume,
            *stop_after_steps,
        ),
        Command::Evaluate(a @ EvalArgs { run: Some(run), .. }) => evaluate_run_cmd(run, a),
        Command::Compare(a) => compare_cmd(a),
        Command::Model(m) => model_cmd(m),
        Command::Bench(BenchCmd::Model(b)) => bench_model(b),
        Command::Search(SearchCmd::Run {
            pipeline,
            name,
            resume,
            overwrite,
            device,
        }) => search_run(pipeline, name, *resume, *overwrite, device),
        // commands::run takes every other command before this is called.
        _ => anyhow::bail!("internal: this command needs no libtorch and was not run"),
    }
}

/// `predict`: probabilities for image files, the first 50 printed with their top labels.
fn predict_cmd(
    checkpoint: Option<&Path>,
    model: Option<&Path>,
    images: &[PathBuf],
    out: &Path,
    device: Option<&str>,
    strict_calibrated: (bool, bool),
) -> Result<ExitCode> {
    let source = predict_source(checkpoint, model)?;
    let r = crate::eval::run_eval::predict_files(source, images, out, device, strict_calibrated)?;
    match &r.calibrated_with {
        Some(f) => println!("probabilities calibrated with the temperatures of {f}"),
        None => println!("raw probabilities (--calibrated false)"),
    }
    print_probabilities(&r.labels, &r.probs);
    report_failures(&r.failed);
    println!(
        "wrote probabilities for {} images to {}{}",
        r.written,
        out.display(),
        if r.failed.is_empty() {
            String::new()
        } else {
            format!("; {} input(s) failed (listed above)", r.failed.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `export`: a checkpoint as TorchScript with model.json beside it.
fn export_cmd(checkpoint: &Path, out: &Path, device: Option<&str>) -> Result<ExitCode> {
    let e = crate::eval::export::export(checkpoint, out, device)?;
    let m = &e.manifest_data;
    println!(
        "wrote {} ({}, input [N,3,{r},{r}], {} labels) and {}{}",
        e.model.display(),
        m.arch,
        m.labels.len(),
        e.manifest.display(),
        match &m.thresholds_source {
            Some(s) => format!(" with the thresholds of {s}"),
            None =>
                " (no val thresholds: run `muxmed evaluate --run` first to include them)".into(),
        },
        r = m.resolution,
    );
    Ok(ExitCode::SUCCESS)
}

/// What `localize` prints: its notice, the summary and the files it wrote.
fn print_localization(o: &crate::explain::localize::LocalizeOutcome) -> ExitCode {
    if let Some(n) = &o.notice {
        eprintln!("{n}");
    }
    for line in crate::explain::localize::summary_lines(&o.localization) {
        println!("{line}");
    }
    println!("wrote {} and {}", o.json.display(), o.csv.display());
    for f in &o.figures {
        println!("wrote {}", f.display());
    }
    ExitCode::SUCCESS
}

/// `bench model`: inference and training-step speed, optionally per block.
fn bench_model(b: &BenchModelArgs) -> Result<ExitCode> {
    let r = crate::train::bench::bench(&crate::train::bench::BenchOptions {
        arch: &b.arch,
        batch: b.batch,
        resolution: b.resolution,
        iters: b.iters.max(1),
        memory_format: b.memory_format,
        export: b.export.as_deref(),
        per_block: b.per_block,
    })?;
    let t = &r.train_step;
    println!(
        "{} batch {} at {}px, {}, {} threads: inference {:.1} img/s (unfolded {:.1}), training step {:.1} img/s",
        r.arch,
        r.batch,
        r.resolution,
        r.memory_format,
        r.threads,
        r.infer_images_per_s,
        r.infer_unfolded_images_per_s,
        r.train_images_per_s
    );
    println!(
        "  training step: forward {:.0} ms, loss {:.1} ms, backward {:.0} ms, clip {:.1} ms, optimizer {:.1} ms, zero_grad {:.1} ms",
        t.forward_ms, t.loss_ms, t.backward_ms, t.clip_ms, t.optimizer_ms, t.zero_grad_ms
    );
    print_parts(&r.parts);
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

/// `evaluate --run`: a run's checkpoint on one of its splits.
fn evaluate_run_cmd(run: &Path, a: &EvalArgs) -> Result<ExitCode> {
    if let Some(on) = &a.on {
        return evaluate_external_cmd(run, on, a);
    }
    // Read before the model runs: a missing or bad file, or synthetic data, fails fast.
    let dir = crate::run::RunDir::open(run)?;
    let cfg = dir.config()?;
    let truth = match a.truth_file_in(&cfg.data.root)? {
        Some(f) => Some((crate::data::google2019::read(&f)?, f)),
        None => None,
    };
    let r = crate::eval::run_eval::evaluate_run(
        run,
        Path::new(MANIFESTS_DIR),
        a.key(),
        &a.options(),
        a.device.as_deref(),
    )?;
    if let Some(n) = &r.notice {
        println!("{n}");
    }
    print!("{}", r.evaluation.table());
    for line in r.subgroups.summary() {
        println!("{line}");
    }
    for t in &r.temperatures.labels {
        if let Some(why) = &t.why_none {
            println!("{}: no temperature, raw probabilities kept: {why}", t.label);
        }
    }
    println!("{}", r.calibration.summary());
    println!(
        "wrote {}, {} and {}",
        r.predictions_csv.display(),
        r.metrics_json.display(),
        r.subgroups_json.display()
    );
    if let Some((google, file)) = truth {
        let adj = crate::eval::adjudicated::adjudicate(
            &r.joined,
            &google,
            &file,
            a.split,
            cfg.eval.subgroups.min_positives,
            (a.bootstrap, a.seed),
        )?;
        super::commands::print_adjudicated(&adj, &dir.adjudicated(&a.key()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `localize`, on the run's own split or (`--on`) another pipeline's.
fn localize_cmd(on: Option<&str>, a: crate::explain::localize::LocalizeArgs) -> Result<ExitCode> {
    let other = on
        .map(|p| -> Result<_> {
            let path = crate::config::resolve_pipeline_path(p, Path::new("pipelines"))?;
            let name = crate::config::load(&path, &[])?.config.name;
            let dir = crate::data::manifest_dir::ManifestDir::of(Path::new(MANIFESTS_DIR), &name);
            Ok((name, dir.root().to_path_buf()))
        })
        .transpose()?;
    let a = crate::explain::localize::LocalizeArgs {
        on: other
            .as_ref()
            .map(|(name, dir)| crate::explain::localize::OtherPipeline {
                name,
                manifest_dir: dir,
            }),
        ..a
    };
    crate::explain::localize::localize(&a).map(|o| print_localization(&o))
}

/// `evaluate --run R --on PIPELINE`: external validation.
fn evaluate_external_cmd(run: &Path, on: &str, a: &EvalArgs) -> Result<ExitCode> {
    let path = crate::config::resolve_pipeline_path(on, Path::new("pipelines"))?;
    let other = crate::config::load(&path, &[])?.config;
    let key = crate::run::ExternalKey {
        eval: a.key(),
        all: a.all_splits,
    };
    let bar = crate::progress::Progress::new(0, "prepare (external)");
    let r = crate::eval::external::evaluate_external(
        run,
        Path::new(MANIFESTS_DIR),
        &other,
        key,
        &a.options(),
        a.device.as_deref(),
        &|done, total| bar.set(done as u64, total as u64, ""),
    )?;
    bar.finish();
    let i = &r.info;
    println!(
        "external validation on `{}` ({} data, {} split{}): {} images, {} patients",
        i.pipeline,
        i.dataset,
        i.scored_split,
        if i.scored_split == "all" { "s" } else { "" },
        i.images,
        i.patients
    );
    if !i.not_in_other.is_empty() {
        println!(
            "not scored, not labelled by `{}`: {}",
            i.pipeline,
            i.not_in_other.join(", ")
        );
    }
    if !i.not_in_run.is_empty() {
        println!(
            "not scored, the run has no output for: {}",
            i.not_in_run.join(", ")
        );
    }
    print!("{}", r.shift.table());
    println!("{}", r.shift.line(&i.pipeline));
    for line in r.subgroups.summary() {
        println!("{line}");
    }
    println!(
        "wrote {}, {}, {} and {}",
        r.predictions_csv.display(),
        r.metrics_json.display(),
        r.shift_json.display(),
        r.subgroups_json.display()
    );
    Ok(ExitCode::SUCCESS)
}

impl TensorArgs {
    fn job(&self) -> Result<crate::model::commands::TensorJob<'_>> {
        use crate::model::commands::JobNet;
        let net = match (&self.checkpoint, &self.arch, &self.weights) {
            (Some(c), _, _) => {
                let l = crate::run::checkpoint::load_checkpoint(c, tch::Device::Cpu)?;
                JobNet::Built {
                    arch: l.meta.arch,
                    vs: l.vs,
                    net: l.net,
                }
            }
            (None, Some(arch), Some(weights)) => JobNet::Weights {
                arch,
                num_classes: self.num_classes,
                weights,
            },
            _ => anyhow::bail!("give --checkpoint, or --arch with --weights"),
        };
        Ok(crate::model::commands::TensorJob {
            net,
            input: &self.input,
            output: &self.output,
        })
    }
}

/// The model `predict` was given (clap makes sure it is exactly one).
fn predict_source<'a>(
    checkpoint: Option<&'a Path>,
    model: Option<&'a Path>,
) -> Result<crate::eval::run_eval::ModelSource<'a>> {
    use crate::eval::run_eval::ModelSource;
    match (checkpoint, model) {
        (Some(c), None) => Ok(ModelSource::Checkpoint(c)),
        (None, Some(m)) => Ok(ModelSource::Exported(m)),
        _ => anyhow::bail!("give one of --checkpoint and --model"),
    }
}

/// Each scored file with its three most probable labels (the CSV has all of them); past 50
/// files only the count.
fn print_probabilities(labels: &[String], probs: &[(String, Vec<f64>)]) {
    for (file, p) in probs.iter().take(50) {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&k| format!("{} {:.3}", labels[k], p[k]))
            .collect();
        println!("{file}: {}", top.join(", "));
    }
    if probs.len() > 50 {
        println!("... and {} more (all in the CSV)", probs.len() - 50);
    }
}

fn explain_cmd(
    checkpoint: &std::path::Path,
    images: &[PathBuf],
    labels: &[String],
    top: usize,
    out: &std::path::Path,
    device: Option<&str>,
) -> Result<ExitCode> {
    use crate::explain::heatmaps::{explain, Choice, ExplainArgs};
    let (files, mut failed) = crate::data::files::gather(images)?;
    let o = explain(&ExplainArgs {
        checkpoint,
        images: &files,
        choice: if labels.is_empty() {
            Choice::Top(top)
        } else {
            Choice::Labels(labels.to_vec())
        },
        out,
        device,
    });
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            report_failures(&failed);
            return Err(e);
        }
    };
    failed.extend(o.failed);
    report_failures(&failed);
    for e in &o.explained {
        println!(
            "{} {} p={:.3}: {}",
            e.image, e.label, e.probability, e.picture
        );
    }
    println!(
        "wrote {} explanations ({} and its .npy maps){}",
        o.explained.len(),
        o.index.display(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; {} input(s) failed (listed above)", failed.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn model_cmd(cmd: &ModelCmd) -> Result<ExitCode> {
    use crate::model::commands as model_commands;
    match cmd {
        ModelCmd::Info {
            arch,
            num_classes,
            resolution,
            json,
        } => {
            let i = model_commands::info(arch, *num_classes, *resolution)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!("arch              {}", i.arch);
                println!("classes           {}", i.num_classes);
                println!("params total      {}", i.params_total);
                println!("params backbone   {}", i.params_backbone);
                println!("params head       {}", i.params_head);
                println!(
                    "MAdds @{}        {:.1}M (conv + linear, per image)",
                    i.resolution,
                    i.madds as f64 / 1e6
                );
            }
        }
        ModelCmd::Forward {
            job,
            train_mode,
            stages,
        } => {
            model_commands::forward(job.job()?, *train_mode, *stages)?;
            println!("wrote {}", job.output.display());
        }
        ModelCmd::Gradcam { job } => {
            model_commands::gradcam(job.job()?)?;
            println!("wrote {}", job.output.display());
        }
        ModelCmd::Import { src, arch, out } => {
            println!("{}", model_commands::import(src, arch, out)?)
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The per-part table of `bench model --per-block`, then totals per part kind.
fn print_parts(parts: &[crate::train::bench::PartTiming]) {
    if parts.is_empty() {
        return;
    }
    println!(
        "  {:<12} {:<5} {:<28} {:<18} {:>9} {:>9}",
        "part", "kind", "geometry", "input", "fwd ms", "bwd ms"
    );
    for p in parts {
        let input: Vec<String> = p.input.iter().map(i64::to_string).collect();
        println!(
            "  {:<12} {:<5} {:<28} {:<18} {:>9.1} {:>9.1}",
            p.name,
            p.kind,
            p.detail,
            input.join("×"),
            p.forward_ms,
            p.backward_ms
        );
    }
    let total: f64 = parts.iter().map(|p| p.forward_ms + p.backward_ms).sum();
    for kind in ["stem", "ds", "ir", "sp", "head"] {
        let of: Vec<_> = parts.iter().filter(|p| p.kind == kind).collect();
        let (f, b): (f64, f64) = (
            of.iter().map(|p| p.forward_ms).sum(),
            of.iter().map(|p| p.backward_ms).sum(),
        );
        if !of.is_empty() {
            println!(
                "  {kind:<5} × {:>2}: forward {f:.0} ms, backward {b:.0} ms, {:.0}% of the parts' total",
                of.len(),
                100.0 * (f + b) / total
            );
        }
    }
}

fn train_cmd(
    pipeline: &PipelineArgs,
    run_name: &Option<String>,
    overwrite: bool,
    device: &Option<String>,
    resume: &Option<PathBuf>,
    stop_after_steps: Option<u64>,
) -> Result<ExitCode> {
    use crate::run::Status;
    use crate::train::{train, TrainArgs};
    let (stop, signal) = stop_on_signals()?;
    let args = TrainArgs {
        pipeline: if resume.is_some() {
            None
        } else {
            Some(load_pipeline(pipeline)?)
        },
        resume: resume.clone(),
        run_name: run_name.clone(),
        overwrite,
        device: device.clone(),
        stop_after_steps,
        reports_dir: PathBuf::from(REPORTS_DIR),
        manifests_dir: PathBuf::from(MANIFESTS_DIR),
        progress: true,
    };
    let out = train(&args, stop)?;
    let s = &out.state;
    if let Some(n) = &out.notice {
        println!("{n}");
    }
    if out.already_done {
        println!(
            "{} is already {} after {} epochs: nothing to train. To train longer, start a new run.",
            out.run.root().display(),
            if s.status == Status::EarlyStopped {
                "early-stopped"
            } else {
                "finished"
            },
            s.history.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if s.status == Status::Interrupted {
        println!(
            "interrupted at epoch {}, step {}; checkpoint written. Resume with:\n  muxmed train --resume {}",
            s.epoch + 1,
            s.opt_step,
            out.run.root().display()
        );
        return Ok(interrupted_status(&signal));
    }
    if !out.best_per_label.is_empty() {
        let row = s.history.iter().find(|h| Some(h.epoch) == s.best_epoch);
        println!(
            "best epoch {} (val mean AUROC {:.4}, val loss {:.5}):",
            s.best_epoch.unwrap_or(0),
            row.and_then(|h| h.val_mean_auroc).unwrap_or(f64::NAN),
            row.map_or(f64::NAN, |h| h.val_loss)
        );
        for (l, a) in &out.best_per_label {
            println!(
                "  {:<20} {}",
                l,
                a.map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "undefined".into())
            );
        }
    }
    for w in &out.warnings {
        println!("warning: {w}");
    }
    println!(
        "status: {:?}; peak memory {:.0} MB",
        s.status, out.peak_rss_mb
    );
    println!("run directory: {}", out.run.root().display());
    Ok(ExitCode::SUCCESS)
}

fn search_run(
    pipeline: &PipelineArgs,
    name: &Option<String>,
    resume: bool,
    overwrite: bool,
    device: &Option<String>,
) -> Result<ExitCode> {
    use crate::search::engine::End;
    use crate::search::run::{default_dir, run, SearchArgs};
    let (stop, signal) = stop_on_signals()?;
    let loaded = load_pipeline(pipeline)?;
    let reports = PathBuf::from(REPORTS_DIR);
    let dir = match name {
        Some(n) => reports.join(n),
        None => default_dir(&reports, &loaded.config.name),
    };
    let args = SearchArgs {
        pipeline: loaded,
        dir,
        resume,
        overwrite,
        manifests_dir: PathBuf::from(MANIFESTS_DIR),
        device: device.clone(),
        progress: true,
    };
    let o = run(&args, stop)?;
    println!(
        "search {} in {:.0} s: {}",
        if o.end == End::Finished {
            "finished"
        } else {
            "interrupted"
        },
        o.seconds,
        o.archive.summary()
    );
    for p in &o.written {
        println!("wrote {}", p.display());
    }
    if o.end == End::Interrupted {
        println!(
            "continue with: muxmed search run --pipeline {}{} --resume{}",
            pipeline.pipeline,
            pipeline
                .set
                .iter()
                .map(|s| format!(" --set {s}"))
                .collect::<String>(),
            name.as_ref()
                .map_or(String::new(), |n| format!(" --name {n}"))
        );
        return Ok(interrupted_status(&signal));
    }
    println!(
        "choose from the front: muxmed search select {}",
        o.dir.root().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A stop flag set by SIGINT or SIGTERM (the work in progress finishes its step and writes a
/// checkpoint), and which of the two arrived.
fn stop_on_signals() -> Result<(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, which.clone(), sig as usize)
            .context("installing the signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    Ok((stop, which))
}

/// The shell's convention for a process stopped by a signal: 128 + its number (130 for
/// SIGINT, 143 for SIGTERM).
fn interrupted_status(which: &std::sync::atomic::AtomicUsize) -> ExitCode {
    let sig = which.load(std::sync::atomic::Ordering::SeqCst);
    let sig = if sig == 0 {
        signal_hook::consts::SIGINT as usize
    } else {
        sig
    };
    ExitCode::from(128 + sig as u8)
}
