//! `mpirun -n K rgdiff ...` end to end (feature `mpi`; needs OpenMPI's `mpirun`): the same
//! seed and chunks give the same energies, parameters and samples on 1 and 2 ranks, a run
//! resumes on another number of ranks, and a rank that dies or fails ends the whole job
//! within a timeout instead of leaving the others waiting.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a test job may run before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(120);

/// `mpirun -n ranks rgdiff args`, local only (shared memory between ranks, loopback for the
/// runtime), allowed as root (CI), with `extra_env`; killed and failed after [`TIMEOUT`].
fn mpirun(ranks: usize, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let n = ranks.to_string();
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--oversubscribe",
        "--allow-run-as-root",
        "--mca",
        "btl",
        "self,vader",
        "--mca",
        "oob_tcp_if_include",
        "lo",
        "-n",
        &n,
        env!("CARGO_BIN_EXE_rgdiff"),
    ])
    .args(args)
    .env("RUST_BACKTRACE", "0")
    .env("RAYON_NUM_THREADS", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("mpirun (OpenMPI) is installed: apt-get install openmpi-bin libopenmpi-dev");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("waits").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "mpirun -n {ranks} {args:?} hung for {TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn problem(dir: &Path) -> String {
    let p = dir.join("tfim8.toml");
    std::fs::write(
        &p,
        "[lattice]\nshape = \"chain\"\nsize = [8]\n[model]\nkind = \"tfim\"\nJ = 1\nh = 1\n",
    )
    .unwrap();
    p.display().to_string()
}

/// `(iter, energy, error, variance)` of every trace row.
fn trace(dir: &Path) -> Vec<[f64; 4]> {
    std::fs::read_to_string(dir.join("trace.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').take(4).map(|v| v.parse().unwrap()).collect();
            [f[0], f[1], f[2], f[3]]
        })
        .collect()
}

/// Every parameter of the run's checkpoint, by name, flattened.
fn params(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let map = candle_core::safetensors::load(
        dir.join("checkpoint/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut v: Vec<(String, Vec<f32>)> = map
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ta, tb) = (trace(a), trace(b));
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        for k in 0..4 {
            assert!(
                (x[k] - y[k]).abs() <= 1e-9 * x[k].abs().max(1.0),
                "trace differs at iteration {}: {x:?} vs {y:?}",
                x[0]
            );
        }
    }
    let (pa, pb) = (params(a), params(b));
    assert_eq!(pa.len(), pb.len());
    let mut n = 0;
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{na}: {x} vs {y}");
            n += 1;
        }
    }
    assert!(n > 100, "compared {n} parameters");
}

const GS: [&str; 10] = [
    "--samples",
    "96",
    "--width",
    "4",
    "--depth",
    "1",
    "--kernel",
    "3",
    "--chunks",
    "3",
];

/// Adam (12 iterations, past the parameter check at 10) and minSR with a learned phase: the
/// same trace and parameters on 1 and 2 ranks (3 chunks, so the ranks hold unequal shares),
/// and a run interrupted on 2 ranks and resumed on 1 ends where the uninterrupted one does.
#[test]
fn ground_state_is_the_same_on_one_and_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    for (name, extra) in [
        ("adam", &["--iters", "12"][..]),
        (
            "sr",
            &["--iters", "6", "--optimizer", "sr", "--phase", "learned"][..],
        ),
    ] {
        let mut dirs = Vec::new();
        for ranks in [1, 2] {
            let out = tmp.path().join(format!("{name}-{ranks}"));
            let o = mpirun(
                ranks,
                &[
                    &["ground-state", &file, "--out", out.to_str().unwrap()][..],
                    &GS,
                    extra,
                ]
                .concat(),
                &[],
            );
            ok(&o);
            dirs.push(out);
        }
        assert_same_run(&dirs[0], &dirs[1]);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dirs[1].join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["ranks"], 2);
        let comm = summary["comm_seconds_per_iteration"].as_f64().unwrap();
        let wait = summary["wait_seconds_per_iteration"].as_f64().unwrap();
        assert!(
            comm > 0.0 && (0.0..=comm).contains(&wait),
            "communication {comm} s, of which waiting {wait} s"
        );
    }
    // Interrupted after 5 iterations on 2 ranks, resumed on 1.
    let out = tmp.path().join("resumed");
    let o = mpirun(
        2,
        &[
            &["ground-state", &file, "--out", out.to_str().unwrap()][..],
            &GS,
            &[
                "--iters",
                "12",
                "--stop-after",
                "5",
                "--checkpoint-every",
                "100",
            ],
        ]
        .concat(),
        &[],
    );
    ok(&o);
    assert_eq!(trace(&out).len(), 5);
    let o = mpirun(1, &["ground-state", "--resume", out.to_str().unwrap()], &[]);
    ok(&o);
    assert_same_run(&tmp.path().join("adam-1"), &out);
}

/// Metropolis and model-proposal chains on a 4x4 Ising torus (exact by enumeration): 2 ranks
/// give exactly what 1 rank gives with the same 2 chains (samples and estimates), and the
/// merged estimates agree with the exact values.
#[test]
fn sample_is_the_same_on_one_and_two_ranks_and_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ising4.toml");
    std::fs::write(
        &file,
        "[lattice]\nshape = \"square\"\nsize = [4, 4]\nboundary = \"periodic\"\n\
         [model]\nkind = \"ising\"\nbeta = 0.4\nJ = 1.0\nh = 0.0\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for (name, extra) in [
        (
            "metropolis",
            &["--method", "metropolis", "--samples", "20000"][..],
        ),
        (
            "model",
            &[
                "--method",
                "model",
                "--samples",
                "6000",
                "--train-iters",
                "30",
                "--train-samples",
                "64",
                "--width",
                "4",
                "--depth",
                "1",
            ][..],
        ),
    ] {
        let mut reports = Vec::new();
        let mut dirs = Vec::new();
        for ranks in [1, 2] {
            let out = tmp.path().join(format!("{name}-{ranks}"));
            let o = mpirun(
                ranks,
                &[
                    &["sample", file, "--json", "--chains", "2"][..],
                    &["--out", out.to_str().unwrap()],
                    extra,
                ]
                .concat(),
                &[],
            );
            ok(&o);
            let rep: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
            reports.push(rep);
            dirs.push(out);
        }
        assert_eq!(
            std::fs::read(dirs[0].join("samples.npy")).unwrap(),
            std::fs::read(dirs[1].join("samples.npy")).unwrap(),
            "{name}: the chains differ between 1 and 2 ranks"
        );
        let rep = &reports[1];
        assert_eq!(rep["chains"], 2);
        // The chain's estimates and, for the model, every rank's proposals gathered in
        // chain order and reweighted.
        let mut sections = vec![("chain", &reports[0], rep)];
        if name == "model" {
            assert_eq!(rep["reweighted"]["samples"], rep["samples"]);
            sections.push(("reweighted", &reports[0]["reweighted"], &rep["reweighted"]));
        }
        for (what, one, two) in sections {
            for key in ["energy_density", "abs_magnetization", "susceptibility"] {
                assert_eq!(
                    one[key], two[key],
                    "{name}: {what} {key} differs between 1 and 2 ranks"
                );
                let (mean, err) = (
                    two[key]["mean"].as_f64().unwrap(),
                    two[key]["error"].as_f64().unwrap(),
                );
                let exact = rep["exact"][key].as_f64().unwrap();
                assert!(
                    err > 0.0 && (mean - exact).abs() < 4.0 * err,
                    "{name}: {what} {key} = {mean} +- {err}, exact {exact}"
                );
            }
        }
        let tau = rep["tau_int"]["mean"].as_f64().unwrap();
        assert!(tau >= 0.5 && tau.is_finite(), "{name}: tau_int {tau}");
    }
}

/// A rank that panics (test hook) and a rank that fails with an error (rank 0 refusing an
/// occupied run directory while rank 1 waits in the first collective) both end the job with
/// a non-zero status well within the timeout.
#[test]
fn a_failing_rank_ends_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let file = problem(tmp.path());
    let out = tmp.path().join("dies");
    let t0 = Instant::now();
    let o = mpirun(
        2,
        &[
            &["ground-state", &file, "--out", out.to_str().unwrap()][..],
            &GS,
            &["--iters", "200"],
        ]
        .concat(),
        &[
            ("RGDIFF_TEST_PANIC_RANK", "1"),
            ("RGDIFF_TEST_PANIC_ITER", "2"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the job survived a dead rank: {err}");
    assert!(err.contains("injected failure on rank 1"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());

    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("config.json"), "{}").unwrap();
    let o = mpirun(
        2,
        &[
            &["ground-state", &file, "--out", busy.to_str().unwrap()][..],
            &GS,
            &["--iters", "5"],
        ]
        .concat(),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("already holds a run"), "{err}");
}
