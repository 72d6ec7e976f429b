//! What a build prints: each stage's time as it ends, and a closing summary of the artifacts.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{ARTIFACTS, say};

pub struct Stages {
    start: Instant,
    last: Instant,
    times: Vec<(&'static str, f64)>,
}

impl Stages {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            times: Vec::new(),
        }
    }

    pub fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.times.push((name, secs));
        say(&format!("{name}: {secs:.2} s"));
        self.last = now;
    }

    pub fn summary(&self, out: &Path, up_to_date: bool) -> Result<()> {
        let total = self.start.elapsed().as_secs_f64();
        say(&format!(
            "{} in {:.2} s{}",
            if up_to_date {
                "nothing to do"
            } else {
                "image built"
            },
            total,
            if up_to_date { "" } else { ":" }
        ));
        for a in ARTIFACTS.iter().chain(["SHA256SUMS"].iter()) {
            let p = out.join(a);
            let meta = std::fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
            let allocated = {
                use std::os::unix::fs::MetadataExt;
                meta.blocks() * 512
            };
            say(&format!(
                "  {:<60} {:>10} bytes ({} allocated)",
                p.display(),
                meta.len(),
                human(allocated)
            ));
        }
        Ok(())
    }
}

pub fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
