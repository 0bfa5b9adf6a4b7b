//! Symmetrized wavefunctions (`--symmetry`, `--final-symmetry`): `p_G` normalised and
//! invariant by enumeration, exact samples of it (chi-square), the mean local energy equal to
//! the Rayleigh quotient, the per-sample gradients equal to autograd's, and the CLI.

mod common;

use candle_core::{DType, Device};
use common::{all_configs, flat_grad, heisenberg_chain_file, read_summary, rgdiff};
use num_complex::Complex64;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::hilbert::{Hilbert, LocalSpace};
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{MaskedDiffusion, ModelConfig, Network, Phase, SymmetryGroup};
use rgdiff::operator::{Hamiltonian, Model};
use rgdiff::rg::Schedule;
use rgdiff::vmc::local_energies;

/// Index of a spin-1/2 configuration in [`all_configs`] order (site `x` is bit `x`).
fn index(s: &[u8]) -> usize {
    s.iter()
        .enumerate()
        .fold(0, |a, (x, &v)| a | ((v as usize) << x))
}

/// A small model with `group`, causal autoregressive or masked RG.
fn net(lat: &Lattice, phase: Phase, network: Network, group: &str, seed: u64) -> MaskedDiffusion {
    let cfg = ModelConfig {
        width: 6,
        depth: 2,
        kernel: 3,
        phase,
        network,
        symmetry: Some(group.into()),
        ..ModelConfig::default()
    };
    let sched = match network {
        Network::Causal => Schedule::autoregressive(lat),
        Network::Masked => Schedule::rg(lat),
    };
    MaskedDiffusion::new(lat, 2, sched, cfg, &Device::Cpu, DType::F64, seed).unwrap()
}

fn cases() -> Vec<(Lattice, Network, &'static str)> {
    vec![
        (
            Lattice::chain(6, Boundary::Periodic),
            Network::Causal,
            "translation,point,flip",
        ),
        (
            Lattice::square(2, 3, Boundary::Periodic),
            Network::Masked,
            "point,flip",
        ),
        (
            Lattice::square(3, 3, Boundary::Open),
            Network::Causal,
            "point",
        ),
    ]
}

#[test]
fn symmetric_probabilities_sum_to_one_and_are_invariant() {
    for (lat, network, group) in cases() {
        let n = lat.n_sites();
        let m = net(&lat, Phase::Learned, network, group, 3);
        let all = all_configs(Hilbert::new(n, LocalSpace::Spin));
        let lpsi = m.log_psi(&all).unwrap();
        let z: f64 = lpsi.iter().map(|l| (2.0 * l.re).exp()).sum();
        assert!((z - 1.0).abs() < 1e-10, "{group}: sum p_G = {z}");
        // log_prob (the differentiable form) agrees with log_psi.
        let lp: Vec<f64> = m.log_prob(&all).unwrap().to_vec1().unwrap();
        for (a, b) in lp.iter().zip(&lpsi) {
            assert!((a - 2.0 * b.re).abs() < 1e-10);
        }
        // p_G and the learned phase are the same on every image.
        let g = SymmetryGroup::parse(group, &lat, 2, None).unwrap().unwrap();
        let images = g.images(&all, n);
        let li = m.log_psi(&images).unwrap();
        let dim = all.len() / n;
        for k in 0..g.order() {
            for i in 0..dim {
                let d = li[k * dim + i] - lpsi[i];
                assert!(
                    d.re.abs() < 1e-10 && d.im.abs() < 1e-10,
                    "{group}: element {k}"
                );
            }
        }
        // The plain network is not symmetric (else the test would prove nothing).
        let mut plain = net(&lat, Phase::Learned, network, group, 3);
        plain.set_symmetry(None);
        let lp0 = plain.log_psi(&all).unwrap();
        let lp0i = plain.log_psi(&images).unwrap();
        let worst = (0..dim)
            .map(|i| (lp0i[dim + i].re - lp0[i].re).abs())
            .fold(0.0, f64::max);
        assert!(
            worst > 1e-3,
            "{group}: the plain network is already symmetric"
        );
    }
}

#[test]
fn symmetric_samples_follow_p_g() {
    for (lat, network, group) in cases() {
        let n = lat.n_sites();
        let m = net(&lat, Phase::None, network, group, 7);
        let all = all_configs(Hilbert::new(n, LocalSpace::Spin));
        let p: Vec<f64> = m
            .log_psi(&all)
            .unwrap()
            .iter()
            .map(|l| (2.0 * l.re).exp())
            .collect();
        let b = 40_000;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let sampled = m.sample_tempered(b, 1.0, &mut rng).unwrap();
        let mut counts = vec![0usize; p.len()];
        for (c, lp) in sampled.configs.chunks(n).zip(&sampled.log_p) {
            let i = index(c);
            counts[i] += 1;
            assert!((lp - p[i].ln()).abs() < 1e-10, "{group}: recorded log p_G");
        }
        // Pearson chi-square over bins expecting at least 5 draws, the rest pooled.
        let (mut chi2, mut dof, mut rest_c, mut rest_p) = (0.0, 0usize, 0usize, 0.0);
        for (&c, &q) in counts.iter().zip(&p) {
            let e = b as f64 * q;
            if e >= 5.0 {
                chi2 += (c as f64 - e).powi(2) / e;
                dof += 1;
            } else {
                rest_c += c;
                rest_p += q;
            }
        }
        if rest_p * b as f64 >= 5.0 {
            let e = b as f64 * rest_p;
            chi2 += (rest_c as f64 - e).powi(2) / e;
            dof += 1;
        }
        let dof = (dof - 1) as f64;
        // About 5 standard deviations above the mean of a chi-square with `dof` degrees.
        assert!(
            chi2 < dof + 5.0 * (2.0 * dof).sqrt(),
            "{group}: chi-square {chi2:.1} with {dof} degrees of freedom"
        );
        assert!(
            m.sample_tempered(8, 0.5, &mut rng).is_err(),
            "tempering is refused"
        );
    }
}

#[test]
fn symmetric_local_energy_mean_is_the_rayleigh_quotient() {
    let lat = Lattice::square(2, 3, Boundary::Periodic);
    let m = Model::J1J2 {
        j1: 1.0,
        j2: 0.5,
        delta: 1.0,
    };
    let h = Hamiltonian::compile(m.hilbert(&lat), &m.terms(&lat));
    let op = h.as_operator();
    let n = lat.n_sites();
    for network in [Network::Causal, Network::Masked] {
        let net = net(&lat, Phase::MarshallLearned, network, "point,flip", 5);
        let all = all_configs(Hilbert::new(n, LocalSpace::Spin));
        let lpsi = net.log_psi(&all).unwrap();
        let eloc = local_energies(op, &all, n, &lpsi, &|c, _| net.log_psi(c)).unwrap();
        let mean: Complex64 = eloc
            .iter()
            .zip(&lpsi)
            .map(|(e, l)| e * (2.0 * l.re).exp())
            .sum();
        let rq = common::rayleigh_quotient(op, &lpsi);
        assert!((mean - rq).norm() < 1e-9, "{network:?}: {mean} vs {rq}");
    }
}

#[test]
fn symmetric_jacobians_are_the_gradients() {
    for (lat, network, group) in cases() {
        let n = lat.n_sites();
        let m = net(&lat, Phase::Learned, network, group, 9);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let s = m.sample_tempered(3, 1.0, &mut rng).unwrap().configs;
        let jl: Vec<Vec<f64>> = m.log_prob_jacobian(&s).unwrap().to_vec2().unwrap();
        let jp: Vec<Vec<f64>> = m.phase_jacobian(&s).unwrap().unwrap().to_vec2().unwrap();
        // The combined call (minSR's) gives the same two blocks.
        let (bl, bp) = m.jacobians(&s).unwrap();
        assert_eq!(bl.to_vec2::<f64>().unwrap(), jl);
        assert_eq!(bp.unwrap().to_vec2::<f64>().unwrap(), jp);
        for (i, c) in s.chunks(n).enumerate() {
            let gl = flat_grad(&m, &m.log_prob(c).unwrap().sum_all().unwrap());
            let gp = flat_grad(&m, &m.learned_phase(c).unwrap().unwrap().sum_all().unwrap());
            for (a, b) in jl[i].iter().zip(&gl).chain(jp[i].iter().zip(&gp)) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                    "{group}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn cli_symmetry_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = heisenberg_chain_file(dir.path(), 6);
    let small = [
        "--samples",
        "64",
        "--width",
        "4",
        "--depth",
        "2",
        "--kernel",
        "3",
        "--iters",
        "6",
        "--scheme",
        "autoregressive",
        "--network",
        "causal",
        "--phase",
        "marshall",
        "--optimizer",
        "sr",
    ];
    let out_dir = dir.path().join("final");
    let out = rgdiff(
        &[
            &["ground-state", file.as_str()][..],
            &small,
            &[
                "--final-symmetry",
                "translation,point,flip",
                "--out",
                out_dir.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_summary(&out_dir);
    assert_eq!(summary["symmetry"], "translation,point,flip");
    let (e, t, e0) = (
        summary["energy"].as_f64().unwrap(),
        summary["trained_energy"].as_f64().unwrap(),
        summary["exact_energy"].as_f64().unwrap(),
    );
    assert!(e != t && e >= e0 - 5.0 * summary["energy_error"].as_f64().unwrap());
    // Trained with the group: the summary names it, no separate trained energy.
    let sym_dir = dir.path().join("sym");
    let out = rgdiff(
        &[
            &["ground-state", file.as_str()][..],
            &small,
            &["--symmetry", "flip", "--out", sym_dir.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_summary(&sym_dir);
    assert_eq!(summary["symmetry"], "flip");
    assert!(summary.get("trained_energy").is_none());
    // Bad groups fail at once with a message naming the option.
    for (args, msg) in [
        (vec!["--symmetry", "rotation"], "unknown part `rotation`"),
        (vec!["--final-symmetry", "flip", "--sz", "1"], "S^z = 1"),
        (
            vec!["--symmetry", "flip", "--temper", "0.5"],
            "--temper 0.5 with --symmetry",
        ),
    ] {
        let out = rgdiff(&[&["ground-state", file.as_str()][..], &small, &args].concat());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}
