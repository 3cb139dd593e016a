//! The progress bar of `scan` on a terminal (indicatif, on standard error):
//! files and bytes done, rate, ETA, detections so far. The total is counted
//! by a second, stat-only walk running beside the scan, so the ETA firms up
//! as that count finishes; per-file lines are printed above the bar.

use crate::walk::{Excludes, WalkOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Bar {
    bar: ProgressBar,
    files: AtomicU64,
}

impl Bar {
    pub fn start(paths: &[PathBuf], walk: &WalkOptions, excludes: Arc<Excludes>) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        let (counter, paths, same_fs) = (bar.clone(), paths.to_vec(), walk.one_file_system);
        std::thread::spawn(move || {
            let mut builder = ignore::WalkBuilder::new(&paths[0]);
            for p in &paths[1..] {
                builder.add(p);
            }
            builder.standard_filters(false).follow_links(false).same_file_system(same_fs);
            builder.filter_entry(move |e| !excludes.matches(e.path()));
            for e in builder.build().flatten() {
                if e.file_type().is_some_and(|t| t.is_file())
                    && let Ok(m) = e.metadata()
                {
                    counter.inc_length(m.len());
                }
            }
        });
        Self { bar, files: AtomicU64::new(0) }
    }

    /// One file answered (`detected`: detections so far).
    pub fn file(&self, size: u64, detected: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(size);
        self.bar.set_message(format!("{n} files, {detected} detected"));
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// Print a line above the bar (or just print it without one).
pub fn above(bar: Option<&Bar>, print: impl FnOnce()) {
    match bar {
        Some(b) => b.bar.suspend(print),
        None => print(),
    }
}
