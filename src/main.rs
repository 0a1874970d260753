//! Command-line front end; all behaviour lives in the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(feature = "torch")]
use muxmed::config::Arch;
use muxmed::eval::predictions::{EvalOptions, PredictionsJob};
use muxmed::run::{Checkpoint, EvalKey, Split};

#[derive(Parser)]
#[command(
    name = "muxmed",
    version,
    about = "Fine-tune MUXNet on ChestX-Ray14 and report per-disease AUROC"
)]
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
    /// What muxmed sees of each image: writes <stem>.safetensors (key `image`, the [H,W]
    /// float32 display image in [0,1], before any resize) and a 16-bit <stem>.png. Reads PNG,
    /// JPEG and DICOM; exit status is non-zero only when every input failed.
    Decode {
        /// Image files or folders.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Write a synthetic dataset in NIH's exact format (metadata, split lists, boxes, PNGs).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        images: usize,
        /// Patients (default: images / 3.64, as in the real file).
        #[arg(long)]
        patients: Option<usize>,
        /// Image side in pixels.
        #[arg(long, default_value_t = 128)]
        size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write into a non-empty folder that is not a muxmed synthetic dataset.
        #[arg(long)]
        overwrite: bool,
    },
    /// Probabilities for new PNG, JPEG or DICOM files with a run's preprocessing.
    #[cfg(feature = "torch")]
    Predict {
        /// A checkpoint written by `muxmed train` (e.g. reports/RUN/best.safetensors).
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        checkpoint: Option<PathBuf>,
        /// A TorchScript export of `muxmed export` (its model.json beside it).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Image files or folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(short = 'o', long, default_value = "predictions.csv")]
        out: PathBuf,
        #[arg(long)]
        device: Option<String>,
        /// Stop (writing nothing) if any input fails; by default the readable files are
        /// scored, each failure gets an error line, and the exit status is non-zero only
        /// when every input failed.
        #[arg(long)]
        strict: bool,
    },
    /// A checkpoint as a TorchScript module (normalised [N,3,R,R] float32 in, logits out) for
    /// PyTorch, TorchServe or Triton, with model.json beside it: arch, resolution, eval
    /// stages, label order, val-chosen thresholds and the checkpoint's sha256.
    #[cfg(feature = "torch")]
    Export {
        /// A checkpoint written by `muxmed train` (e.g. reports/RUN/best.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The module file (model.json is written beside it, same stem).
        #[arg(long)]
        out: PathBuf,
        /// Device to trace on (the module runs on the device it is loaded to).
        #[arg(long)]
        device: Option<String>,
    },
    /// Grad-CAM heatmaps over the original X-rays: per image and label a picture and the
    /// map in original-image coordinates (.npy, NaN where the network saw nothing).
    #[cfg(feature = "torch")]
    Explain {
        /// A checkpoint written by `muxmed train` (e.g. reports/RUN/best.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image files or folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Labels to explain, comma-separated (default: the --top most probable).
        #[arg(long, value_delimiter = ',', conflicts_with = "top")]
        labels: Vec<String>,
        /// Explain each image's K most probable labels.
        #[arg(long, default_value_t = 3)]
        top: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        device: Option<String>,
    },
    /// The ChestX-ray8 box benchmark: Grad-CAM detections against the radiologists' boxes
    /// (IoBB, IoU, pointing game) beside centre-prior and random baselines.
    #[cfg(feature = "torch")]
    Localize {
        /// A run directory (reports/RUN).
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value = "test")]
        split: Split,
        #[arg(long, value_enum, default_value = "best")]
        checkpoint: Checkpoint,
        /// Box list (default: the BBox_List_2017.csv the run's manifest was built from).
        #[arg(long)]
        boxes: Option<PathBuf>,
        /// Map value at which pixels become detections.
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        /// Seed of the random-map baseline.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        device: Option<String>,
    },
    /// Fine-tune (or resume) a model; writes a run directory under reports/.
    #[cfg(feature = "torch")]
    Train {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Run directory name under reports/ (default: date-time, arch, resolution).
        #[arg(long)]
        run_name: Option<String>,
        /// Replace an existing run directory of the same name.
        #[arg(long)]
        overwrite: bool,
        /// auto, cpu, cuda or cuda:N (default: runtime.device).
        #[arg(long)]
        device: Option<String>,
        /// Continue reports/RUN from its last.safetensors (optimizer, schedule and data order
        /// included), with the run's own config: --pipeline, --set, --run-name and --overwrite
        /// cannot be combined with it.
        #[arg(long, conflicts_with_all = ["pipeline", "set", "run_name", "overwrite"])]
        resume: Option<PathBuf>,
        /// Stop as if interrupted after this many optimizer steps (smoke tests).
        #[arg(long, hide = true)]
        stop_after_steps: Option<u64>,
    },
    /// Build data_manifests/<pipeline>/ (train/val/test parquet, manifest.json, summary.csv).
    Manifest {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output folder instead of data_manifests/<pipeline name>/.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Decode every manifest image once into the memory-mapped cache (resumable).
    Prepare(PipelineArgs),
    /// Look at and measure the augmentation pipeline.
    #[command(subcommand)]
    Augment(AugmentCmd),
    /// Score a run (--run) or any predictions CSV (--predictions --labels): per-label AUROC
    /// with patient-bootstrap CIs, AP, thresholds, calibration. Writes metrics_<name>.json.
    Evaluate(EvalArgs),
    /// Figures (PNG + SVG), report.md and a self-contained report.html for an evaluation that
    /// `evaluate --run` wrote, or for a predictions file.
    Report(EvalArgs),
    /// Compare two or more runs or predictions CSVs on the same images: AUROC with patient
    /// bootstrap CIs, paired ΔAUROC CIs, DeLong tests with Holm adjustment, parameters,
    /// multiply-adds and measured inference cost; writes compare.json, compare.md and a
    /// self-contained compare.html with figures.
    Compare(CompareArgs),
    /// Model tools: counts, a forward pass on a tensor file, checkpoint import.
    #[cfg(feature = "torch")]
    #[command(subcommand)]
    Model(ModelCmd),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Multi-objective architecture search (NSGA-II over MUXNet block strings): val AUROC
    /// after proxy training, parameters and multiply-adds.
    #[command(subcommand)]
    Search(SearchCmd),
}

#[derive(Subcommand)]
enum SearchCmd {
    /// Run (or resume) a search with the pipeline's `search:` section; writes
    /// reports/search-<pipeline>/ (archive.json after every candidate, front.md/.csv,
    /// front.png, hypervolume.png, archs/).
    #[cfg(feature = "torch")]
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Folder name under reports/ (default search-<pipeline name>).
        #[arg(long)]
        name: Option<String>,
        /// Continue the search in the folder exactly where it stopped.
        #[arg(long)]
        resume: bool,
        /// Delete an existing search in the folder and start again.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        #[arg(long)]
        device: Option<String>,
    },
    /// Non-dominated rank, crowding distance and hypervolume of an archive (objectives
    /// divided by its bounds, reference 1,1,1 by default) or of a points CSV (header naming
    /// the objectives, all minimised).
    Front {
        #[arg(long, required_unless_present = "points", conflicts_with = "points")]
        archive: Option<PathBuf>,
        #[arg(long)]
        points: Option<PathBuf>,
        /// Reference point, one value per objective (required with --points).
        #[arg(long = "ref", value_delimiter = ',')]
        reference: Option<Vec<f64>>,
        /// Print {"rank": [...], "crowding": [...], "hypervolume": x} (input order; an
        /// infinite crowding distance is null).
        #[arg(long)]
        json: bool,
    },
    /// Choose from a search's front: the high trade-off points (MSuNAS rule) and the most
    /// accurate one, each written to selected/ as an arch JSON with its train command.
    Select {
        /// The search folder (reports/search-<pipeline>) or its archive.json.
        search: PathBuf,
        /// High trade-off points to pick (the most accurate point is added).
        #[arg(short = 'n', long, default_value_t = 2)]
        count: usize,
        /// Neighbourhood radius in objectives normalised over the front.
        #[arg(long, default_value_t = 0.125)]
        eps: f64,
    },
}

/// The flags of `evaluate` and `report`, shared so they cannot drift apart.
#[derive(Args)]
struct EvalArgs {
    /// A run directory (reports/RUN): evaluate one of its checkpoints on one of its own splits,
    /// or report such an evaluation.
    #[arg(long, conflicts_with_all = ["predictions", "labels"])]
    run: Option<PathBuf>,
    /// With --run: which weights.
    #[arg(long, value_enum, default_value = "best")]
    checkpoint: Checkpoint,
    /// With --run: average over augment.eval and the augment.tta pipelines (files named _tta).
    #[arg(long)]
    tta: bool,
    /// With --run: device (default: the run's runtime.device).
    #[arg(long)]
    device: Option<String>,
    /// CSV with `Image Index` (or `image_id`) and one probability column per label
    /// (`Effusion` or `prob_Effusion`).
    #[arg(long, requires = "labels")]
    predictions: Option<PathBuf>,
    /// NIH metadata CSV (plain or .gz) giving the labels and patients.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Only score images in this list (e.g. test_list.txt).
    #[arg(long)]
    split_list: Option<PathBuf>,
    /// Output folder for --predictions (evaluate: default beside the predictions file).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The split (with --run), or the name of the scored set in metrics_<name>.json.
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Bootstrap resamples (by patient) for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Target sensitivity for the second operating threshold.
    #[arg(long, default_value_t = 0.9)]
    sensitivity: f64,
    /// Apply the thresholds chosen in this metrics file (normally metrics_val.json).
    #[arg(long)]
    thresholds_from: Option<PathBuf>,
    /// With --predictions: score a file with columns for only some of the 14 labels (the
    /// mean AUROC is then over those labels only, and the output says so).
    #[arg(long)]
    labels_subset: bool,
}

impl EvalArgs {
    fn options(&self) -> EvalOptions {
        EvalOptions {
            resamples: self.bootstrap,
            seed: self.seed,
            sensitivity_target: self.sensitivity,
            thresholds: None,
        }
    }

    fn key(&self) -> EvalKey {
        EvalKey {
            split: self.split,
            checkpoint: self.checkpoint,
            tta: self.tta,
        }
    }

    /// The --predictions job, or an error saying which flags are needed.
    fn job(&self) -> Result<PredictionsJob<'_>> {
        match (&self.predictions, &self.labels) {
            (Some(p), Some(l)) => Ok(PredictionsJob {
                predictions: p,
                labels: l,
                split_list: self.split_list.as_deref(),
                split: self.split,
                thresholds_from: self.thresholds_from.as_deref(),
                labels_subset: self.labels_subset,
            }),
            _ => Err(anyhow::anyhow!(
                "give --run reports/RUN, or --predictions P.csv with --labels METADATA.csv"
            )),
        }
    }
}

#[derive(Args)]
struct CompareArgs {
    /// Run directories (reports/RUN, after `evaluate --run`) or predictions CSVs (with
    /// --labels), at least two; the first is the reference the ratios are taken against.
    #[arg(required = true, num_args = 2..)]
    inputs: Vec<PathBuf>,
    /// The split every input is scored on.
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// For runs: which evaluation (its checkpoint).
    #[arg(long, value_enum, default_value = "best")]
    checkpoint: Checkpoint,
    /// For runs: the evaluation averaged over the TTA pipelines.
    #[arg(long)]
    tta: bool,
    /// Names for the inputs, comma-separated (default: run folder names, CSV stems).
    #[arg(long, value_delimiter = ',')]
    names: Option<Vec<String>>,
    /// NIH metadata CSV labelling the images of predictions CSVs.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Only score the predictions CSVs' images in this list (e.g. test_list.txt).
    #[arg(long)]
    split_list: Option<PathBuf>,
    /// The architecture a predictions CSV came from, NAME=ARCH@RES (e.g.
    /// zech=densenet121@224), for its parameter, multiply-add and speed figures. Repeatable.
    #[arg(long = "arch", value_parser = muxmed::compare::parse_arch_flag)]
    archs: Vec<(String, muxmed::config::Arch, i64)>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Bootstrap resamples (by patient).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the speed and memory measurements.
    #[arg(long)]
    no_cost: bool,
}

impl CompareArgs {
    fn job(&self) -> Result<muxmed::compare::CompareJob> {
        use muxmed::compare::{inputs::Source, CompareJob};
        let key = EvalKey {
            split: self.split,
            checkpoint: self.checkpoint,
            tta: self.tta,
        };
        let sources = self
            .inputs
            .iter()
            .map(|p| Source::classify(p, key, self.labels.as_deref(), self.split_list.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut job = CompareJob {
            sources,
            names: self.names.clone(),
            split: self.split,
            out: self.out.clone(),
            stats: muxmed::compare::stats::StatsOptions {
                resamples: self.bootstrap,
                seed: self.seed,
            },
            measure_cost: !self.no_cost,
        };
        let names = muxmed::compare::input_names(&job)?;
        muxmed::compare::attach_archs(&mut job.sources, &names, &self.archs)?;
        Ok(job)
    }
}

fn compare_cmd(a: &CompareArgs) -> Result<ExitCode> {
    let job = a.job()?;
    let o = muxmed::compare::run(&job)?;
    for w in &o.warnings {
        eprintln!("warning: {w}");
    }
    for line in o.comparison.headlines() {
        println!("{line}");
    }
    println!("report: {}", o.html.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum AugmentCmd {
    /// A PNG grid of original and augmented training images.
    Preview {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, default_value_t = 6)]
        images: usize,
        #[arg(long, default_value_t = 4)]
        variants: usize,
        /// Output PNG (default reports/augment_preview_<pipeline>.png).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Mean and std of the train images, as a `normalize` stage to paste into the pipeline.
    Stats(PipelineArgs),
}

/// A network with weights and a tensor file in and out (`model forward`, `model gradcam`).
#[cfg(feature = "torch")]
#[derive(Args)]
struct TensorArgs {
    /// muxnet_m, muxnet_l, densenet121 or an arch JSON (with --weights).
    #[arg(long, required_unless_present = "checkpoint", requires = "weights")]
    arch: Option<Arch>,
    #[arg(long, default_value_t = 14)]
    num_classes: i64,
    #[arg(long, requires = "arch")]
    weights: Option<PathBuf>,
    /// A checkpoint written by `muxmed train` (its own arch and head), instead of
    /// --arch/--weights: to check an export against the native model.
    #[arg(long, conflicts_with_all = ["arch", "weights"])]
    checkpoint: Option<PathBuf>,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
}

#[cfg(feature = "torch")]
impl TensorArgs {
    fn job(&self) -> Result<muxmed::model::tools::TensorJob<'_>> {
        use muxmed::model::tools::JobNet;
        let net = match (&self.checkpoint, &self.arch, &self.weights) {
            (Some(c), _, _) => {
                let l = muxmed::eval::run_eval::load_checkpoint(c, tch::Device::Cpu)?;
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
        Ok(muxmed::model::tools::TensorJob {
            net,
            input: &self.input,
            output: &self.output,
        })
    }
}

#[cfg(feature = "torch")]
#[derive(Subcommand)]
enum ModelCmd {
    /// Parameters (total, backbone, head) and conv+linear multiply-adds per image.
    Info {
        /// muxnet_m, muxnet_l, densenet121 or a path to an arch JSON.
        #[arg(long)]
        arch: Arch,
        #[arg(long, default_value_t = 14)]
        num_classes: i64,
        #[arg(long, default_value_t = 224)]
        resolution: i64,
        #[arg(long)]
        json: bool,
    },
    /// Run tensor `input` (N,3,H,W) from a safetensors file; write `logits` and `features`.
    Forward {
        #[command(flatten)]
        job: TensorArgs,
        /// BatchNorm with batch statistics (dropout stays off).
        #[arg(long)]
        train_mode: bool,
        /// Also write `stem`, `blocks.<i>` and `head` activations.
        #[arg(long)]
        stages: bool,
    },
    /// Grad-CAM of tensor `input` (N,3,H,W) for every class: writes `gradcam.raw`
    /// (N,classes,h,w), `gradcam.map` (N,classes,H,W, min-max scaled) and `logits`.
    Gradcam {
        #[command(flatten)]
        job: TensorArgs,
    },
    /// Convert an official `torch.save` checkpoint (EMA weights preferred) to safetensors.
    Import {
        src: PathBuf,
        #[arg(long)]
        arch: Arch,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Images per second: (a) decode + resize of the original files, (b) prepared cache +
    /// train augmentation + batching.
    Data {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Folder of images to measure on.
        #[arg(long, default_value = "../shared/data/nih/images")]
        images: PathBuf,
        /// Loader threads (default: runtime.data_workers).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
    },
    /// Time of the manifest build from the metadata (image scan excluded), median of runs.
    Manifest {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Inference and training-step images per second on random input.
    #[cfg(feature = "torch")]
    Model {
        #[arg(long, default_value = "muxnet_m")]
        arch: Arch,
        #[arg(long, default_value_t = 32)]
        batch: i64,
        #[arg(long, default_value_t = 224)]
        resolution: i64,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// channels_last or contiguous (NCHW).
        #[arg(long, default_value = "channels_last")]
        memory_format: muxmed::config::MemoryFormat,
        /// Also write the folded model, traced to TorchScript, to this file.
        #[arg(long)]
        export: Option<PathBuf>,
        /// Also time each part of a MUXNet's training step alone (stem, every block, head)
        /// and print the table with totals per block type.
        #[arg(long)]
        per_block: bool,
    },
}

fn decode_cmd(files: &[PathBuf], output: &std::path::Path) -> Result<ExitCode> {
    let o = muxmed::data::files::decode_to(files, output)
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

/// The model `predict` was given (clap makes sure it is exactly one).
#[cfg(feature = "torch")]
fn predict_source<'a>(
    checkpoint: Option<&'a Path>,
    model: Option<&'a Path>,
) -> Result<muxmed::eval::run_eval::ModelSource<'a>> {
    use muxmed::eval::run_eval::ModelSource;
    match (checkpoint, model) {
        (Some(c), None) => Ok(ModelSource::Checkpoint(c)),
        (None, Some(m)) => Ok(ModelSource::Exported(m)),
        _ => anyhow::bail!("give one of --checkpoint and --model"),
    }
}

/// Each scored file with its three most probable labels (the CSV has all of them); past 50
/// files only the count.
#[cfg(feature = "torch")]
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

/// One `error: FILE: reason` line per failed input.
fn report_failures(failed: &[(PathBuf, String)]) {
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

#[cfg(feature = "torch")]
fn explain_cmd(
    checkpoint: &std::path::Path,
    images: &[PathBuf],
    labels: &[String],
    top: usize,
    out: &std::path::Path,
    device: Option<&str>,
) -> Result<ExitCode> {
    use muxmed::explain::heatmaps::{explain, Choice, ExplainArgs};
    let (files, mut failed) = muxmed::data::files::gather(images)?;
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

#[cfg(feature = "torch")]
fn model_cmd(cmd: &ModelCmd) -> Result<ExitCode> {
    use muxmed::model::tools;
    match cmd {
        ModelCmd::Info {
            arch,
            num_classes,
            resolution,
            json,
        } => {
            let i = tools::info(arch, *num_classes, *resolution)?;
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
            tools::forward(job.job()?, *train_mode, *stages)?;
            println!("wrote {}", job.output.display());
        }
        ModelCmd::Gradcam { job } => {
            tools::gradcam(job.job()?)?;
            println!("wrote {}", job.output.display());
        }
        ModelCmd::Import { src, arch, out } => println!("{}", tools::import(src, arch, out)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(cmd: &BenchCmd) -> Result<ExitCode> {
    match cmd {
        BenchCmd::Data {
            pipeline,
            images,
            workers,
            batch,
            epochs,
        } => {
            let p = load_pipeline(pipeline)?;
            let w = workers.unwrap_or(p.config.runtime.data_workers as usize);
            let r = muxmed::data::tools::bench(
                images,
                &p.config.augment.train,
                p.config.augment.working_size,
                w,
                *batch,
                *epochs,
            )?;
            println!(
                "{} images, {} workers: (a) decode + resize {:.1} img/s; (b) cache + train augmentation + batching {:.1} img/s",
                r.images, r.workers, r.decode_resize_images_per_s, r.cache_augment_batch_images_per_s
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        BenchCmd::Manifest { pipeline, runs } => {
            let p = load_pipeline(pipeline)?;
            let (rows, median, min) = muxmed::data::manifest::bench_build(&p.config.data, *runs)?;
            println!(
                "manifest build, {rows} rows, image scan excluded: median {median:.3} s, min {min:.3} s over {} runs",
                (*runs).max(1)
            );
        }
        #[cfg(feature = "torch")]
        BenchCmd::Model {
            arch,
            batch,
            resolution,
            iters,
            memory_format,
            export,
            per_block,
        } => {
            let r = muxmed::train::bench::bench(&muxmed::train::bench::BenchOptions {
                arch,
                batch: *batch,
                resolution: *resolution,
                iters: (*iters).max(1),
                memory_format: *memory_format,
                export: export.as_deref(),
                per_block: *per_block,
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The per-part table of `bench model --per-block`, then totals per part kind.
#[cfg(feature = "torch")]
fn print_parts(parts: &[muxmed::train::bench::PartTiming]) {
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

fn load_pipeline(args: &PipelineArgs) -> Result<muxmed::config::LoadedPipeline> {
    let path = muxmed::config::resolve_pipeline_path(&args.pipeline, Path::new("pipelines"))?;
    Ok(muxmed::config::load(&path, &args.set)?)
}

fn doctor(args: &PipelineArgs) -> Result<ExitCode> {
    let data_root = load_pipeline(args)
        .map(|p| p.config.data.root)
        .unwrap_or_else(|_| PathBuf::from("data/nih"));
    let mut checks = muxmed::doctor::static_checks(
        &data_root,
        Path::new("data_manifests"),
        Path::new("reports"),
    );
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
        .unwrap_or_else(|| Path::new("data_manifests").join(&cfg.name));
    let started = std::time::Instant::now();
    let mut m = muxmed::data::manifest::build(&cfg.data, true)
        .with_context(|| format!("building the manifest for pipeline `{}`", cfg.name))?;
    m.write(&out)?;
    print!("{}", m.summary()?);
    println!(
        "wrote {} in {:.2} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "torch")]
fn evaluate_run_cmd(run: &Path, a: &EvalArgs) -> Result<ExitCode> {
    let r = muxmed::eval::run_eval::evaluate_run(
        run,
        Path::new("data_manifests"),
        a.key(),
        &a.options(),
        a.device.as_deref(),
    )?;
    if let Some(n) = &r.notice {
        println!("{n}");
    }
    print!("{}", r.evaluation.table());
    println!(
        "wrote {} and {}",
        r.predictions_csv.display(),
        r.metrics_json.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "torch"))]
fn evaluate_run_cmd(_run: &Path, _a: &EvalArgs) -> Result<ExitCode> {
    anyhow::bail!(
        "evaluating a run needs libtorch: this muxmed was built without the `torch` feature"
    )
}

fn evaluate_cmd(a: &EvalArgs) -> Result<ExitCode> {
    if let Some(run) = &a.run {
        return evaluate_run_cmd(run, a);
    }
    let job = a.job()?;
    let (_, ev) = job.run(&a.options())?;
    print!("{}", ev.table());
    if ev.per_label.len() < muxmed::labels::LABELS.len() {
        println!(
            "--labels-subset: {} of {} labels scored; the mean AUROC is over these labels only",
            ev.per_label.len(),
            muxmed::labels::LABELS.len()
        );
    }
    println!(
        "{} predictions without labels, {} labelled images without predictions",
        ev.predictions_without_labels, ev.labelled_images_without_predictions
    );
    let dir = a.out.clone().unwrap_or_else(|| {
        job.predictions
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let path = muxmed::eval::predictions::metrics_file(&dir, a.split);
    ev.write(&path)?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(a: &EvalArgs) -> Result<ExitCode> {
    let html = match &a.run {
        Some(run) => {
            let (html, notice) =
                muxmed::report::report_run(run, Path::new("data_manifests"), a.key())?;
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
            let (ev, html) = muxmed::report::report_predictions(&a.job()?, out, &a.options())?;
            print!("{}", ev.table());
            html
        }
    };
    println!("wrote {}", html.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "torch")]
fn train_cmd(
    pipeline: &PipelineArgs,
    run_name: &Option<String>,
    overwrite: bool,
    device: &Option<String>,
    resume: &Option<PathBuf>,
    stop_after_steps: Option<u64>,
) -> Result<ExitCode> {
    use muxmed::run::Status;
    use muxmed::train::{train, TrainArgs};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
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
        reports_dir: PathBuf::from("reports"),
        manifests_dir: PathBuf::from("data_manifests"),
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
        return Ok(ExitCode::from(130));
    }
    if !out.best_per_label.is_empty() {
        println!(
            "best epoch {} (val mean AUROC {:.4}):",
            s.best_epoch.unwrap_or(0),
            s.best_score.unwrap_or(f64::NAN)
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

fn manifest_dir(cfg: &muxmed::config::PipelineConfig) -> PathBuf {
    Path::new("data_manifests").join(&cfg.name)
}

fn prepare_cmd(args: &PipelineArgs) -> Result<ExitCode> {
    let p = load_pipeline(args)?;
    let dir = manifest_dir(&p.config);
    if !dir.join("manifest.json").is_file() {
        anyhow::bail!(
            "no manifest at {}: run `muxmed manifest --pipeline {}` first",
            dir.display(),
            args.pipeline
        );
    }
    let bar = muxmed::progress::Progress::new(0, "prepare");
    let started = std::time::Instant::now();
    let r = muxmed::data::cache::prepare(&dir, &p.config.augment, &|done, total| {
        bar.set(done as u64, total as u64, "")
    })?;
    bar.finish();
    if r.reused {
        println!(
            "cache at {} is complete and current ({} images)",
            r.dir.display(),
            r.images
        );
    } else {
        if r.resumed_from > 0 {
            println!("resumed an interrupted prepare at image {}", r.resumed_from);
        }
        println!(
            "prepared {} images into {} in {:.1} s",
            r.images,
            r.dir.display(),
            started.elapsed().as_secs_f64()
        );
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
                Path::new("reports").join(format!("augment_preview_{}.png", p.config.name))
            });
            let path = muxmed::data::tools::preview(
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
            let (m, s, n) = muxmed::data::tools::stats(&p.config, &manifest_dir(&p.config))?;
            println!("train images: {n}; pixel mean {m:.4}, std {s:.4}");
            println!("before to_rgb:  - normalize: {{mean: [{m:.4}], std: [{s:.4}]}}");
            println!("after to_rgb:   - normalize: {{mean: [{m:.4}, {m:.4}, {m:.4}], std: [{s:.4}, {s:.4}, {s:.4}]}}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A closed pipe (`muxmed evaluate ... | head`) ends the process quietly, as it ends `cat` or
/// `grep`, instead of a panic with a backtrace at the next `println!` (Rust ignores SIGPIPE by
/// default, so the write fails and `println!` panics). Either way the process stops; files it
/// writes are written atomically, so none is left half-written.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets SIGPIPE back to its default disposition, at the start of main, before any
    // thread exists; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    #[cfg(feature = "torch")]
    muxmed::model::device::tune_malloc();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Doctor(a) => doctor(a),
        Command::Config(a) => load_pipeline(a).context("loading the pipeline").map(|p| {
            print!("{}", p.config.to_yaml());
            ExitCode::SUCCESS
        }),
        Command::Manifest { pipeline, out } => manifest_cmd(pipeline, out.as_deref()),
        Command::Prepare(p) => prepare_cmd(p),
        #[cfg(feature = "torch")]
        Command::Predict {
            checkpoint,
            model,
            images,
            out,
            device,
            strict,
        } => predict_source(checkpoint.as_deref(), model.as_deref())
            .and_then(|source| {
                muxmed::eval::run_eval::predict_files(
                    source,
                    images,
                    out,
                    device.as_deref(),
                    *strict,
                )
            })
            .map(|r| {
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
                ExitCode::SUCCESS
            }),
        #[cfg(feature = "torch")]
        Command::Export {
            checkpoint,
            out,
            device,
        } => muxmed::eval::export::export(checkpoint, out, device.as_deref()).map(|e| {
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
                        " (no val thresholds: run `muxmed evaluate --run` first to include them)"
                            .into(),
                },
                r = m.resolution,
            );
            ExitCode::SUCCESS
        }),
        #[cfg(feature = "torch")]
        Command::Explain {
            checkpoint,
            images,
            labels,
            top,
            out,
            device,
        } => explain_cmd(checkpoint, images, labels, *top, out, device.as_deref()),
        #[cfg(feature = "torch")]
        Command::Localize {
            run,
            split,
            checkpoint,
            boxes,
            threshold,
            seed,
            device,
        } => {
            use muxmed::explain::localize::{localize, LocalizeArgs};
            localize(&LocalizeArgs {
                run,
                split: *split,
                checkpoint: *checkpoint,
                boxes: boxes.as_deref(),
                threshold: *threshold,
                seed: *seed,
                device: device.as_deref(),
            })
            .map(|o| {
                if let Some(n) = &o.notice {
                    eprintln!("{n}");
                }
                for line in muxmed::explain::localize::summary_lines(&o.localization) {
                    println!("{line}");
                }
                println!("wrote {} and {}", o.json.display(), o.csv.display());
                for f in &o.figures {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            })
        }
        #[cfg(feature = "torch")]
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
        Command::Decode { files, output } => decode_cmd(files, output),
        Command::Synth {
            out,
            images,
            patients,
            size,
            seed,
            overwrite,
        } => {
            let started = std::time::Instant::now();
            let o = muxmed::data::synth::SynthOptions {
                images: *images,
                patients: *patients,
                size: *size,
                seed: *seed,
                test_fraction: 0.2,
                overwrite: *overwrite,
            };
            muxmed::data::synth::write(out, &o)
                .map(|r| {
                    println!(
                        "wrote {} synthetic images of {} patients to {} in {:.1} s",
                        r.len(),
                        r.iter().map(|x| x.patient).max().unwrap_or(0),
                        out.display(),
                        started.elapsed().as_secs_f64()
                    );
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::from)
        }
        Command::Augment(a) => augment_cmd(a),
        Command::Report(a) => report_cmd(a),
        Command::Evaluate(a) => evaluate_cmd(a),
        Command::Compare(a) => compare_cmd(a),
        #[cfg(feature = "torch")]
        Command::Model(m) => model_cmd(m),
        Command::Bench(b) => bench_cmd(b),
        Command::Search(c) => search_cmd(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", muxmed::io::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn search_cmd(c: &SearchCmd) -> Result<ExitCode> {
    use muxmed::search::archive::SearchDir;
    use muxmed::search::outputs::{front_input, front_lines, front_stats, select};
    match c {
        #[cfg(feature = "torch")]
        SearchCmd::Run {
            pipeline,
            name,
            resume,
            overwrite,
            device,
        } => search_run(pipeline, name, *resume, *overwrite, device),
        SearchCmd::Front {
            archive,
            points,
            reference,
            json,
        } => {
            let input = front_input(archive.as_deref(), points.as_deref(), reference.clone())?;
            let s = front_stats(&input.points, &input.reference);
            if *json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                for line in front_lines(&input, &s) {
                    println!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SearchCmd::Select { search, count, eps } => {
            let dir = SearchDir::of(search);
            let archive = dir.read_archive()?;
            let picks = select(&dir, &archive, *count, *eps)?;
            if picks.is_empty() {
                anyhow::bail!(
                    "{} has no scored candidate to choose from",
                    dir.archive().display()
                );
            }
            for p in &picks {
                println!(
                    "{} ({}): val AUROC {:.4}, {} params, {} MAdds\n  arch: {}\n  train: {}",
                    muxmed::search::archive::candidate_name(p.id),
                    p.why,
                    p.val_auroc,
                    muxmed::compare::stats::human(p.params as f64, ""),
                    muxmed::compare::stats::human(p.madds as f64, ""),
                    p.arch.display(),
                    p.command
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(feature = "torch")]
fn search_run(
    pipeline: &PipelineArgs,
    name: &Option<String>,
    resume: bool,
    overwrite: bool,
    device: &Option<String>,
) -> Result<ExitCode> {
    use muxmed::search::engine::End;
    use muxmed::search::run::{default_dir, run, SearchArgs};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let loaded = load_pipeline(pipeline)?;
    let reports = PathBuf::from("reports");
    let dir = match name {
        Some(n) => reports.join(n),
        None => default_dir(&reports, &loaded.config.name),
    };
    let args = SearchArgs {
        pipeline: loaded,
        dir,
        resume,
        overwrite,
        manifests_dir: PathBuf::from("data_manifests"),
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
        return Ok(ExitCode::from(130));
    }
    println!(
        "choose from the front: muxmed search select {}",
        o.dir.root().display()
    );
    Ok(ExitCode::SUCCESS)
}
