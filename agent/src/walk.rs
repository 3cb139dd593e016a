//! Parallel directory walk and hashing. Every regular file under the given
//! paths is hashed (sha256, streamed) on the walker's threads; a file that
//! cannot be read is reported, never dropped.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// One file found by the walk.
#[derive(Debug)]
pub enum Found {
    File { path: PathBuf, sha256: String, size: u64 },
    Error { path: PathBuf, error: String },
}

/// sha256 and size of a file, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Walk `paths` on `threads` threads, sending every file (hashed) or error
/// to `tx`. Blocks until the walk is done; run it off the async runtime.
pub fn walk(paths: &[PathBuf], threads: usize, tx: mpsc::Sender<Found>) {
    let (present, missing): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| p.symlink_metadata().is_ok());
    for p in missing {
        let _ = tx.blocking_send(Found::Error { path: p.clone(), error: "no such file or directory".into() });
    }
    let mut roots = present.into_iter();
    let Some(first) = roots.next() else { return };
    let mut builder = ignore::WalkBuilder::new(first);
    for p in roots {
        builder.add(p);
    }
    // A security scan looks at everything: hidden files and ignored ones too.
    builder.standard_filters(false).follow_links(false).threads(threads.max(1));
    builder.build_parallel().run(|| {
        let tx = tx.clone();
        Box::new(move |entry| {
            let found = match entry {
                Err(e) => {
                    let path = match &e {
                        ignore::Error::WithPath { path, .. } => path.clone(),
                        _ => PathBuf::new(),
                    };
                    Some(Found::Error { path, error: e.to_string() })
                }
                Ok(entry) => match entry.file_type() {
                    Some(t) if t.is_file() => {
                        let path = entry.into_path();
                        Some(match hash_file(&path) {
                            Ok((sha256, size)) => Found::File { path, sha256, size },
                            Err(e) => Found::Error { path, error: e.to_string() },
                        })
                    }
                    _ => None,
                },
            };
            match found {
                Some(f) => {
                    if tx.blocking_send(f).is_err() {
                        return ignore::WalkState::Quit;
                    }
                    ignore::WalkState::Continue
                }
                None => ignore::WalkState::Continue,
            }
        })
    });
}
