//! The bench's smoke test, a check module of `cargo xtask test` (its last part, also alone
//! with `--only bench`): the bench in its quickest form, checking that every figure came out
//! (not what it is: thresholds belong to the bench itself).

use std::path::Path;

use anyhow::{Result, bail};

use super::{OURS, Options, Part, run as bench};
use crate::report::Report;

const RUNS: &str = "bench-quick-runs-and-writes-its-report";
const SIZES_AND_BUILD: &str = "bench-quick-has-sizes-and-build-speed";
const BOOTS: &str = "bench-quick-boots-both-to-ready";
const AWS: &str = "bench-quick-aws-side-online-and-rss";
const METRICS: &str = "bench-quick-metrics-cpu-rss-and-cost";
pub const CHECKS: &[&str] = &[RUNS, SIZES_AND_BUILD, BOOTS, AWS, METRICS];

/// The bench in its quickest form (sizes, warm build, one direct boot of each image), checking
/// that every figure came out. Part of the default test run: it keeps the bench working.
pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    let mut opts = Options::new(root, true);
    opts.parts = vec![
        Part::Sizes,
        Part::Build,
        Part::Boot,
        Part::Aws,
        Part::Metrics,
    ];
    opts.out = crate::target_dir(root).join("bench-smoke");
    let mut result = None;
    report.check(RUNS, || {
        let r = bench(root, &opts)?;
        for f in ["report.md", "report.json"] {
            if !opts.out.join(f).is_file() {
                bail!("no {f}");
            }
        }
        result = Some(r);
        Ok(())
    });
    // Read only by the checks below, which run only when RUNS passed and set it.
    let r = result.unwrap_or_default();
    report.check_after(RUNS, SIZES_AND_BUILD, || {
        for who in ["ours", "baseline"] {
            for k in ["disk_vmdk", "initramfs", "ebs_upload"] {
                if r["sizes"][who][k].as_u64().unwrap_or(0) == 0 {
                    bail!("sizes.{who}.{k} missing: {}", r["sizes"]);
                }
            }
        }
        if r["build"][OURS]["warm"]["median"].as_f64().is_none() {
            bail!("no warm build time: {}", r["build"]);
        }
        Ok(())
    });
    report.check_after(RUNS, BOOTS, || {
        for who in ["ours", "baseline"] {
            let t = &r["boot"]["direct"][who]["ready_ms"]["median"];
            if t.as_f64().is_none_or(|t| t <= 0.0) {
                bail!("{who}: no ready time: {}", r["boot"]["direct"][who]["runs"]);
            }
        }
        if r["boot"]["direct"]["ratio_ours_baseline"]
            .as_f64()
            .is_none()
        {
            bail!("no ratio");
        }
        Ok(())
    });
    report.check_after(RUNS, AWS, || {
        for k in ["api_ms", "online_ms"] {
            if r["aws"][k]["median"].as_f64().is_none_or(|t| t <= 0.0) {
                bail!("no {k}: {}", r["aws"]);
            }
        }
        if r["aws"]["ratio_rss_on_off"].as_f64().is_none() {
            bail!("no RSS ratio: {}", r["aws"]);
        }
        Ok(())
    });
    report.check_after(RUNS, METRICS, || {
        let m = &r["metrics"];
        for k in ["cpu_ms_per_min", "rss_kb"] {
            for side in ["on", "off"] {
                if m[k][side]["median"].as_f64().is_none_or(|t| t <= 0.0) {
                    bail!("no {k} {side}: {m}");
                }
            }
        }
        if m["rss_delta_kb"].as_f64().is_none() || m["monthly_cost"].as_str().is_none() {
            bail!("no RSS delta or monthly cost: {m}");
        }
        // The publishing run must really have published.
        let published = m["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["metrics"].as_bool() == Some(true))
            .all(|r| r["periods_published"].as_u64().unwrap_or(0) > 0);
        if !published {
            bail!("a publishing run published no period: {m}");
        }
        Ok(())
    });
    Ok(())
}
