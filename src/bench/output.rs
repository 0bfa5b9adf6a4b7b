//! The bench's tables: one line per finished run on stdout, `bench.csv` (every number at full
//! precision), `bench.md` (a Markdown table for a README) and `bench.json` (the whole report).

use std::fmt::Write as _;
use std::path::Path;

use super::{plot, BenchRecord, BenchReport};
use crate::error::Result;
use crate::run::write_atomic;

/// `value ± error` with the error to two significant digits and the value to the same decimal.
pub fn value_error(v: f64, e: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if !(e.is_finite() && e > 0.0) {
        return format!("{v:.8}");
    }
    let decimals = (1 - e.log10().floor() as i64).clamp(0, 12) as usize;
    format!("{v:.decimals$} ± {e:.decimals$}")
}

fn opt_e(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$e}"),
        _ => String::new(),
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or(String::new(), |b| {
        format!("{:.0}", b as f64 / (1u64 << 20) as f64)
    })
}

/// The line printed when a run finishes.
pub fn run_line(r: &BenchRecord) -> String {
    let rel = r
        .relative_error
        .map_or("rel n/a".to_string(), |x| format!("rel {x:.2e}"));
    format!(
        "{:<24} {:<16} E = {}  {rel}  v-score {:.2e}  {} iterations  {:.3} s/iter  {:.0} samples/s  {} MiB  {}",
        r.problem,
        r.scheme,
        value_error(r.energy, r.energy_error),
        r.v_score,
        r.iterations,
        r.seconds_per_iteration,
        r.samples_per_second,
        mib(r.peak_rss_bytes),
        r.status
    )
}

/// Columns of `bench.csv`.
pub const CSV_HEADER: &str = "problem,file,model,lattice,n_sites,scheme,steps,phase,\
reference_energy,reference_source,status,energy,energy_error,relative_error,variance,v_score,\
iterations,wall_seconds,seconds_per_iteration,samples_per_second,peak_rss_bytes,\
peak_rss_reset,n_params,samples,run_dir";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        String::new()
    }
}

/// `bench.csv`: one row per run; numbers in Rust's shortest round-trip form (`1.5e-3`), empty
/// where there is none.
pub fn csv(report: &BenchReport) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in &report.records {
        let fields = [
            csv_field(&r.problem),
            csv_field(&r.file),
            csv_field(&r.model),
            csv_field(&r.lattice),
            r.n_sites.to_string(),
            csv_field(&r.scheme),
            r.steps.to_string(),
            r.phase.name().to_string(),
            r.reference_energy.map_or(String::new(), num),
            r.reference_source.label().to_string(),
            r.status.clone(),
            num(r.energy),
            num(r.energy_error),
            r.relative_error.map_or(String::new(), num),
            num(r.variance),
            num(r.v_score),
            r.iterations.to_string(),
            num(r.wall_seconds),
            num(r.seconds_per_iteration),
            num(r.samples_per_second),
            r.peak_rss_bytes.map_or(String::new(), |b| b.to_string()),
            r.peak_rss_reset.to_string(),
            r.n_params.to_string(),
            r.samples.to_string(),
            csv_field(&r.run_dir),
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

/// `bench.md`: the table, the references and how it was made.
pub fn markdown(report: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| problem | N | scheme | steps | reference E0 | VMC energy | relative error | V-score | iterations | s / iteration | samples / s | peak RSS (MiB) | status |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in &report.records {
        let reference = r.reference_energy.map_or("none".to_string(), |e| {
            format!("{e:.10} ({})", r.reference_source.label())
        });
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {:.3} | {:.0} | {} | {} |",
            r.problem,
            r.n_sites,
            r.scheme,
            r.steps,
            reference,
            value_error(r.energy, r.energy_error),
            opt_e(r.relative_error, 2),
            opt_e(Some(r.v_score), 2),
            r.iterations,
            r.seconds_per_iteration,
            r.samples_per_second,
            mib(r.peak_rss_bytes),
            r.status
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Relative error `(E - E0) / |E0|`; V-score `N Var(E_loc) / E^2`; the energy is the mean \
         local energy of {} fresh samples after the last iteration, with its standard error. \
         Budget {} s per run (at most {} iterations of {} samples, Adam, lr {}), seed {}, \
         device {}; peak RSS is the process's `VmHWM` during the run{}{}.",
        4 * report.samples,
        report.budget_seconds,
        report.max_iters,
        report.samples,
        report.lr,
        report.seed,
        report.device,
        if report.records.iter().all(|r| r.peak_rss_reset) {
            " (reset before each run)"
        } else {
            " (not resettable here: the process's peak so far)"
        },
        if report.records.iter().any(|r| r.status == "collapsed") {
            "; status `collapsed`: the state ended on one configuration (its energy is that \
             configuration's, its near-zero variance an artefact of the samples)"
        } else {
            ""
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "References:");
    let _ = writeln!(s);
    for (name, r) in &report.references {
        let _ = writeln!(
            s,
            "- {name}: {} ({}: {})",
            r.energy.map_or("none".to_string(), |e| format!("{e:.12}")),
            r.source.label(),
            r.detail
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Command: `{}`; machine: {}; total {:.0} s.",
        report.command,
        report.machine.label(),
        report.seconds
    );
    s
}

/// Writes `bench.csv`, `bench.md` and `bench.json` into `out`.
pub fn write_tables(out: &Path, report: &BenchReport) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| super::io_err(out, e))?;
    write_atomic(&out.join("bench.csv"), csv(report).as_bytes())?;
    write_atomic(&out.join("bench.md"), markdown(report).as_bytes())?;
    let json = serde_json::to_vec_pretty(report).expect("report serialises");
    write_atomic(&out.join("bench.json"), &json)
}

/// Writes the tables and the plots into `out`.
pub fn write_all(out: &Path, report: &BenchReport) -> Result<()> {
    write_tables(out, report)?;
    plot::write_plots(out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_error_rounds_to_the_error() {
        assert_eq!(value_error(-20.326855, 0.00517), "-20.3269 ± 0.0052");
        assert_eq!(value_error(1.5, 0.0), "1.50000000");
        assert_eq!(value_error(f64::NAN, 1.0), "n/a");
        assert_eq!(csv_field("chain 6, periodic"), "\"chain 6, periodic\"");
    }
}
