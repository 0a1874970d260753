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
