//! The collapse check (`vmc::concentration`): the neighbourhood sum against enumeration, and
//! from the CLI a state that collapses onto the Néel configuration is reported as such while
//! a converging one is not.

mod common;

use candle_core::{DType, Device};
use num_complex::Complex64;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{MaskedDiffusion, ModelConfig, Phase};
use rgdiff::operator::{Connections, Hamiltonian, Model};
use rgdiff::rg::Schedule;
use rgdiff::vmc::concentration::{most_probable, neighbourhood_variance};
use rgdiff::vmc::local_energies;

use common::{all_configs, heisenberg_chain_file, read_summary, rgdiff};

/// `V_S` equals `sum_{s in S} p(s) |E_loc(s) - E|^2` over the enumerated neighbourhood and is
/// at most the exact variance `sum_s p(s) |E_loc(s) - <H>|^2`, for random networks on
/// Heisenberg, J1-J2 and TFIM chains of 6 sites.
#[test]
fn neighbourhood_sum_is_a_lower_bound_of_the_exact_variance() {
    let lat = Lattice::chain(6, Boundary::Periodic);
    let cases = [
        (Model::Heisenberg { j: 1.0 }, Phase::Marshall),
        (
            Model::J1J2 {
                j1: 1.0,
                j2: 0.5,
                delta: 1.0,
            },
            Phase::MarshallLearned,
        ),
        (
            Model::Tfim {
                j: 1.0,
                h: 0.5,
                g: 0.0,
            },
            Phase::None,
        ),
    ];
    for (seed, (m, phase)) in cases.into_iter().enumerate() {
        let cfg = ModelConfig {
            width: 6,
            depth: 2,
            kernel: 3,
            phase,
            ..ModelConfig::default()
        };
        let net = MaskedDiffusion::new(
            &lat,
            2,
            Schedule::rg(&lat),
            cfg,
            &Device::Cpu,
            DType::F64,
            seed as u64 + 3,
        )
        .unwrap();
        let hilbert = m.hilbert(&lat);
        let h = Hamiltonian::compile(hilbert, &m.terms(&lat));
        let op = h.as_operator();
        let dim = hilbert.dim().unwrap() as usize;
        let all = all_configs(hilbert);
        let lpsi = net.log_psi(&all).unwrap();
        let eloc = local_energies(op, &all, 6, &lpsi, &|c, _| net.log_psi(c)).unwrap();
        let p: Vec<f64> = lpsi.iter().map(|l| (2.0 * l.re).exp()).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-10);
        let energy: f64 = p.iter().zip(&eloc).map(|(p, e)| p * e.re).sum();
        let term = |i: usize| p[i] * (eloc[i] - Complex64::new(energy, 0.0)).norm_sqr();
        let variance: f64 = (0..dim).map(term).sum();
        // The most probable configuration and its neighbourhood, enumerated here.
        let logp: Vec<f64> = p.iter().map(|p| p.ln()).collect();
        let (i0, p0) = most_probable(&logp).unwrap();
        assert!((p0 - p[i0]).abs() < 1e-12);
        let s0 = &all[i0 * 6..(i0 + 1) * 6];
        let mut c = Connections::new();
        op.connected(s0, &mut c);
        let mut set = vec![i0];
        for k in 0..c.len() {
            let j = hilbert.index_of(c.config(k)) as usize;
            if !set.contains(&j) {
                set.push(j);
            }
        }
        let want: f64 = set.iter().map(|&i| term(i)).sum();
        let (got, size) = neighbourhood_variance(&net, op, s0, energy).unwrap();
        assert_eq!(size, set.len(), "{m:?}");
        assert!(
            (got - want).abs() < 1e-9 * want.max(1.0),
            "{m:?}: {got} vs {want}"
        );
        assert!(got <= variance + 1e-12, "{m:?}: {got} > {variance}");
        assert!(got > 0.0, "{m:?}");
    }
}

/// Without Marshall's sign the Heisenberg chain's best positive state is (close to) the Néel
/// configuration: Adam collapses onto it within a few dozen iterations, the samples' variance
/// drops to rounding and the run must say that this is a collapse, not convergence. With the
/// default phase (`auto`, Marshall's sign here) the same run does not collapse.
#[test]
fn cli_reports_a_collapse_onto_one_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = heisenberg_chain_file(dir.path(), 8);
    let small = [
        "--samples",
        "128",
        "--width",
        "4",
        "--depth",
        "2",
        "--kernel",
        "3",
        "--lr",
        "0.05",
        "--iters",
        "80",
    ];
    let run = |phase: &str, name: &str| {
        let out_dir = dir.path().join(name);
        let out = rgdiff(
            &[
                &["ground-state", file.as_str()][..],
                &small,
                &["--phase", phase, "--out", out_dir.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out, read_summary(&out_dir))
    };
    let (out, summary) = run("none", "none");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("phase none"), "{stderr}");
    assert!(stderr.contains("warning: iteration"), "{stderr}");
    assert!(stdout.contains("warning          collapsed"), "{stdout}");
    let warnings = summary["warnings"].as_array().unwrap();
    assert!(warnings[0].as_str().unwrap().starts_with("collapsed"));
    assert!(summary["p_max"].as_f64().unwrap() > 0.99);
    // The energy is the Néel configuration's diagonal energy, -N/4 = -2, far above E0.
    assert!((summary["energy"].as_f64().unwrap() + 2.0).abs() < 0.05);

    let (out, summary) = run("auto", "auto");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("phase marshall"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(summary.get("warnings").is_none(), "{summary}");
    assert!(summary["p_max"].as_f64().unwrap() < 0.5);
    assert!(summary["relative_error"].as_f64().unwrap() < 0.1);
}
