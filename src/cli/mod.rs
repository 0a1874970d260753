//! The command line of both binaries. `muxmed` (src/main.rs) runs every command that needs
//! no libtorch itself and hands the others, whole, to `muxmed-torch` beside it
//! ([`handoff`]): loading libtorch costs 0.35–0.5 s of operator registration before `main`
//! on a 2-core machine, which `evaluate --predictions`, `report`, `search front` and the
//! rest need not pay. `muxmed-torch` (src/bin/muxmed-torch.rs) runs every command.
//!
//! What links libtorch is decided by what a binary calls: `muxmed` only reaches
//! [`commands`], so the linker drops the model code and libtorch from it (build.rs links it
//! with `--exclude-libs ALL`; a test checks that it does not load libtorch).

mod commands;
mod handoff;
#[cfg(feature = "torch")]
mod torch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use handoff::SOURCE_ID;

use crate::config::Arch;
use crate::eval::job::PredictionsJob;
use crate::eval::scoring::EvalOptions;
use crate::labels::Split;
use crate::run::{Checkpoint, EvalKey};

/// Where the commands find and put manifests (a folder per pipeline), from the working folder.
const MANIFESTS_DIR: &str = "data_manifests";
/// Where runs, searches and augmentation previews go, from the working folder.
const REPORTS_DIR: &str = "reports";

/// `muxmed`: runs the commands that need no libtorch, hands the others to `muxmed-torch`.
pub fn front_end() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    match commands::run(&cli.command) {
        Some(result) => finish(result),
        None => handoff::to_torch_binary(&cli.command),
    }
}

/// `muxmed-torch`: every command, with libtorch.
#[cfg(feature = "torch")]
pub fn with_torch() -> ExitCode {
    quiet_on_closed_pipe();
    crate::model::device::tune_malloc();
    if let Err(e) = handoff::check_caller() {
        return finish(Err(e));
    }
    let cli = Cli::parse();
    finish(match commands::run(&cli.command) {
        Some(result) => result,
        None => catching_libtorch(|| torch::run(&cli.command)),
    })
}

/// libtorch reports a failure with a C++ exception, which tch's non-`f_` calls turn into a
/// panic. A panic on the main thread becomes an error (one line: libtorch's message without
/// its C++ stack) and exit status 1, never a backtrace and status 101. Panics on other
/// threads are printed as before; their joins report them.
#[cfg(feature = "torch")]
fn catching_libtorch(f: impl FnOnce() -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    use std::sync::{Arc, Mutex};
    let caught: Arc<Mutex<Option<String>>> = Arc::default();
    let previous = Arc::new(std::panic::take_hook());
    {
        let (caught, previous) = (caught.clone(), previous.clone());
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("main") {
                let at = info
                    .location()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                let text = crate::model::device::panic_message(info.payload());
                *caught.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{text}{at}"));
            } else {
                previous(info);
            }
        }));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    match result {
        Ok(r) => r,
        Err(payload) => {
            let text = caught
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| crate::model::device::panic_message(payload.as_ref()));
            Err(anyhow::anyhow!(
                "libtorch failed: {text}; this is a defect in muxmed: please report it with the command"
            ))
        }
    }
}

/// The exit status of a command, its error chain printed on one line.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::io::error_chain(&e));
            ExitCode::FAILURE
        }
    }
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
        /// The file format: nih; chexpert (train.csv + valid.csv, JPEGs); mimic_cxr (the
        /// metadata, chexpert and split CSVs, JPEGs under files/); padchest (the labels CSV,
        /// 16-bit PNGs); vindr_cxr (train.csv with three readers' boxes, DICOM); or
        /// rsna_pneumonia (stage_2_train_labels.csv with boxes, DICOM). All but nih are drawn
        /// by scanners of their own, for external validation.
        #[arg(long, value_enum, default_value = "nih")]
        format: crate::data::synth_formats::SynthFormat,
    },
    /// Probabilities for new PNG, JPEG or DICOM files with a run's preprocessing.
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
        /// Scale the probabilities by the temperatures fitted on the run's val split (by
        /// `evaluate --run`; `export` copies them into model.json), the probabilities the
        /// run's operating thresholds were chosen on. On by default: a model without
        /// temperatures is an error; `--calibrated false` writes the raw sigmoid outputs.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        calibrated: bool,
    },
    /// A checkpoint as a TorchScript module (normalised [N,3,R,R] float32 in, logits out) for
    /// PyTorch, TorchServe or Triton, with model.json beside it: arch, resolution, eval
    /// stages, label order, val-chosen thresholds and the checkpoint's sha256.
    Export {
        /// A checkpoint written by `muxmed train` (e.g. reports/RUN/best.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The module file (its spec is written beside it, same stem, .json), or a folder to
        /// write `<checkpoint stem>.pt` into.
        #[arg(long)]
        out: PathBuf,
        /// Device to trace on (the module runs on the device it is loaded to).
        #[arg(long)]
        device: Option<String>,
    },
    /// Grad-CAM heatmaps over the original X-rays: per image and label a picture and the
    /// map in original-image coordinates (.npy, NaN where the network saw nothing).
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
    Localize {
        /// A run directory (reports/RUN).
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value = "test")]
        split: Split,
        #[arg(long, value_enum, default_value = "best")]
        checkpoint: Checkpoint,
        /// Box file (default: the one the scored manifest was built from: NIH's
        /// BBox_List_2017.csv, VinDr-CXR's train.csv or RSNA's stage_2_train_labels.csv).
        #[arg(long)]
        boxes: Option<PathBuf>,
        /// External localization: score another pipeline's split (pipelines/NAME.yaml or a
        /// path; its manifest must be built) with its boxes, into RUN/external/<name>/.
        #[arg(long, value_name = "PIPELINE")]
        on: Option<String>,
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
    /// bootstrap CIs, paired ΔAUROC CIs, patient-clustered (or DeLong) tests with Holm adjustment, parameters,
    /// multiply-adds and measured inference cost; writes compare.json, compare.md and a
    /// self-contained compare.html with figures.
    Compare(CompareArgs),
    /// Model tools: counts, a forward pass on a tensor file, checkpoint import.
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
    /// With --run: external validation on another pipeline's data (pipelines/NAME.yaml or a
    /// path; its manifest must be built). Scores its test split (--all-splits: every split)
    /// with the run's preprocessing, by shared concept, into RUN/external/<name>/.
    #[arg(long, requires = "run", value_name = "PIPELINE")]
    on: Option<String>,
    /// With --on: score every split of the other pipeline, not only its test split.
    #[arg(long, requires = "on")]
    all_splits: bool,
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
    /// `google2019`: also score on Google's radiologist-adjudicated labels (Majkowska et al.,
    /// Radiology 2019; Pneumothorax, Nodule or mass, Airspace opacity; Fracture has no
    /// output) on the images Google's file puts in the `Set Id` equal to --split, beside
    /// NIH's labels of the same images.
    #[arg(long, value_enum, default_value = "nih", conflicts_with = "on")]
    truth: crate::eval::adjudicated::Truth,
    /// With --truth google2019: Google's file (default:
    /// google2019_nih-chest-xray-labels.csv[.gz] in the run's data.root, or beside --labels).
    #[arg(long)]
    truth_file: Option<PathBuf>,
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

    /// With --predictions and --truth google2019: Google's file, by default beside --labels.
    fn predictions_truth_file(&self) -> anyhow::Result<Option<PathBuf>> {
        let labels = self.labels.as_deref().unwrap_or(Path::new("."));
        self.truth_file_in(labels.parent().unwrap_or(Path::new(".")))
    }

    /// With --truth google2019: Google's file for the data in `root`.
    fn truth_file_in(&self, root: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
        use crate::eval::adjudicated::{truth_file, Truth};
        if self.truth_file.is_some() && self.truth == Truth::Nih {
            anyhow::bail!("--truth-file is only read with --truth google2019");
        }
        match self.truth {
            Truth::Nih => Ok(None),
            Truth::Google2019 => Ok(Some(truth_file(self.truth_file.as_deref(), root)?)),
        }
    }

    /// The --predictions job, or an error saying which flags are needed; `truth_file` is
    /// from [`EvalArgs::predictions_truth_file`].
    fn job<'a>(&'a self, truth_file: Option<&'a Path>) -> anyhow::Result<PredictionsJob<'a>> {
        match (&self.predictions, &self.labels) {
            (Some(p), Some(l)) => Ok(PredictionsJob {
                predictions: p,
                labels: l,
                split_list: self.split_list.as_deref(),
                split: self.split,
                thresholds_from: self.thresholds_from.as_deref(),
                labels_subset: self.labels_subset,
                truth_file,
            }),
            _ => Err(anyhow::anyhow!(
                "give --run reports/RUN, or --predictions P.csv with --labels METADATA.csv"
            )),
        }
    }
}

#[derive(Args)]
struct CompareArgs {
    /// Run directories (reports/RUN, after `evaluate --run`), runs' external evaluations
    /// (reports/RUN/external/PIPELINE, after `evaluate --run --on`) or predictions CSVs
    /// (with --labels), at least two; the first is the reference the ratios are taken
    /// against.
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
    #[arg(long = "arch", value_parser = crate::compare::parse_arch_flag)]
    archs: Vec<(String, crate::config::Arch, i64)>,
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
    /// The paired AUROC test: `clustered` (Obuchowski 1997, patients as clusters) or
    /// `delong` (DeLong 1988, every image assumed independent).
    #[arg(long, value_enum, default_value = "clustered")]
    test: crate::metrics::paired::AucTest,
    /// Compare on one subgroup only: `sex=F`, `view=AP`, `age_band=60-80`, `age_band=80+`
    /// (the first run's eval.subgroups.age_bands; the defaults when every input is a
    /// predictions CSV) or `dataset=NAME` (a mix's).
    #[arg(long = "where", value_name = "ATTRIBUTE=GROUP", value_parser = crate::eval::subgroups::GroupFilter::parse)]
    filter: Option<crate::eval::subgroups::GroupFilter>,
}

impl CompareArgs {
    fn job(&self) -> anyhow::Result<crate::compare::CompareJob> {
        use crate::compare::{inputs::Source, CompareJob};
        let key = EvalKey {
            split: self.split,
            checkpoint: self.checkpoint,
            tta: self.tta,
        };
        let sources = self
            .inputs
            .iter()
            .map(|p| {
                Source::classify(
                    p,
                    key,
                    self.labels.as_deref(),
                    self.split_list.as_deref(),
                    std::path::Path::new(MANIFESTS_DIR),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut job = CompareJob {
            sources,
            names: self.names.clone(),
            split: self.split,
            out: self.out.clone(),
            stats: crate::compare::stats::StatsOptions {
                resamples: self.bootstrap,
                seed: self.seed,
                test: self.test,
            },
            measure_cost: !self.no_cost,
            filter: self.filter.clone(),
        };
        let names = crate::compare::input_names(&job)?;
        crate::compare::attach_archs(&mut job.sources, &names, &self.archs)?;
        Ok(job)
    }
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
    Model(BenchModelArgs),
}

/// The flags of `bench model`.
#[derive(Args)]
struct BenchModelArgs {
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
    memory_format: crate::config::MemoryFormat,
    /// Also write the folded model, traced to TorchScript, to this file.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Also time each part of a MUXNet's training step alone (stem, every block, head)
    /// and print the table with totals per block type.
    #[arg(long)]
    per_block: bool,
}
