//! `rgdiff bench` end to end: the tiny suite (TFIM and Heisenberg chains of 6 sites) through
//! the library and the CLI, every output file, and the numbers in them checked against each
//! other and against the exact energies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::{assert_rel, tfim_chain_e0};
use rgdiff::bench::{self, BenchOptions, ReferenceSource, Suite};

/// Ground-state energy of the 6-site Heisenberg ring (S = 1/2, J = 1): `-(2 + sqrt 13) / 2`
/// (Bethe ansatz; `rgdiff exact` gives -2.802775637732).
fn heisenberg6() -> f64 {
    -(2.0 + 13f64.sqrt()) / 2.0
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A PNG: the signature, an IHDR chunk first, the size and an IEND chunk last.
fn assert_png(path: &Path, size: (u32, u32)) {
    let b = read(path);
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR", "{}", path.display());
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    assert_eq!((w, h), size, "{}", path.display());
    assert_eq!(&b[b.len() - 8..b.len() - 4], b"IEND", "{}", path.display());
    // Not a blank canvas: the compressed image data is more than a few hundred bytes.
    assert!(
        b.len() > 5_000,
        "{}: only {} bytes",
        path.display(),
        b.len()
    );
}

/// An SVG: an `<svg` root element with the namespace, closed at the end, with text and lines.
fn assert_svg(path: &Path) {
    let t = String::from_utf8(read(path)).expect("UTF-8 SVG");
    let body = t.trim_start();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").expect("XML declaration closed") + 2..].trim_start(),
        None => body,
    };
    assert!(
        body.starts_with("<svg"),
        "{}: root is not <svg>",
        path.display()
    );
    assert!(
        body.contains("http://www.w3.org/2000/svg"),
        "{}",
        path.display()
    );
    assert!(
        t.trim_end().ends_with("</svg>"),
        "{}: not closed",
        path.display()
    );
    assert!(t.contains("<text") && (t.contains("<polyline") || t.contains("<path")));
}

/// Splits a CSV line, honouring quoted fields.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn csv_rows(out: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = String::from_utf8(read(&out.join("bench.csv"))).unwrap();
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("header"));
    assert_eq!(header.join(","), bench::output::CSV_HEADER);
    lines
        .map(|l| {
            let f = csv_fields(l);
            assert_eq!(f.len(), header.len(), "row {l}");
            header.iter().cloned().zip(f).collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` = `{}` is not a number", row[key]))
}

/// Checks every output of a bench in `out` with `runs` rows.
fn check_outputs(out: &Path, problems: &[&str], schemes: &[&str]) {
    for p in problems {
        assert_png(&out.join(format!("convergence-{p}.png")), (900, 800));
        assert_svg(&out.join(format!("convergence-{p}.svg")));
    }
    assert_png(&out.join("scaling.png"), (1400, 600));
    assert_svg(&out.join("scaling.svg"));

    let rows = csv_rows(out);
    assert_eq!(rows.len(), problems.len() * schemes.len());
    let md = String::from_utf8(read(&out.join("bench.md"))).unwrap();
    let table: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| problem") && !l.starts_with("| ---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(table.len(), rows.len(), "{md}");
    let json: serde_json::Value = serde_json::from_slice(&read(&out.join("bench.json"))).unwrap();
    assert_eq!(json["records"].as_array().unwrap().len(), rows.len());

    for (row, md_row) in rows.iter().zip(&table) {
        let what = format!("{} {}", row["problem"], row["scheme"]);
        let e = num(row, "energy");
        let err = num(row, "energy_error");
        let e0 = num(row, "reference_energy");
        let rel = num(row, "relative_error");
        // The relative error is the one of the energies, in the CSV to full precision ...
        assert_rel(
            rel,
            (e - e0) / e0.abs(),
            1e-12,
            &format!("{what}: csv relative error"),
        );
        // ... and in the Markdown table to its three printed digits.
        assert_eq!(md_row[0], row["problem"]);
        assert_eq!(md_row[2], format!("`{}`", row["scheme"]));
        let md_rel: f64 = md_row[6].parse().expect("relative error in the table");
        assert_rel(md_rel, rel, 6e-3, &format!("{what}: table relative error"));
        // The reference the table shows is the CSV's.
        let md_ref: f64 = md_row[4]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_rel(md_ref, e0, 1e-9, &format!("{what}: table reference"));
        // The variational principle, up to the statistical error.
        assert!(
            e > e0 - 5.0 * err,
            "{what}: E = {e} +- {err} below E0 = {e0}"
        );
        assert!(num(row, "iterations") >= 1.0);
        assert!(num(row, "seconds_per_iteration") > 0.0 && num(row, "samples_per_second") > 0.0);
        assert!(num(row, "peak_rss_bytes") > 1e6, "{what}: peak RSS");
        // The run directory holds the trace the convergence plot was drawn from.
        let trace = std::fs::read_to_string(Path::new(&row["run_dir"]).join("trace.csv")).unwrap();
        assert_eq!(
            trace.lines().count() - 1,
            num(row, "iterations") as usize,
            "{what}"
        );
        // The optimisation did something: the final error is at most half the first
        // iteration's (a fresh model is off by tens of percent).
        let first: f64 = trace
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let rel_first = (first - e0) / e0.abs();
        assert!(
            rel < 0.5 * rel_first,
            "{what}: relative error {rel}, first iteration {rel_first}"
        );
    }
}

#[test]
fn tiny_suite_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let opts = BenchOptions {
        suite: Some(Suite::Tiny),
        budget: Some(60.0),
        max_iters: 25,
        samples: 128,
        out: Some(out.clone()),
        progress: false,
        ..BenchOptions::default()
    };
    let report = bench::run(&opts, &AtomicBool::new(false), "test").unwrap();
    assert_eq!(report.records.len(), 4);
    // References: the closed form for the TFIM chain, ED for the Heisenberg chain.
    let (_, tfim) = &report.references[0];
    assert_eq!(tfim.source, ReferenceSource::ClosedForm);
    assert_rel(
        tfim.energy.unwrap(),
        tfim_chain_e0(6, 1.0, 1.0),
        1e-14,
        "TFIM 6",
    );
    let (_, heis) = &report.references[1];
    assert_eq!(heis.source, ReferenceSource::ExactDiagonalization);
    assert_rel(heis.energy.unwrap(), heisenberg6(), 1e-10, "Heisenberg 6");
    for r in &report.records {
        // The iteration cap, not the budget, ends these runs.
        assert_eq!(r.status, "finished", "{r:?}");
        assert_eq!(r.iterations, 25);
    }
    check_outputs(
        &out,
        &["tfim_chain_6", "heisenberg_chain_6"],
        &["rg", "autoregressive"],
    );
    // The plots can be redrawn from bench.json and the traces alone.
    std::fs::remove_file(out.join("scaling.png")).unwrap();
    std::fs::remove_file(out.join("convergence-tfim_chain_6.svg")).unwrap();
    let again = bench::replot(&out).unwrap();
    assert_eq!(again.records.len(), 4);
    assert_png(&out.join("scaling.png"), (1400, 600));
    assert_svg(&out.join("convergence-tfim_chain_6.svg"));
    // A second bench into the same directory is refused unless asked to overwrite.
    let again = bench::run(&opts, &AtomicBool::new(false), "test").unwrap_err();
    assert!(again.to_string().contains("--overwrite"), "{again}");
}

#[test]
fn budget_bounds_the_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BenchOptions {
        suite: Some(Suite::Tiny),
        schemes: vec!["rg".into()],
        budget: Some(1e-3),
        samples: 64,
        out: Some(dir.path().to_path_buf()),
        progress: false,
        ..BenchOptions::default()
    };
    let report = bench::run(&opts, &AtomicBool::new(false), "test").unwrap();
    for r in &report.records {
        // The trial iteration alone exceeds the budget: one planned iteration, then the stop.
        assert_eq!(r.iterations, 1, "{r:?}");
        assert!(r.energy.is_finite());
    }
}

#[test]
fn file_references() {
    let shipped = |f: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("hamiltonians")
                .join(f),
        )
        .unwrap()
    };
    assert_eq!(
        bench::file_reference(&shipped("tfim_chain_16.toml")),
        Some(-20.404594474757)
    );
    assert_eq!(
        bench::file_reference(&shipped("heisenberg_chain_32.toml")),
        Some(-14.206527438950)
    );
    assert_eq!(
        bench::file_reference(&shipped("phi4_chain_4.toml")),
        Some(3.4646577954)
    );
    assert_eq!(
        bench::file_reference("# no reference here\n[lattice]\n"),
        None
    );
}

fn rgdiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .output()
        .expect("the rgdiff binary runs")
}

#[test]
fn cli_bench_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("tfim_chain_6.toml");
    std::fs::write(
        &file,
        "[lattice]\nshape = \"chain\"\nsize = [6]\n\n[model]\nkind = \"tfim\"\nJ = 1.0\nh = 1.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = rgdiff(&[
        "bench",
        file.to_str().unwrap(),
        "--schemes",
        "rg,autoregressive+causal",
        "--iters",
        "20",
        "--samples",
        "128",
        "--chunks",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A line per run as it finishes, then the table.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("tfim_chain_6") && l.contains("rel ")),
        "{stdout}"
    );
    assert!(stdout.contains("| tfim_chain_6 | 6 | `rg` |"), "{stdout}");
    assert!(
        stdout.contains("| tfim_chain_6 | 6 | `autoregressive+causal` |"),
        "{stdout}"
    );
    check_outputs(&out, &["tfim_chain_6"], &["rg", "autoregressive+causal"]);
    // The causal run's directory records its network, so it can be resumed as it ran.
    let config =
        std::fs::read_to_string(out.join("runs/tfim_chain_6-autoregressive+causal/config.json"))
            .unwrap();
    assert!(config.contains("\"network\": \"causal\""), "{config}");
    // --chunks reaches every run (two random streams, in parallel on the CPU).
    assert!(config.contains("\"chunks\": 2"), "{config}");
}

#[test]
fn cli_bench_refuses_bad_input() {
    for (args, want) in [
        (vec!["bench", "--suite", "huge"], "unknown suite `huge`"),
        (vec!["bench"], "give problem files or --suite"),
        (
            vec!["bench", "--suite", "tiny", "--schemes", "rg,zigzag"],
            "unknown scheme `zigzag`",
        ),
        (
            vec!["bench", "--suite", "tiny", "--schemes", "rg+dense"],
            "expected masked or causal",
        ),
        (
            vec!["bench", "--suite", "tiny", "--budget", "0"],
            "--budget",
        ),
        (vec!["bench", "no/such/file.toml"], "no/such/file.toml"),
        (
            vec!["bench", "--suite", "tiny", "--chunks", "0"],
            "--chunks 0: expected between 1",
        ),
    ] {
        let o = rgdiff(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("rgdiff: error:") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// A run that ends on one configuration is labelled `collapsed`, not `finished`, and the table
/// says what that means: the TFIM chain of 8 at `h = 0.05` falls onto the all-up configuration
/// without its second-order admixture (4.7e-4 above E0 with a sampled variance of 1e-28).
#[test]
fn cli_bench_labels_a_collapsed_run() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("tfim_weak.toml");
    std::fs::write(
        &file,
        "[lattice]\nshape = \"chain\"\nsize = [8]\n\n[model]\nkind = \"tfim\"\nJ = 1.0\nh = 0.05\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = rgdiff(&[
        "bench",
        file.to_str().unwrap(),
        "--schemes",
        "rg",
        "--iters",
        "120",
        "--samples",
        "128",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = csv_rows(&out);
    assert_eq!(rows[0]["status"], "collapsed");
    assert!(num(&rows[0], "relative_error") > 1e-4);
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(
        md.contains("status `collapsed`: the state ended on one configuration"),
        "{md}"
    );
}
