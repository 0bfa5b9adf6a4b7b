//! The `rgdiff` binary: JSON and human output of `rgdiff exact` against the free-fermion
//! energy, and one-line error reports for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_rel, tfim_chain_e0};
use serde_json::Value;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn rgdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the rgdiff binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = rgdiff(args);
    assert!(
        out.status.success(),
        "rgdiff {args:?} failed ({:?}):\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail and checks its report: a non-zero exit, nothing on stdout,
/// and exactly one line on stderr starting with `rgdiff: error:`, without a panic. Returns the
/// line.
fn refused(args: &[&str]) -> String {
    let out = rgdiff(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "rgdiff {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "rgdiff {args:?} printed on stdout:\n{}",
        text(&out.stdout)
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "rgdiff {args:?} panicked:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "rgdiff {args:?}: stderr should be one line:\n{stderr}"
    );
    assert!(
        stderr.starts_with("rgdiff: error: "),
        "rgdiff {args:?}: {stderr}"
    );
    assert!(stderr.ends_with('\n'));
    stderr.trim_end().to_string()
}

/// `E0 = -2 sum_{n=1}^{8} sqrt(2 - 2 cos((2n-1) pi / 16))` of hamiltonians/tfim_chain_16.toml.
const TFIM16: f64 = -20.404594474757;

fn tfim16() -> String {
    repo_file("hamiltonians/tfim_chain_16.toml")
        .display()
        .to_string()
}

/// The single JSON object on stdout.
fn json(stdout: &str) -> serde_json::Map<String, Value> {
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "expected one line of JSON:\n{stdout}"
    );
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(Value::Object(m)) => m,
        Ok(other) => panic!("expected a JSON object, got {other}"),
        Err(e) => panic!("not JSON ({e}):\n{stdout}"),
    }
}

fn number(obj: &serde_json::Map<String, Value>, key: &str) -> f64 {
    obj.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("missing number `{key}` in {obj:?}"))
}

#[test]
fn exact_json_matches_free_fermions() {
    assert_rel(tfim_chain_e0(16, 1.0, 1.0), TFIM16, 1e-12, "formula");
    let obj = json(&ok(&["exact", &tfim16(), "--json"]));
    for key in [
        "energy",
        "energy_per_site",
        "dimension",
        "sector",
        "seconds",
    ] {
        assert!(obj.contains_key(key), "missing `{key}` in {obj:?}");
    }
    let e = number(&obj, "energy");
    assert_rel(e, TFIM16, 1e-9, "energy");
    assert_rel(
        number(&obj, "energy_per_site"),
        TFIM16 / 16.0,
        1e-9,
        "energy_per_site",
    );
    // Auto splits the flip-symmetric TFIM into its two parity sectors; the ground state is even.
    assert_eq!(obj["dimension"].as_u64(), Some(1 << 15));
    assert_eq!(obj["sector"].as_str(), Some("p=+1"));
    assert_eq!(obj["scanned"].as_array().map(|a| a.len()), Some(2));
    assert!(number(&obj, "seconds") >= 0.0);
}

#[test]
fn exact_json_with_two_levels_has_the_gap() {
    let obj = json(&ok(&["exact", &tfim16(), "--json", "--levels", "2"]));
    let levels: Vec<f64> = obj["levels"]
        .as_array()
        .expect("levels is an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    assert_eq!(levels.len(), 2, "{levels:?}");
    assert_rel(levels[0], TFIM16, 1e-9, "levels[0]");
    let gap = number(&obj, "gap");
    assert!(gap > 0.0, "gap = {gap}");
    assert!(
        (gap - (levels[1] - levels[0])).abs() <= 1e-12,
        "gap {gap} vs levels {levels:?}"
    );
    // The chain is critical: its gap closes like 1/N and is small at N = 16.
    assert!(gap < 1.0, "gap = {gap}");
}

#[test]
fn exact_human_output_shows_e0() {
    let out = ok(&["exact", &tfim16()]);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("E0"))
        .unwrap_or_else(|| panic!("no E0 line:\n{out}"));
    assert!(line.contains("-20.4045944747"), "{line}");
    let value: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number on the E0 line: {line}"));
    assert_rel(value, TFIM16, 1e-9, "E0 line");
}

// --- bad input -------------------------------------------------------------------------------

#[test]
fn missing_file_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_problem.toml");
    let p = path.display().to_string();
    let line = refused(&["exact", &p]);
    assert!(line.contains(&p), "{line}");
}

#[test]
fn unknown_key_is_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(
        &path,
        "[lattice]\nshape = \"chain\"\nsize = [8]\n\n[model]\nkind = \"tfim\"\nJ = 1\nh = 1\nfeild = 2\n",
    )
    .unwrap();
    let p = path.display().to_string();
    let line = refused(&["exact", &p]);
    assert!(line.contains(&p), "{line}");
    // The line of the key and its name.
    assert!(line.contains(&format!("{p}:9:")), "{line}");
    assert!(line.contains("feild"), "{line}");
}

#[test]
fn sz_sector_of_the_tfim_is_refused() {
    let line = refused(&["exact", &tfim16(), "--sector", "sz=0"]);
    assert!(line.contains("Sz"), "{line}");
}

#[test]
fn momentum_on_an_open_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[lattice]\nshape = \"chain\"\nsize = [8]\nboundary = \"open\"\n[model]\nkind = \"heisenberg\"\nJ = 1\n",
    )
    .unwrap();
    let p = path.display().to_string();
    let line = refused(&["exact", &p, "--sector", "k=1"]);
    assert!(line.contains("translation"), "{line}");
    // The same file is fine without the momentum.
    let obj = json(&ok(&["exact", &p, "--sector", "sz=0", "--json"]));
    assert_eq!(obj["dimension"].as_u64(), Some(70));
}

#[test]
fn zero_levels_are_refused() {
    let line = refused(&["exact", &tfim16(), "--levels", "0"]);
    assert!(line.contains("levels"), "{line}");
}

#[test]
fn other_bad_values_are_one_line() {
    refused(&["exact", &tfim16(), "--sector", "q=1"]);
    refused(&["exact", &tfim16(), "--sector", "p=2"]);
    refused(&["exact", &tfim16(), "--tol", "0.5"]);
    // Too big for the memory given: refused before allocating, in bytes.
    let h24 = repo_file("hamiltonians/heisenberg_chain_24.toml")
        .display()
        .to_string();
    let line = refused(&["exact", &h24, "--sector", "sz=0", "--memory", "0.001"]);
    assert!(line.contains("bytes"), "{line}");
}
