//! `rgdiff sample --method flow|diffusion` end to end: run directory, the flow report, a seed
//! reproducing a run bit for bit, `--data` for denoising score matching, `--init-from`, and
//! one-line errors naming the file or option.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn rgdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the rgdiff binary runs")
}

fn ok(args: &[&str]) -> Value {
    let out = rgdiff(args);
    assert!(
        out.status.success(),
        "rgdiff {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str], phrase: &str) {
    let out = rgdiff(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(phrase), "{err} lacks {phrase}");
}

fn theory(dir: &Path) -> String {
    let f = dir.join("phi4_4.toml");
    std::fs::write(
        &f,
        "[lattice]\nshape = \"square\"\nsize = [4, 4]\n[model]\nkind = \"phi4-classical\"\nm2 = -1.0\nlambda = 1.0\n",
    )
    .unwrap();
    f.display().to_string()
}

#[test]
fn flow_and_diffusion_run_reproduce_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let file = theory(tmp.path());
    let d = |name: &str| tmp.path().join(name).display().to_string();
    let common = [
        "--train-samples",
        "16",
        "--samples",
        "300",
        "--batch",
        "100",
        "--steps",
        "6",
        "--channels",
        "3",
        "--json",
    ];
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec!["sample", file.as_str(), "--out", out];
        if !extra.contains(&"--train-iters") {
            a.extend_from_slice(&["--train-iters", "5"]);
        }
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        ok(&a)
    };
    let a = run(&d("a"), &["--method", "flow"]);
    assert_eq!(a["method"], "flow");
    assert_eq!(a["flow"]["scheme"], "carosso");
    assert_eq!(a["flow"]["rg_two_point"].as_array().unwrap().len(), 4);
    assert!(a["acceptance"]["mean"].as_f64().unwrap() > 0.0);
    assert!(a["ess"]["mean"].as_f64().unwrap() > 0.0);
    let rw = &a["reweighted"];
    assert!(rw["energy_density"]["error"].as_f64().unwrap() > 0.0, "{a}");
    assert!(
        rw["effective_samples"]["abs_magnetization"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(a["flow"]["ode_logq_error"].as_f64().unwrap().is_finite());
    for f in [
        "config.json",
        "trace.csv",
        "samples.npy",
        "log_weights.npy",
        "observables.json",
    ] {
        assert!(tmp.path().join("a").join(f).exists(), "{f}");
    }
    assert!(tmp.path().join("a/checkpoint/model.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("a/trace.csv"))
            .unwrap()
            .lines()
            .count(),
        6
    );
    // The same seed gives the same samples, bit for bit.
    run(&d("b"), &["--method", "flow"]);
    let read = |p: &str| std::fs::read(tmp.path().join(p).join("samples.npy")).unwrap();
    assert_eq!(read("a"), read("b"));
    // Stopped after 2 iterations and resumed: the same samples as the uninterrupted run.
    let out = rgdiff(&[
        "sample",
        file.as_str(),
        "--method",
        "flow",
        "--out",
        &d("r"),
        "--train-iters",
        "5",
        "--train-samples",
        "16",
        "--samples",
        "300",
        "--batch",
        "100",
        "--steps",
        "6",
        "--channels",
        "3",
        "--stop-after",
        "2",
    ]);
    assert!(out.status.success());
    ok(&["sample", "--resume", &d("r"), "--json"]);
    assert_eq!(read("a"), read("r"));
    // Diffusion from the flow-trained model, polchinski, and DSM on the flow run's samples.
    let c = run(
        &d("c"),
        &[
            "--method",
            "diffusion",
            "--init-from",
            &d("a"),
            "--train-iters",
            "0",
        ],
    );
    assert_eq!(c["method"], "diffusion");
    assert_eq!(c["training_iterations"], 0);
    let data = tmp.path().join("a/samples.npy").display().to_string();
    let e = run(
        &d("e"),
        &[
            "--method",
            "diffusion",
            "--scheme",
            "polchinski",
            "--data",
            &data,
        ],
    );
    assert!(e["flow"]["scheme"] == "polchinski");
    let trace = std::fs::read_to_string(tmp.path().join("e/trace.csv")).unwrap();
    let dsm: f64 = trace
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(5)
        .unwrap()
        .parse()
        .unwrap();
    assert!(dsm.is_finite() && dsm > 0.0, "dsm loss {dsm}");
    // Errors.
    let out_f = d("f");
    let toml = tmp.path().join("phi4_4.toml").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["--objective", "dsm"], "--data"),
        (&["--scheme", "heat"], "carosso or polchinski"),
        (&["--m0sq=0"], "--m0sq"),
        (&["--data", &toml], "phi4_4.toml"),
    ];
    for (extra, phrase) in cases {
        let mut a = vec!["sample", file.as_str(), "--method", "flow", "--out", &out_f];
        a.extend_from_slice(extra);
        fails(&a, phrase);
    }
}
