//! `rgdiff sample` end to end: the run directory (config, trace, checkpoint, samples.npy,
//! observables.json), `--json`, `--resume` (the trace continues from the checkpoint),
//! reproducibility of a seed, and one-line errors for the
//! wrong kind of file or method.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rgdiff::field::npy::parse_header;
use serde_json::Value;

fn rgdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the rgdiff binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = rgdiff(args);
    assert!(
        out.status.success(),
        "rgdiff {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command that must fail with exit status 2 and one `rgdiff: error:` line containing
/// `phrase`.
fn fails(args: &[&str], phrase: &str) {
    let out = rgdiff(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("rgdiff: error: "), "{err}");
    assert!(err.contains(phrase), "{err}\nwanted: {phrase}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const ISING4: &str = "[lattice]\nshape = \"square\"\nsize = [4, 4]\n[model]\nkind = \"ising\"\nbeta = 0.4406868\nJ = 1\n";
const PHI4: &str =
    "[lattice]\nshape = \"chain\"\nsize = [8]\n[model]\nkind = \"phi4-classical\"\nm2 = -1\nlambda = 1\n";

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn npy(p: &Path) -> (String, Vec<usize>, usize) {
    let bytes = std::fs::read(p).unwrap();
    let (descr, fortran, shape, off) = parse_header(&bytes).unwrap();
    assert!(!fortran);
    (descr, shape, bytes.len() - off)
}

/// Every `key` of the report `v` is an estimate `{"mean": f64, "error": f64}`.
#[track_caller]
fn assert_estimates(v: &Value, keys: &[&str]) {
    for key in keys {
        assert!(
            v[key]["mean"].is_f64() && v[key]["error"].is_f64(),
            "{key}: {v}"
        );
    }
}

#[test]
fn markov_chain_runs_write_their_directory_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "ising4.toml", ISING4);
    let out = tmp.path().join("run");
    let args = [
        "sample",
        file.to_str().unwrap(),
        "--method",
        "wolff",
        "--samples",
        "2000",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    let stdout = ok(&args);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v, read_json(&out.join("observables.json")));
    assert_estimates(
        &v,
        &[
            "abs_magnetization",
            "susceptibility",
            "binder",
            "energy_density",
            "acceptance",
            "tau_int",
            "correlation_length",
        ],
    );
    // The exact 4x4 values come along, and the estimate agrees with them.
    let (e, err) = (
        v["energy_density"]["mean"].as_f64().unwrap(),
        v["energy_density"]["error"].as_f64().unwrap(),
    );
    let exact = v["exact"]["energy_density"].as_f64().unwrap();
    assert!((e - exact).abs() < 4.0 * err, "{e} +- {err} vs {exact}");
    assert_eq!(v["two_point"]["mean"].as_array().unwrap().len(), 4);
    assert_eq!(read_json(&out.join("config.json"))["method"], "wolff");
    let (descr, shape, data) = npy(&out.join("samples.npy"));
    assert_eq!(
        (descr.as_str(), shape.as_slice(), data),
        ("|i1", &[2000usize, 4, 4][..], 32000)
    );
    let bytes = std::fs::read(out.join("samples.npy")).unwrap();
    assert!(bytes[bytes.len() - 32000..]
        .iter()
        .all(|&b| b == 1 || b == 0xff));
    // A second run into the same directory is refused; the same seed reproduces the numbers.
    fails(&args, "already holds a run");
    let again = tmp.path().join("again");
    let mut args2 = args;
    args2[8] = again.to_str().unwrap();
    let mut v2: Value = serde_json::from_str(ok(&args2).trim()).unwrap();
    let mut v1 = v.clone();
    for key in [
        "sampling_seconds",
        "samples_per_second",
        "independent_samples_per_second",
    ] {
        v1[key] = Value::Null;
        v2[key] = Value::Null;
    }
    assert_eq!(v1, v2);
    assert_eq!(
        std::fs::read(out.join("samples.npy")).unwrap(),
        std::fs::read(again.join("samples.npy")).unwrap()
    );

    // phi^4 on a chain, HMC: float64 samples of shape (B, N) and the Schwinger-Dyson check.
    let file = write(tmp.path(), "phi.toml", PHI4);
    let out = tmp.path().join("phi");
    let v: Value = serde_json::from_str(
        ok(&[
            "sample",
            file.to_str().unwrap(),
            "--samples",
            "3000",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(v["method"], "hmc");
    let sd = &v["schwinger_dyson"];
    let (m, e) = (sd["mean"].as_f64().unwrap(), sd["error"].as_f64().unwrap());
    assert!((m - 1.0).abs() < 4.0 * e, "{m} +- {e}");
    assert!(v["leapfrog_steps"].as_u64().unwrap() >= 1);
    let (descr, shape, data) = npy(&out.join("samples.npy"));
    assert_eq!(
        (descr.as_str(), shape.as_slice(), data),
        ("<f8", &[3000usize, 8][..], 3000 * 8 * 8)
    );
}

#[test]
fn model_runs_train_checkpoint_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "ising4.toml", ISING4);
    let out = tmp.path().join("model");
    let o = out.to_str().unwrap();
    let f = file.to_str().unwrap();
    let common = ["--samples", "500", "--train-samples", "64", "--json"];
    let mut args = vec!["sample", f, "--train-iters", "3", "--out", o];
    args.extend(common);
    let v: Value = serde_json::from_str(ok(&args).trim()).unwrap();
    assert_eq!(v["method"], "model");
    assert_estimates(&v, &["ess", "log_z", "acceptance", "free_energy_bound"]);
    assert!(v["pareto_k"].is_f64(), "{v}");
    // Every proposal reweighted: the same observables, and their effective samples.
    let rw = &v["reweighted"];
    assert_estimates(
        rw,
        &[
            "abs_magnetization",
            "susceptibility",
            "binder",
            "energy_density",
        ],
    );
    assert_eq!(rw["samples"], 500);
    let eff = rw["effective_samples"]["energy_density"].as_f64().unwrap();
    assert!(eff > 0.0 && eff <= 500.0, "{eff}");
    assert!(rw["independent_samples_per_second"].as_f64().unwrap() > 0.0);
    // The proposals' log weights give log Z again.
    let (descr, shape, len) = npy(&out.join("log_weights.npy"));
    assert_eq!((descr.as_str(), shape.as_slice()), ("<f8", &[500usize][..]));
    let bytes = std::fs::read(out.join("log_weights.npy")).unwrap();
    let log_w: Vec<f64> = bytes[bytes.len() - len..]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (log_z, _) = rgdiff::stats::log_mean_exp(&log_w);
    assert_eq!(log_z, v["log_z"]["mean"].as_f64().unwrap());
    assert_eq!(v["training_iterations"], 3);
    let trace = std::fs::read_to_string(out.join("trace.csv")).unwrap();
    assert_eq!(trace.lines().count(), 4, "{trace}");
    assert!(out.join("checkpoint/model.safetensors").exists());
    assert!(out.join("checkpoint/adam.safetensors").exists());
    // Resume to 5 iterations: two more rows, same first rows.
    let mut args = vec!["sample", "--resume", o, "--train-iters", "5"];
    args.extend(common);
    let v: Value = serde_json::from_str(ok(&args).trim()).unwrap();
    assert_eq!(v["training_iterations"], 5);
    let resumed = std::fs::read_to_string(out.join("trace.csv")).unwrap();
    assert_eq!(resumed.lines().count(), 6);
    assert!(resumed.starts_with(&trace));
    let (descr, shape, _) = npy(&out.join("samples.npy"));
    assert_eq!(
        (descr.as_str(), shape.as_slice()),
        ("|i1", &[500usize, 4, 4][..])
    );
}

/// `--network table`: the tables and Adam's moments are checkpointed as `.npy`, a resumed
/// run gives what the uninterrupted one gives, bit for bit, and options that apply to the
/// networks only are refused.
#[test]
fn table_runs_checkpoint_and_resume_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "ising4.toml", ISING4);
    let f = file.to_str().unwrap();
    let run = |name: &str, extra: &[&str], resume: bool| -> String {
        let out = tmp.path().join(name);
        let o = out.to_str().unwrap();
        let mut args = if resume {
            vec!["sample", "--resume", o]
        } else {
            vec!["sample", f, "--network", "table", "--out", o]
        };
        args.extend(["--train-iters", "6", "--samples", "400", "--json"]);
        args.extend(extra);
        ok(&args)
    };
    // Paused after 3 of 6 iterations, with a checkpoint.
    run("a", &["--stop-after", "3"], false);
    let dir = tmp.path().join("a");
    let (descr, shape, _) = npy(&dir.join("checkpoint/tables.npy"));
    assert_eq!(descr, "<f8");
    let (_, adam_shape, _) = npy(&dir.join("checkpoint/adam.npy"));
    assert_eq!(adam_shape, vec![2, shape[0]]);
    let cfg: Value = read_json(&dir.join("config.json"));
    assert_eq!(cfg["table"]["context"], 12, "{cfg}");
    let paused = std::fs::read_to_string(dir.join("trace.csv")).unwrap();
    assert_eq!(paused.lines().count(), 4, "{paused}");
    let resumed: Value = serde_json::from_str(run("a", &[], true).trim()).unwrap();
    // The resumed run continued from the checkpoint: the first rows, timings included, are kept.
    let after = std::fs::read_to_string(dir.join("trace.csv")).unwrap();
    assert!(
        after.starts_with(&paused) && after.lines().count() == 7,
        "{after}"
    );
    let straight: Value = serde_json::from_str(run("b", &[], false).trim()).unwrap();
    assert_eq!(resumed["training_iterations"], 6);
    for key in ["log_z", "energy_density", "acceptance", "free_energy_bound"] {
        assert_eq!(resumed[key], straight[key], "{key}");
    }
    assert_eq!(
        resumed["reweighted"]["energy_density"],
        straight["reweighted"]["energy_density"]
    );
    let trace = |d: &str| std::fs::read_to_string(tmp.path().join(d).join("trace.csv")).unwrap();
    let cols = |t: String| -> Vec<String> {
        // Everything but the seconds column.
        t.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(cols(trace("a")), cols(trace("b")));
    let o = tmp.path().join("x");
    let o = o.to_str().unwrap();
    for (extra, phrase) in [
        (
            &["--z2", "pinned"][..],
            "--z2 pinned and --last-step model apply to the networks",
        ),
        (
            &["--table-colours", "3"][..],
            "table colours 3: expected 1, 2 or 4",
        ),
        (
            &["--table-context", "24"][..],
            "table context 24: expected at most 20 sites",
        ),
        (
            &["--scheme", "autoregressive"][..],
            "--network table follows the rg schedule",
        ),
    ] {
        let mut args = vec!["sample", f, "--network", "table", "--out", o];
        args.extend(extra);
        fails(&args, phrase);
    }
}

#[test]
fn wrong_files_and_methods_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ising = write(tmp.path(), "ising4.toml", ISING4);
    let phi = write(tmp.path(), "phi.toml", PHI4);
    let tfim = write(
        tmp.path(),
        "tfim.toml",
        "[lattice]\nshape = \"chain\"\nsize = [8]\n[model]\nkind = \"tfim\"\nJ = 1\nh = 1\n",
    );
    let o = tmp.path().join("x");
    let o = o.to_str().unwrap();
    fails(
        &["sample", tfim.to_str().unwrap(), "--out", o],
        "is a quantum Hamiltonian; `rgdiff sample` needs a classical theory",
    );
    fails(
        &["exact", ising.to_str().unwrap()],
        "\"ising\" is a classical lattice theory, not a Hamiltonian; sample it with `rgdiff sample",
    );
    fails(
        &["ground-state", ising.to_str().unwrap(), "--out", o],
        "is a classical lattice theory",
    );
    fails(
        &[
            "sample",
            ising.to_str().unwrap(),
            "--method",
            "hmc",
            "--out",
            o,
        ],
        "--method hmc needs a continuous field",
    );
    fails(
        &[
            "sample",
            phi.to_str().unwrap(),
            "--method",
            "model",
            "--out",
            o,
        ],
        "--method model samples discrete spins",
    );
    fails(
        &[
            "sample",
            ising.to_str().unwrap(),
            "--dilation",
            "wide",
            "--out",
            o,
        ],
        "unknown dilation `wide`; expected none, layers or levels",
    );
    fails(
        &[
            "sample",
            phi.to_str().unwrap(),
            "--method",
            "gibbs",
            "--out",
            o,
        ],
        "unknown method `gibbs`",
    );
}

#[test]
fn numpy_reads_the_samples_when_it_is_installed() {
    // Optional: only when python3 with numpy is present (the header test above does not
    // depend on it).
    let has_numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_numpy {
        eprintln!("numpy not installed; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "phi.toml", PHI4);
    let out = tmp.path().join("r");
    ok(&[
        "sample",
        file.to_str().unwrap(),
        "--samples",
        "100",
        "--out",
        out.to_str().unwrap(),
    ]);
    let script = format!(
        "import numpy as np; a = np.load('{}'); assert a.shape == (100, 8) and a.dtype == np.float64; print(a.sum())",
        out.join("samples.npy").display()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_untrained_model_chain_that_rarely_moves_is_flagged() {
    // Untrained proposals at beta_c on 8x8: almost every independence MH proposal is
    // rejected, which must be said next to the numbers (JSON and stderr).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("poor");
    let args = [
        "sample",
        "hamiltonians/ising_square_8.toml",
        "--train-iters",
        "0",
        "--local-every",
        "0",
        "--samples",
        "400",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = rgdiff(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let w = v["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("accepted") && w.contains("--local-every"), "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: model proposals"));
    let saved = read_json(&out.join("observables.json"));
    assert_eq!(saved["warnings"], v["warnings"]);
}
