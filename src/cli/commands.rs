//! The commands that need no libtorch: `muxmed` runs these itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{
    AugmentCmd, BenchCmd, Command, CompareArgs, EvalArgs, PipelineArgs, SearchCmd, MANIFESTS_DIR,
    REPORTS_DIR,
};

/// Runs `cmd` when it needs no libtorch; None when it does (the caller hands it over).
pub(super) fn run(cmd: &Command) -> Option<Result<ExitCode>> {
    Some(match cmd {
        Command::Config(a) => load_pipeline(a).context("loading the pipeline").map(|p| {
            print!("{}", p.config.to_yaml());
            ExitCode::SUCCESS
        }),
        Command::Manifest { pipeline, out } => manifest_cmd(pipeline, out.as_deref()),
        Command::Prepare(p) => prepare_cmd(p),
        Command::Decode { files, output } => decode_cmd(files, output),
        Command::Synth {
            out,
            images,
            patients,
            size,
            seed,
            overwrite,
            format,
        } => synth_cmd(out, *images, *patients, *size, *seed, *overwrite, *format),
        Command::Augment(a) => augment_cmd(a),
        Command::Report(a) => report_cmd(a),
        Command::Evaluate(a) if a.run.is_none() => evaluate_predictions(a),
        Command::Bench(BenchCmd::Data {
            pipeline,
            images,
            workers,
            batch,
            epochs,
        }) => bench_data(pipeline, images, *workers, *batch, *epochs),
        Command::Bench(BenchCmd::Manifest { pipeline, runs }) => bench_manifest(pipeline, *runs),
        Command::Search(SearchCmd::Front {
            archive,
            points,
            reference,
            json,
        }) => search_front(
            archive.as_deref(),
            points.as_deref(),
            reference.clone(),
            *json,
        ),
        Command::Search(SearchCmd::Select { search, count, eps }) => {
            search_select(search, *count, *eps)
        }
        // Without libtorch compare leaves out the speed and memory figures; with it, the
        // measurement belongs to muxmed-torch.
        #[cfg(not(feature = "torch"))]
        Command::Compare(a) => compare_cmd(a),
        #[cfg(feature = "torch")]
        Command::Compare(_) => return None,
        Command::Doctor(_)
        | Command::Predict { .. }
        | Command::Export { .. }
        | Command::Explain { .. }
        | Command::Localize { .. }
        | Command::Train { .. }
        | Command::Evaluate(_)
        | Command::Model(_)
        | Command::Bench(BenchCmd::Model(_))
        | Command::Search(SearchCmd::Run { .. }) => return None,
    })
}

pub(super) fn load_pipeline(args: &PipelineArgs) -> Result<crate::config::LoadedPipeline> {
    let path = crate::config::resolve_pipeline_path(&args.pipeline, Path::new("pipelines"))?;
    Ok(crate::config::load(&path, &args.set)?)
}

/// `doctor`: the environment, with `libtorch` giving the libtorch checks and whether its
/// probe passed.
pub(super) fn doctor(
    args: &PipelineArgs,
    libtorch: impl FnOnce() -> (Vec<crate::doctor::Check>, bool),
) -> Result<ExitCode> {
    let data_root = load_pipeline(args)
        .map(|p| p.config.data.root)
        .unwrap_or_else(|_| PathBuf::from("data/nih"));
    let mut checks =
        crate::doctor::static_checks(&data_root, Path::new(MANIFESTS_DIR), Path::new(REPORTS_DIR));
    let (more, ok) = libtorch();
    checks.extend(more);
    for c in &checks {
        println!("{:<22} {}", c.name, c.value);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn manifest_cmd(args: &PipelineArgs, out: Option<&Path>) -> Result<ExitCode> {
    let p = load_pipeline(args)?;
    let cfg = &p.config;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir(cfg));
    let started = std::time::Instant::now();
    let mut m = crate::data::manifest::build(&cfg.data, true)
        .with_context(|| format!("building the manifest for pipeline `{}`", cfg.name))?;
    m.write(&out)?;
    print!("{}", m.summary()?);
    for s in m.empty_splits() {
        println!("warning: the {s} split is empty: `train` needs train and val images, `evaluate` needs the split it scores");
    }
    let val = crate::data::dataset::load_split(&out, crate::labels::Split::Val)?;
    if let Some(w) = crate::data::dataset::thin_val_warning(&val) {
        println!("warning: {w}");
    }
    println!(
        "wrote {} in {:.2} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `evaluate --predictions` (`evaluate --run` needs libtorch).
fn evaluate_predictions(a: &EvalArgs) -> Result<ExitCode> {
    let truth = a.predictions_truth_file()?;
    let job = a.job(truth.as_deref())?;
    let dir = a.out.clone().unwrap_or_else(|| {
        job.predictions
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let path = crate::eval::scoring::metrics_file(&dir, a.split)?;
    let crate::eval::job::PredictionsEvaluation {
        evaluation: ev,
        subgroups: sub,
        adjudicated,
        ..
    } = job.run(&a.options())?;
    print!("{}", ev.table());
    for line in sub.summary() {
        println!("{line}");
    }
    if ev.per_label.len() < crate::labels::LABELS.len() {
        println!(
            "--labels-subset: {} of {} labels scored; the mean AUROC is over these labels only",
            ev.per_label.len(),
            crate::labels::LABELS.len()
        );
    }
    println!(
        "{} predictions without labels, {} labelled images without predictions",
        ev.predictions_without_labels, ev.labelled_images_without_predictions
    );
    ev.write(&path)?;
    let sub_path = crate::eval::scoring::subgroups_file(&dir, a.split);
    sub.write(&sub_path)?;
    println!("wrote {} and {}", path.display(), sub_path.display());
    if let Some(adj) = adjudicated {
        let p = crate::eval::scoring::adjudicated_file(&dir, a.split);
        print_adjudicated(&adj, &p)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `--truth google2019`'s scores and writes them to `path`.
pub(super) fn print_adjudicated(
    adj: &crate::eval::adjudicated::Adjudicated,
    path: &Path,
) -> Result<()> {
    println!(
        "adjudicated labels (Google 2019, `{}` set): {} images, {} patients ({} of the scored images are in Google's other set)",
        adj.set, adj.n_images, adj.n_patients, adj.in_other_set
    );
    for line in adj.summary() {
        println!("  {line}");
    }
    adj.write(path)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn report_cmd(a: &EvalArgs) -> Result<ExitCode> {
    let html = match &a.run {
        Some(run) => {
            let (html, notice) = crate::report::report_run(run, Path::new(MANIFESTS_DIR), a.key())?;
            if let Some(n) = notice {
                println!("{n}");
            }
            html
        }
        None => {
            let out = a
                .out
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--predictions needs --out DIR for the report"))?;
            let truth = a.predictions_truth_file()?;
            let (ev, html) =
                crate::report::report_predictions(&a.job(truth.as_deref())?, out, &a.options())?;
            print!("{}", ev.table());
            html
        }
    };
    println!("wrote {}", html.display());
    Ok(ExitCode::SUCCESS)
}

fn manifest_dir(cfg: &crate::config::PipelineConfig) -> PathBuf {
    crate::data::manifest_dir::ManifestDir::of(Path::new(MANIFESTS_DIR), &cfg.name)
        .root()
        .to_path_buf()
}

fn prepare_cmd(args: &PipelineArgs) -> Result<ExitCode> {
    let p = load_pipeline(args)?;
    let dir = manifest_dir(&p.config);
    if !crate::data::manifest_dir::ManifestDir::new(&dir)
        .manifest_json()
        .is_file()
    {
        anyhow::bail!(
            "no manifest at {}: run `muxmed manifest --pipeline {}` first",
            dir.display(),
            args.pipeline
        );
    }
    let bar = crate::progress::Progress::new(0, "prepare");
    let started = std::time::Instant::now();
    let r = crate::data::cache::prepare(&dir, &p.config.augment, &|done, total| {
        bar.set(done as u64, total as u64, "")
    })?;
    bar.finish();
    let kept = r.images - r.skipped.len();
    let skipped = match r.skipped.len() {
        0 => String::new(),
        n => format!(", {n} skipped as unreadable"),
    };
    if r.reused {
        println!(
            "cache at {} is complete and current ({kept} images{skipped})",
            r.dir.display(),
        );
    } else {
        if r.resumed_from > 0 {
            println!("resumed an interrupted prepare at image {}", r.resumed_from);
        }
        println!(
            "prepared {kept} images{skipped} into {} in {:.1} s",
            r.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    Ok(ExitCode::SUCCESS)
}

fn augment_cmd(cmd: &AugmentCmd) -> Result<ExitCode> {
    match cmd {
        AugmentCmd::Preview {
            pipeline,
            images,
            variants,
            out,
        } => {
            let p = load_pipeline(pipeline)?;
            let out = out.clone().unwrap_or_else(|| {
                Path::new(REPORTS_DIR).join(format!("augment_preview_{}.png", p.config.name))
            });
            let path = crate::data::commands::preview(
                &p.config,
                &manifest_dir(&p.config),
                *images,
                *variants,
                &out,
            )?;
            println!("wrote {}", path.display());
        }
        AugmentCmd::Stats(pipeline) => {
            let p = load_pipeline(pipeline)?;
            let (m, s, n) = crate::data::commands::stats(&p.config, &manifest_dir(&p.config))?;
            println!("train images: {n}; pixel mean {m:.4}, std {s:.4}");
            println!("before to_rgb:  - normalize: {{mean: [{m:.4}], std: [{s:.4}]}}");
            println!("after to_rgb:   - normalize: {{mean: [{m:.4}, {m:.4}, {m:.4}], std: [{s:.4}, {s:.4}, {s:.4}]}}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decode_cmd(files: &[PathBuf], output: &std::path::Path) -> Result<ExitCode> {
    let o = crate::data::files::decode_to(files, output)
        .with_context(|| format!("writing into {}", output.display()))?;
    for d in &o.written {
        println!(
            "{}: {}×{} {} -> {}",
            d.source.display(),
            d.width,
            d.height,
            d.how,
            d.safetensors.display()
        );
        if let Some(w) = &d.warning {
            eprintln!("warning: {}: {w}", d.source.display());
        }
    }
    report_failures(&o.failed);
    println!(
        "decoded {} of {} inputs into {}",
        o.written.len(),
        o.written.len() + o.failed.len(),
        output.display()
    );
    Ok(all_failed(o.written.len(), o.failed.len()))
}

/// One `error: FILE: reason` line per failed input.
pub(super) fn report_failures(failed: &[(PathBuf, String)]) {
    for (p, e) in failed {
        let p = p.display().to_string();
        if e.starts_with(&p) {
            eprintln!("error: {e}");
        } else {
            eprintln!("error: {p}: {e}");
        }
    }
}

/// The exit status rule of the commands that take many inputs: non-zero only when every
/// input failed.
fn all_failed(ok: usize, failed: usize) -> ExitCode {
    if ok == 0 && failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `synth`: a synthetic dataset in NIH's format or another dataset's.
fn synth_cmd(
    out: &Path,
    images: usize,
    patients: Option<usize>,
    size: u32,
    seed: u64,
    overwrite: bool,
    format: crate::data::synth_formats::SynthFormat,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let o = crate::data::synth::SynthOptions {
        images,
        patients,
        size,
        seed,
        test_fraction: 0.2,
        overwrite,
    };
    crate::data::synth_formats::write(out, &o, format)
        .map(|r| {
            println!(
                "wrote {} synthetic images ({} format) of {} patients to {} in {:.1} s",
                r.len(),
                format.dataset().key(),
                r.iter().map(|x| x.patient).max().unwrap_or(0),
                out.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        })
        .map_err(anyhow::Error::from)
}

/// `bench data`: decode + resize, and cache + augmentation + batching, in images per second.
fn bench_data(
    pipeline: &PipelineArgs,
    images: &Path,
    workers: Option<usize>,
    batch: usize,
    epochs: usize,
) -> Result<ExitCode> {
    let p = load_pipeline(pipeline)?;
    let w = workers.unwrap_or(p.config.runtime.data_workers as usize);
    let r = crate::data::commands::bench(
        images,
        &p.config.augment.train,
        p.config.augment.working_size,
        w,
        batch,
        epochs,
    )?;
    println!(
        "{} images, {} workers: (a) decode + resize {:.1} img/s; (b) cache + train augmentation + batching {:.1} img/s",
        r.images, r.workers, r.decode_resize_images_per_s, r.cache_augment_batch_images_per_s
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

/// `bench manifest`: the manifest build's time from the metadata.
fn bench_manifest(pipeline: &PipelineArgs, runs: usize) -> Result<ExitCode> {
    let p = load_pipeline(pipeline)?;
    let (rows, median, min) = crate::data::manifest::bench_build(&p.config.data, runs)?;
    println!(
        "manifest build, {rows} rows, image scan excluded: median {median:.3} s, min {min:.3} s over {} runs",
        runs.max(1)
    );
    Ok(ExitCode::SUCCESS)
}

/// `search front`: ranks, crowding and hypervolume of an archive or a points CSV.
fn search_front(
    archive: Option<&Path>,
    points: Option<&Path>,
    reference: Option<Vec<f64>>,
    json: bool,
) -> Result<ExitCode> {
    use crate::search::outputs::{front_input, front_lines, front_stats};
    let input = front_input(archive, points, reference)?;
    let s = front_stats(&input.points, &input.reference);
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        for line in front_lines(&input, &s) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `search select`: the high trade-off points of a search's front and its most accurate one.
fn search_select(search: &Path, count: usize, eps: f64) -> Result<ExitCode> {
    use crate::search::archive::SearchDir;
    use crate::search::outputs::select;
    let dir = SearchDir::of(search);
    let archive = dir.read_archive()?;
    let picks = select(&dir, &archive, count, eps)?;
    if picks.is_empty() {
        anyhow::bail!(
            "{} has no scored candidate to choose from",
            dir.archive().display()
        );
    }
    for p in &picks {
        println!(
            "{} ({}): val AUROC {:.4}, {} params, {} MAdds\n  arch: {}\n  train: {}",
            crate::search::archive::candidate_name(p.id),
            p.why,
            p.val_auroc,
            crate::plot::human(p.params as f64, ""),
            crate::plot::human(p.madds as f64, ""),
            p.arch.display(),
            p.command
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `compare`: two or more models on the same images.
pub(super) fn compare_cmd(a: &CompareArgs) -> Result<ExitCode> {
    let job = a.job()?;
    let o = crate::compare::run(&job)?;
    for w in &o.warnings {
        eprintln!("warning: {w}");
    }
    for line in o.comparison.headlines() {
        println!("{line}");
    }
    println!("report: {}", o.html.display());
    Ok(ExitCode::SUCCESS)
}
