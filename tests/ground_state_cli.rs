//! `rgdiff ground-state` end to end: run directory contents, resume reproducing the
//! uninterrupted run bit for bit, and a diverging run keeping its last good checkpoint.

use std::path::Path;
use std::process::Command;

fn rgdiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .output()
        .expect("runs")
}

fn problem(dir: &Path) -> String {
    let p = dir.join("tfim6.toml");
    std::fs::write(
        &p,
        "[lattice]\nshape = \"chain\"\nsize = [6]\n[model]\nkind = \"tfim\"\nJ = 1\nh = 1\n",
    )
    .unwrap();
    p.display().to_string()
}

const SMALL: [&str; 10] = [
    "--samples",
    "64",
    "--width",
    "4",
    "--depth",
    "2",
    "--kernel",
    "3",
    "--lr",
    "0.01",
];

/// minSR with the causal network on the autoregressive schedule.
const CAUSAL_SR: [&str; 6] = [
    "--optimizer",
    "sr",
    "--scheme",
    "autoregressive",
    "--network",
    "causal",
];

fn trace_rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("trace.csv"))
        .unwrap()
        .lines()
        .skip(1)
        // Drop the wall-clock column (seconds), which differs between runs.
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            [&f[..8], &f[9..]].concat().join(",")
        })
        .collect()
}

#[test]
fn run_directory_and_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    let out = tmp.path().join("run");
    let o = rgdiff(
        &[
            &[
                "ground-state",
                &file,
                "--iters",
                "12",
                "--out",
                out.to_str().unwrap(),
            ][..],
            &SMALL,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "config.json",
        "trace.csv",
        "summary.json",
        "checkpoint/model.safetensors",
        "checkpoint/adam.safetensors",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    assert_eq!(trace_rows(&out).len(), 12);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for k in [
        "energy",
        "energy_error",
        "variance",
        "v_score",
        "exact_energy",
        "relative_error",
        "seconds",
        "samples_per_second",
    ] {
        assert!(s.get(k).is_some(), "summary lacks {k}");
    }
    // ED of the 6-site chain is cheap, so the exact energy is there and consistent.
    let e = s["energy"].as_f64().unwrap();
    let x = s["exact_energy"].as_f64().unwrap();
    let r = s["relative_error"].as_f64().unwrap();
    assert!((r - (e - x) / x.abs()).abs() < 1e-12);
    assert!((x + 7.727406610312546).abs() < 1e-9, "exact {x}");
    // A second run into the same directory is refused.
    let o = rgdiff(&[
        "ground-state",
        &file,
        "--iters",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

/// Adam, SR with momentum (SPRING), whose last direction is part of the checkpoint, and the
/// causal network (its kind is part of the run's configuration).
#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    let sr: &[&str] = &["--optimizer", "sr", "--momentum", "0.9"];
    let causal: &[&str] = &CAUSAL_SR;
    let mut finals = Vec::new();
    for (name, opt) in [("adam", &[][..]), ("spring", sr), ("causal", causal)] {
        let full = tmp.path().join(format!("{name}-full"));
        let part = tmp.path().join(format!("{name}-part"));
        let go = |dir: &Path, extra: &[&str]| {
            let head = [
                "ground-state",
                &file,
                "--iters",
                "16",
                "--checkpoint-every",
                "5",
                "--out",
                dir.to_str().unwrap(),
            ];
            rgdiff(&[&head[..], &SMALL, opt, extra].concat())
        };
        let o = go(&full, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Stopped after 8 iterations (as if interrupted; the last checkpoint is at 8), resumed.
        assert!(go(&part, &["--stop-after", "8"]).status.success());
        assert_eq!(trace_rows(&part).len(), 8);
        if name == "spring" {
            assert!(part.join("checkpoint/sr_direction.safetensors").exists());
        }
        if name == "causal" {
            let config = std::fs::read_to_string(part.join("config.json")).unwrap();
            assert!(config.contains("\"network\": \"causal\""), "{config}");
        }
        let o = rgdiff(&["ground-state", "--resume", part.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(trace_rows(&full), trace_rows(&part), "{name}");
        let a = std::fs::read(full.join("checkpoint/model.safetensors")).unwrap();
        let b = std::fs::read(part.join("checkpoint/model.safetensors")).unwrap();
        assert_eq!(a, b, "{name}: parameters differ after resuming");
        finals.push(a);
    }
    assert_ne!(finals[0], finals[1]);
    // Momentum and the trust radius belong to SR, momentum must be below 1 and the radius
    // not negative; the network is masked or causal.
    for (bad, what) in [
        (&["--momentum", "0.5"][..], "--momentum"),
        (&["--optimizer", "sr", "--momentum", "1"], "--momentum"),
        (
            &["--max-step", "0.3"],
            "--max-step applies to --optimizer sr",
        ),
        (
            &["--optimizer", "sr", "--max-step=-1"],
            "expected a distance D >= 0",
        ),
        (&["--network", "dense"], "expected masked or causal"),
    ] {
        let o = rgdiff(&[&["ground-state", &file, "--iters", "1"][..], bad].concat());
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(what));
    }
    // The same checks apply to a resumed run's (edited) configuration.
    let part = tmp.path().join("adam-part");
    let config = std::fs::read_to_string(part.join("config.json")).unwrap();
    assert!(config.contains("\"temper\": 1.0"), "{config}");
    let edited = config.replace("\"temper\": 1.0", "\"temper\": 1.5");
    std::fs::write(part.join("config.json"), edited).unwrap();
    let o = rgdiff(&[
        "ground-state",
        "--resume",
        part.to_str().unwrap(),
        "--iters",
        "20",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--temper 1.5: expected 0 < BETA <= 1"),
        "{err}"
    );
}

#[test]
fn divergence_keeps_the_last_good_checkpoint() {
    use rgdiff::model::ModelConfig;
    use rgdiff::run::{prepare, Run, RunConfig};
    use rgdiff::vmc::VmcConfig;
    use std::sync::atomic::AtomicBool;

    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    let cfg = RunConfig {
        problem: file,
        scheme: "rg".into(),
        model: ModelConfig {
            width: 4,
            depth: 2,
            kernel: 3,
            ..ModelConfig::default()
        },
        vmc: VmcConfig {
            samples: 32,
            iters: 3,
            ..VmcConfig::default()
        },
        device: "cpu".into(),
        eval_samples: 32,
        checkpoint_every: 1,
        exact: false,
        final_symmetry: None,
    };
    let (_, h, exact, model) = prepare(&cfg).unwrap();
    let dir = tmp.path().join("nan");
    let mut run = Run::create(&dir, cfg, &h, model, exact).unwrap();
    let stop = AtomicBool::new(false);
    run.run(&stop, None, &mut ()).unwrap();
    // Poison the parameters: the next iteration's energy is NaN.
    let (_, var) = &run.vmc.model.params()[0];
    var.set(&(var.as_tensor() * f64::NAN).unwrap()).unwrap();
    run.cfg.vmc.iters = 6;
    run.vmc.cfg.iters = 6;
    let err = run.run(&stop, None, &mut ()).unwrap_err().to_string();
    assert!(
        err.contains("diverged") && err.contains("iteration 3"),
        "{err}"
    );
    let state = std::fs::read_to_string(dir.join("checkpoint/state.json")).unwrap();
    assert!(state.contains("\"iter\":3"), "{state}");
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(summary.contains("\"diverged\""));
}

/// `--sz 0` on a Heisenberg ring: a short autoregressive run whose samples all lie in the
/// sector reaches an energy no lower than the exact one; on the TFIM (no `S^z` conservation)
/// and with the `rg` schedule the option is refused with a clear message.
#[test]
fn sz_sector_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let heis = dir.path().join("heis6.toml");
    std::fs::write(
        &heis,
        "[lattice]\nshape = \"chain\"\nsize = [6]\n[model]\nkind = \"heisenberg\"\nJ = 1\n",
    )
    .unwrap();
    let heis = heis.display().to_string();
    let out_dir = dir.path().join("run");
    let out_s = out_dir.display().to_string();
    let mut args = vec![
        "ground-state",
        &heis[..],
        "--scheme",
        "autoregressive",
        "--phase",
        "marshall",
        "--sz",
        "0",
        "--iters",
        "40",
        "--out",
        &out_s[..],
    ];
    args.extend(SMALL);
    let out = rgdiff(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    let e = summary["energy"].as_f64().unwrap();
    let err = summary["energy_error"].as_f64().unwrap();
    let exact = summary["exact_energy"].as_f64().unwrap();
    assert!((exact - -2.802_775_637_731_995).abs() < 1e-9, "{exact}");
    assert!(e > exact - 3.0 * err - 1e-9, "{e} +- {err} below {exact}");
    assert!(e < 0.5 * exact, "{e} is not near the ground state {exact}");
    let tfim = problem(dir.path());
    for (file, scheme, what) in [
        (&tfim, "autoregressive", "does not conserve S^z"),
        (&heis, "rg", "one site per step"),
    ] {
        let out = rgdiff(&[
            "ground-state",
            file,
            "--scheme",
            scheme,
            "--sz",
            "0",
            "--iters",
            "1",
            "--out",
            dir.path().join(scheme).to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains(what), "{msg}");
    }
}

/// Chunks run in parallel on the CPU; the run does not depend on the threads: with
/// `--chunks 2`, one thread and two give the same trace and parameters bit for bit (Adam
/// and minSR), and one chunk (the default) a different run.
#[test]
fn a_seed_gives_the_same_run_on_any_number_of_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    let causal: &[&str] = &CAUSAL_SR;
    for (name, opt) in [("adam", &[][..]), ("sr", causal)] {
        let go = |threads: &str, extra: &[&str]| {
            let dir = tmp.path().join(format!("{name}-{threads}-{}", extra.len()));
            let head = [
                "ground-state",
                &file,
                "--iters",
                "6",
                "--out",
                dir.to_str().unwrap(),
            ];
            let o = Command::new(env!("CARGO_BIN_EXE_rgdiff"))
                .args([&head[..], &SMALL, opt, extra].concat())
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .expect("runs");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
            let params = std::fs::read(dir.join("checkpoint/model.safetensors")).unwrap();
            (trace_rows(&dir), params, config)
        };
        let one = go("1", &["--chunks", "2"]);
        let two = go("2", &["--chunks", "2"]);
        assert!(one.2.contains("\"chunks\": 2"), "{}", one.2);
        assert_eq!(
            one.0, two.0,
            "{name}: traces differ between 1 and 2 threads"
        );
        assert_eq!(
            one.1, two.1,
            "{name}: parameters differ between 1 and 2 threads"
        );
        let single = go("2", &[]);
        assert!(single.2.contains("\"chunks\": 1"), "{}", single.2);
        assert_ne!(one.0, single.0, "{name}: one chunk draws other samples");
    }
}
