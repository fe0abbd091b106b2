//! Logging that cannot fill a disk: a size-capped, rotated log file, and a per-kind
//! rate limit for everything logged on the data path.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;
use crate::metrics::Metrics;

/// A log file rotated at `max_bytes`, keeping `keep` old files.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    written: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: Some(file),
            written,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .truncate(false)
                .open(&self.path)?,
        );
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.max_bytes {
            self.rotate()?;
        }
        // A single line longer than the cap is cut, never allowed to exceed it.
        let room =
            usize::try_from(self.max_bytes.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let take = buf.len().min(room);
        if let Some(f) = self.file.as_mut() {
            f.write_all(&buf[..take])?;
        }
        self.written = self.written.saturating_add(take as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

#[derive(Clone)]
struct SharedFile(Arc<Mutex<RotatingFile>>);

struct FileGuard<'a>(std::sync::MutexGuard<'a, RotatingFile>);

impl Write for FileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = FileGuard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        FileGuard(self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cfg.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match &cfg.file {
        Some(path) => {
            let file = RotatingFile::open(path, cfg.max_bytes, cfg.keep)?;
            builder
                .with_writer(SharedFile(Arc::new(Mutex::new(file))))
                .init();
        }
        None => builder.with_writer(io::stderr).init(),
    }
    Ok(())
}

/// Allows one log line per kind per interval; counts the rest.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Mutex<HashMap<&'static str, Instant>>,
    metrics: Arc<Metrics>,
}

impl LogLimiter {
    pub fn new(interval: Duration, metrics: Arc<Metrics>) -> LogLimiter {
        LogLimiter {
            interval,
            last: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// True when a line of this kind may be logged now.
    pub fn allow(&self, kind: &'static str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(kind) {
            Some(t) if now.saturating_duration_since(*t) < self.interval => {
                self.metrics.logs_suppressed.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => {
                last.insert(kind, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_caps_the_disk() {
        let dir = std::env::temp_dir().join(format!("holdfast-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("holdfast.log");
        let mut f = RotatingFile::open(&path, 4096, 2).unwrap();
        for _ in 0..10_000 {
            f.write_all(b"a line of log text that repeats a lot\n")
                .unwrap();
        }
        f.write_all(&vec![b'x'; 100_000]).unwrap();
        let total: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 3 * 4096, "{total}");
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_allows_one_per_interval() {
        let m = Arc::new(Metrics::default());
        let l = LogLimiter::new(Duration::from_secs(10), m.clone());
        assert!(l.allow("parse"));
        assert!(!l.allow("parse"));
        assert!(l.allow("tls"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(l.allow("parse"));
        assert_eq!(m.logs_suppressed.load(Ordering::Relaxed), 1);
    }
}
