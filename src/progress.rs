//! Progress display: indicatif bars on a terminal, plain periodic lines otherwise (CI, logs).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or a plain reporter printing a line every `every` when stderr is not a
/// terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last: std::sync::Mutex<Instant>,
    every: Duration,
}

impl Progress {
    pub fn new(len: u64, label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(len);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(label.to_string());
            b
        });
        Progress {
            bar,
            label: label.to_string(),
            last: std::sync::Mutex::new(Instant::now()),
            every: Duration::from_secs(10),
        }
    }

    pub fn set(&self, pos: u64, len: u64, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_length(len);
                b.set_position(pos);
                if !msg.is_empty() {
                    b.set_message(format!("{} {msg}", self.label));
                }
            }
            None => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= self.every || pos == len {
                    *last = Instant::now();
                    eprintln!("{}: {pos}/{len} {msg}", self.label);
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Training progress: an epoch bar above a step bar (loss, images/s, ETA) on a terminal;
/// a plain line every 10 s (and one per epoch) otherwise.
pub struct TrainProgress {
    bars: Option<(indicatif::MultiProgress, ProgressBar, ProgressBar)>,
    last: std::sync::Mutex<Instant>,
}

impl TrainProgress {
    pub fn new(epochs: u64, steps: u64) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let m = indicatif::MultiProgress::new();
            let e = m.add(ProgressBar::new(epochs));
            e.set_style(
                ProgressStyle::with_template(
                    "epochs [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let s = m.add(ProgressBar::new(steps));
            s.set_style(
                ProgressStyle::with_template("steps  {wide_bar} {pos}/{len} {msg} (ETA {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            (m, e, s)
        });
        TrainProgress {
            bars,
            last: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Position inside the current epoch (1-based epoch).
    pub fn step(
        &self,
        epoch: u64,
        epochs: u64,
        step: u64,
        steps: u64,
        loss: f64,
        images_per_s: f64,
    ) {
        let msg = format!("epoch {epoch}/{epochs} loss {loss:.4} {images_per_s:.1} img/s");
        match &self.bars {
            Some((_, e, s)) => {
                e.set_position(epoch - 1);
                s.set_length(steps);
                s.set_position(step);
                s.set_message(msg);
            }
            None => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(10) || step == steps {
                    *last = Instant::now();
                    eprintln!("train: step {step}/{steps} {msg}");
                }
            }
        }
    }

    /// After an epoch's validation.
    pub fn epoch_done(&self, epoch: u64, val_mean_auroc: Option<f64>) {
        let msg = format!(
            "val mean AUROC {}",
            val_mean_auroc
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "undefined".into())
        );
        match &self.bars {
            Some((_, e, s)) => {
                e.set_position(epoch);
                e.set_message(msg);
                s.reset();
            }
            None => eprintln!("train: epoch {epoch} done, {msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some((_, e, s)) = &self.bars {
            s.finish_and_clear();
            e.finish();
        }
    }
}
