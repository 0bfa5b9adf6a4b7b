//! The RG masked-diffusion model: exact normalisation by enumeration, exact sampling
//! (chi-square against p), gradients reaching every parameter, and checkpoint round trips.

mod common;

use candle_core::{DType, Device};
use common::flat_grad;
use num_complex::Complex64;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::hilbert::Hilbert;
use rgdiff::hilbert::LocalSpace;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{Dilation, MaskedDiffusion, ModelConfig, Network, Phase};
use rgdiff::rg::Schedule;

fn model(lat: &Lattice, d: usize, scheme: &str, phase: Phase, dtype: DType) -> MaskedDiffusion {
    model_with(lat, d, scheme, phase, dtype, Network::Masked)
}

fn model_with(
    lat: &Lattice,
    d: usize,
    scheme: &str,
    phase: Phase,
    dtype: DType,
    network: Network,
) -> MaskedDiffusion {
    model_dilated(lat, d, scheme, phase, dtype, network, Dilation::None)
}

fn model_dilated(
    lat: &Lattice,
    d: usize,
    scheme: &str,
    phase: Phase,
    dtype: DType,
    network: Network,
    dilation: Dilation,
) -> MaskedDiffusion {
    let cfg = ModelConfig {
        width: 6,
        depth: 2,
        kernel: 3,
        phase,
        sz: None,
        network,
        symmetry: None,
        dilation,
        pin_first: false,
    };
    let sched = Schedule::parse(scheme, lat).unwrap();
    MaskedDiffusion::new(lat, d, sched, cfg, &Device::Cpu, dtype, 7).unwrap()
}

/// Every schedule with each network.
fn schemes_and_networks() -> Vec<(&'static str, Network)> {
    let mut out = Vec::new();
    for network in [Network::Masked, Network::Causal] {
        for scheme in ["rg", "rg-colors=2", "autoregressive"] {
            out.push((scheme, network));
        }
    }
    out
}

/// `p` of every configuration of `all` (row-major), in `f64`.
fn probabilities(m: &MaskedDiffusion, all: &[u8]) -> Vec<f64> {
    m.log_prob(all)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|l| l.exp())
        .collect()
}

/// Index of a spin-1/2 configuration in [`all_configs`] order (site `x` is bit `x`).
fn config_index(s: &[u8]) -> usize {
    s.iter()
        .enumerate()
        .fold(0, |a, (x, &v)| a | ((v as usize) << x))
}

/// Pearson chi-square of `counts` from `b` draws against the probabilities `p`.
fn chi_square(counts: &[usize], p: &[f64], b: usize) -> f64 {
    counts
        .iter()
        .zip(p)
        .map(|(&c, &p)| {
            let e = b as f64 * p;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

/// Every configuration of the space, row-major.
fn all_configs(n: usize, d: usize) -> Vec<u8> {
    let h = Hilbert::new(
        n,
        if d == 2 {
            LocalSpace::Spin
        } else {
            LocalSpace::Oscillator {
                cutoff: d,
                omega: 1.0,
            }
        },
    );
    let dim = h.dim().unwrap();
    let mut out = vec![0u8; dim as usize * n];
    for i in 0..dim {
        h.config_of(i, &mut out[i as usize * n..(i as usize + 1) * n]);
    }
    out
}

/// `p` summed over every configuration `all` is 1 (to 1e-10, in `f64`), and `p` is not the
/// trivial uniform distribution.
#[track_caller]
fn assert_normalised(m: &MaskedDiffusion, all: &[u8], what: &str) {
    let lp: Vec<f64> = m.log_prob(all).unwrap().to_vec1().unwrap();
    let total: f64 = lp.iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-10, "{what}: sum p = {total}");
    let max = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = lp.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(max - min > 0.1, "{what}: distribution is flat");
}

/// Both networks: for the causal one this also checks that no conditional reads a site of
/// its own or a later step (any leak would break the normalisation).
#[test]
fn probabilities_sum_to_one_for_every_schedule() {
    let cases = [
        (Lattice::chain(8, Boundary::Periodic), 2),
        (Lattice::square(2, 4, Boundary::Periodic), 2),
        (Lattice::square(3, 3, Boundary::Periodic), 2),
        (Lattice::chain(4, Boundary::Periodic), 3),
    ];
    for (lat, d) in cases {
        let all = all_configs(lat.n_sites(), d);
        for (scheme, network) in schemes_and_networks() {
            let m = model_with(&lat, d, scheme, Phase::None, DType::F64, network);
            let what = format!("{scheme} {network:?} on {:?}", lat.extent());
            assert_normalised(&m, &all, &what);
        }
    }
}

/// Dilated networks ([`Dilation`]): the taps' spacing per layer and site (`2^l`; `2^level`,
/// capped where the periodic taps would wrap), and for both networks and every schedule an
/// exactly normalised `p` by enumeration (a causal network whose dilated taps read a site of
/// its own or a later step would not be), samples whose `log p` is the teacher-forced one,
/// and exact sampling (chi-square) for the level-dilated causal network on a chain of 8.
#[test]
fn dilated_networks_are_normalised_and_sampled_exactly() {
    use rgdiff::model::dilations;
    let cfg = |dilation, kernel| ModelConfig {
        depth: 4,
        kernel,
        dilation,
        ..ModelConfig::default()
    };
    let sq = Lattice::square(16, 16, Boundary::Periodic);
    let at = |x, y| sq.index(x, y);
    let lv = dilations(&cfg(Dilation::Levels, 3), &sq);
    assert_eq!(lv.len(), 4);
    for (x, y, d) in [
        (1, 0, 1),
        (2, 6, 2),
        (4, 12, 4),
        (8, 8, 8),
        (0, 0, 8),
        (0, 8, 8),
    ] {
        assert!(
            lv.iter().all(|l| l[at(x, y)] == d),
            "({x}, {y}): {}",
            lv[0][at(x, y)]
        );
    }
    let lay = dilations(&cfg(Dilation::Layers, 3), &sq);
    assert!(lay
        .iter()
        .zip([1, 2, 4, 8])
        .all(|(l, d)| l.iter().all(|&v| v == d)));
    // Kernel 5 reaches 2 D: capped at D = 4 on 16 sites.
    let lay5 = dilations(&cfg(Dilation::Layers, 5), &sq);
    assert!(lay5
        .iter()
        .zip([1, 2, 4, 4])
        .all(|(l, d)| l.iter().all(|&v| v == d)));
    assert!(dilations(&cfg(Dilation::None, 3), &sq)
        .iter()
        .flatten()
        .all(|&v| v == 1));
    let chain = Lattice::chain(8, Boundary::Periodic);
    assert_eq!(
        dilations(&cfg(Dilation::Levels, 3), &chain)[0],
        [4, 1, 2, 1, 4, 1, 2, 1]
    );

    // A chain of 12 is not a power of two (levels by 2-adic valuation, capped at 4).
    let cases = [
        (Lattice::chain(8, Boundary::Periodic), 2),
        (Lattice::chain(12, Boundary::Periodic), 2),
        (Lattice::square(2, 4, Boundary::Periodic), 2),
    ];
    for (lat, d) in cases {
        let all = all_configs(lat.n_sites(), d);
        for (scheme, network) in schemes_and_networks() {
            for dilation in [Dilation::Layers, Dilation::Levels] {
                let m = model_dilated(&lat, d, scheme, Phase::None, DType::F64, network, dilation);
                assert!(!m.dense_convolutions());
                let what = format!("{scheme} {network:?} {dilation:?} on {:?}", lat.extent());
                assert_normalised(&m, &all, &what);
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
                let (s, logp) = m.sample(16, &mut rng).unwrap();
                let want: Vec<f64> = m.log_prob(&s).unwrap().to_vec1().unwrap();
                for (a, b) in logp.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-9, "{scheme} {network:?} {dilation:?}");
                }
            }
        }
    }

    let m = model_dilated(
        &chain,
        2,
        "rg",
        Phase::None,
        DType::F32,
        Network::Causal,
        Dilation::Levels,
    );
    let p = probabilities(&m, &all_configs(8, 2));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let b = 60_000;
    let (s, _) = m.sample(b, &mut rng).unwrap();
    let mut counts = vec![0usize; 256];
    for row in s.chunks(8) {
        counts[config_index(row)] += 1;
    }
    // Pearson chi-square with 255 degrees of freedom: the 99.9% quantile is 330.5.
    let chi2 = chi_square(&counts, &p, b);
    assert!(chi2 < 330.5, "chi2 = {chi2}");
}

#[test]
fn samples_follow_p() {
    let lat = Lattice::chain(4, Boundary::Periodic);
    for (scheme, network) in [
        ("rg", Network::Masked),
        ("autoregressive", Network::Masked),
        ("autoregressive", Network::Causal),
    ] {
        let m = model_with(&lat, 2, scheme, Phase::None, DType::F32, network);
        let p = probabilities(&m, &all_configs(4, 2));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let b = 40_000;
        let (s, logp) = m.sample(b, &mut rng).unwrap();
        let mut counts = [0usize; 16];
        for i in 0..b {
            let idx = config_index(&s[i * 4..(i + 1) * 4]);
            counts[idx] += 1;
            assert!((logp[i] - p[idx].ln()).abs() < 1e-4, "sample log p");
        }
        // Pearson chi-square with 15 degrees of freedom: the 99.9% quantile is 37.7.
        let chi2 = chi_square(&counts, &p, b);
        assert!(chi2 < 37.7, "{scheme} {network:?}: chi2 = {chi2}");
    }
}

/// The tempered proposal (`beta = 0.5`): samples follow `q` (chi-square), `q` sums to 1 over
/// the space and is broader than `p` (larger entropy), `log q` is a function of the
/// configuration, the `log p` returned equals `log_prob`, and `beta = 1` gives exactly the
/// samples of `sample_with_conditionals`.
#[test]
fn tempered_samples_follow_q() {
    let lat = Lattice::chain(4, Boundary::Periodic);
    for network in [Network::Masked, Network::Causal] {
        let m = model_with(&lat, 2, "autoregressive", Phase::None, DType::F64, network);
        let p = probabilities(&m, &all_configs(4, 2));
        let b = 40_000;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let t = m.sample_tempered(b, 0.5, &mut rng).unwrap();
        let mut counts = [0usize; 16];
        let mut q = [f64::NAN; 16];
        for i in 0..b {
            let idx = config_index(&t.configs[i * 4..(i + 1) * 4]);
            counts[idx] += 1;
            assert!(
                (t.log_p[i] - p[idx].ln()).abs() < 1e-10,
                "{network:?}: log p"
            );
            if q[idx].is_nan() {
                q[idx] = t.log_q[i].exp();
            }
            assert!((t.log_q[i].exp() - q[idx]).abs() < 1e-12, "log q varies");
        }
        assert!(q.iter().all(|v| v.is_finite()), "every configuration drawn");
        assert!(
            (q.iter().sum::<f64>() - 1.0).abs() < 1e-10,
            "sum q = {}",
            q.iter().sum::<f64>()
        );
        let entropy = |d: &[f64]| -d.iter().map(|v| v * v.ln()).sum::<f64>();
        assert!(entropy(&q) > entropy(&p) + 0.05, "q is not broader than p");
        // Pearson chi-square with 15 degrees of freedom: the 99.9% quantile is 37.7.
        let chi2 = chi_square(&counts, &q, b);
        assert!(chi2 < 37.7, "{network:?}: chi2 = {chi2}");
        let mut r1 = Xoshiro256PlusPlus::seed_from_u64(8);
        let mut r2 = Xoshiro256PlusPlus::seed_from_u64(8);
        let exact = m.sample_with_conditionals(50, &mut r1).unwrap();
        let one = m.sample_tempered(50, 1.0, &mut r2).unwrap();
        assert_eq!(exact.configs, one.configs);
        assert_eq!(one.log_p, one.log_q);
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    for (scheme, network) in [("rg", Network::Masked), ("autoregressive", Network::Causal)] {
        every_parameter_gets_a_gradient_with(&lat, scheme, network);
    }
}

fn every_parameter_gets_a_gradient_with(lat: &Lattice, scheme: &str, network: Network) {
    let m = model_with(lat, 2, scheme, Phase::Learned, DType::F32, network);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let (s, _) = m.sample(8, &mut rng).unwrap();
    let loss = (m.log_prob(&s).unwrap().sum_all().unwrap()
        + m.learned_phase(&s).unwrap().unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in m.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{network:?}: {name} has no gradient"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{network:?}: {name} has a zero gradient");
    }
}

#[test]
fn marshall_sign_and_checkpoint_round_trip() {
    let lat = Lattice::chain(6, Boundary::Periodic);
    let m = model(&lat, 2, "rg", Phase::Marshall, DType::F32);
    // One down spin on sublattice A (even sites) flips the sign.
    assert_eq!(m.fixed_phase(&[1, 0, 0, 0, 0, 0]), std::f64::consts::PI);
    assert_eq!(m.fixed_phase(&[0, 1, 0, 0, 0, 0]), 0.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    m.save(&path).unwrap();
    let mut other = MaskedDiffusion::new(
        &lat,
        2,
        Schedule::rg(&lat),
        m.config().clone(),
        &Device::Cpu,
        DType::F32,
        99,
    )
    .unwrap();
    let s = all_configs(6, 2);
    let before: Vec<f32> = other.log_prob(&s).unwrap().to_vec1().unwrap();
    other.load(&path).unwrap();
    let a: Vec<f32> = m.log_prob(&s).unwrap().to_vec1().unwrap();
    let b: Vec<f32> = other.log_prob(&s).unwrap().to_vec1().unwrap();
    assert_eq!(a, b, "loaded model differs");
    assert_ne!(before, b);
}

/// `log_psi_connected` (reusing the sample's conditionals, evaluating only the steps after the
/// first changed site) equals the full evaluation, for one- and two-site changes, every
/// schedule, every phase, and a d = 3 space.
#[test]
fn connected_log_psi_equals_full_evaluation() {
    let cases = [
        (Lattice::chain(8, Boundary::Periodic), 2),
        (Lattice::square(3, 3, Boundary::Periodic), 2),
        (Lattice::chain(4, Boundary::Periodic), 3),
    ];
    for (lat, d) in cases {
        let n = lat.n_sites();
        for (scheme, network) in schemes_and_networks() {
            for phase in [Phase::None, Phase::Marshall, Phase::Learned] {
                let m = model_with(&lat, d, scheme, phase, DType::F64, network);
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
                let sampled = m.sample_with_conditionals(5, &mut rng).unwrap();
                let mut conn = Vec::new();
                let mut parents = Vec::new();
                for i in 0..5 {
                    let s = &sampled.configs[i * n..(i + 1) * n];
                    for x in 0..n {
                        // One site changed, two sites changed, and the sample itself.
                        let mut c = s.to_vec();
                        c[x] = ((c[x] as usize + 1) % d) as u8;
                        conn.extend_from_slice(&c);
                        parents.push(i);
                        c[(x + 3) % n] = ((c[(x + 3) % n] as usize + d - 1) % d) as u8;
                        conn.extend_from_slice(&c);
                        parents.push(i);
                    }
                    conn.extend_from_slice(s);
                    parents.push(i);
                }
                let fast = m.log_psi_connected(&sampled, &conn, &parents).unwrap();
                // Independently: log p by teacher forcing, the phase by its own pass.
                let lp: Vec<f64> = m.log_prob(&conn).unwrap().to_vec1().unwrap();
                let th: Vec<f64> = match m.learned_phase(&conn).unwrap() {
                    Some(t) => t.to_vec1().unwrap(),
                    None => vec![0.0; lp.len()],
                };
                let full: Vec<Complex64> = (0..lp.len())
                    .map(|j| {
                        let fixed = m.fixed_phase(&conn[j * n..(j + 1) * n]);
                        Complex64::new(0.5 * lp[j], fixed + th[j])
                    })
                    .collect();
                assert_eq!(m.log_psi(&conn).unwrap().len(), full.len());
                for (a, b) in m.log_psi(&conn).unwrap().iter().zip(&full) {
                    assert!((a - b).norm() < 1e-10, "{scheme} {network:?} log_psi");
                }
                for (j, (a, b)) in fast.iter().zip(&full).enumerate() {
                    assert!(
                        (a - b).norm() < 1e-10,
                        "{scheme} {network:?} {phase:?} d={d} config {j}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// The per-sample Jacobians of `log p` and of the learned phase (one backward pass for the
/// batch) equal one backward pass per sample, on a chain and a square, for every schedule.
#[test]
fn per_sample_jacobians_equal_single_sample_gradients() {
    let cases = [
        (Lattice::chain(6, Boundary::Periodic), 2),
        (Lattice::square(3, 3, Boundary::Periodic), 2),
        (Lattice::chain(4, Boundary::Periodic), 3),
    ];
    for (lat, d) in cases {
        let n = lat.n_sites();
        for (scheme, network) in [
            ("rg", Network::Masked),
            ("autoregressive", Network::Masked),
            ("rg", Network::Causal),
            ("autoregressive", Network::Causal),
        ] {
            let m = model_with(&lat, d, scheme, Phase::Learned, DType::F64, network);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
            let (s, _) = m.sample(4, &mut rng).unwrap();
            let flat = |t: candle_core::Tensor| -> Vec<f64> {
                t.flatten_all().unwrap().to_vec1().unwrap()
            };
            let jl = flat(m.log_prob_jacobian(&s).unwrap());
            let jp = flat(m.phase_jacobian(&s).unwrap().unwrap());
            let np = m.n_params();
            assert_eq!(jl.len(), 4 * np);
            for i in 0..4 {
                let si = &s[i * n..(i + 1) * n];
                let gl = flat_grad(&m, &m.log_prob(si).unwrap().sum_all().unwrap());
                let th = m.learned_phase(si).unwrap().unwrap();
                let gp = flat_grad(&m, &th.sum_all().unwrap());
                for j in 0..np {
                    assert!(
                        (jl[i * np + j] - gl[j]).abs() < 1e-10,
                        "{scheme} {network:?} log p sample {i} param {j}: {} vs {}",
                        jl[i * np + j],
                        gl[j]
                    );
                    assert!(
                        (jp[i * np + j] - gp[j]).abs() < 1e-10,
                        "{scheme} phase sample {i} param {j}: {} vs {}",
                        jp[i * np + j],
                        gp[j]
                    );
                }
                assert!(gl.iter().filter(|v| v.abs() > 1e-12).count() > np / 2);
            }
        }
    }
}

/// With an `S^z` sector the autoregressive model is normalised on the sector and zero outside
/// it (by enumeration), its samples stay in the sector, the fast connected evaluation and the
/// per-sample Jacobians agree with the full ones, and schedules revealing several sites at
/// once, unreachable `S^z` and d > 2 are refused.
#[test]
fn sz_sector_is_exactly_normalised_and_enforced() {
    let lat = Lattice::chain(8, Boundary::Periodic);
    let n = 8;
    let cfg = |sz, network| ModelConfig {
        width: 6,
        depth: 2,
        kernel: 3,
        phase: Phase::Marshall,
        sz: Some(sz),
        network,
        symmetry: None,
        dilation: Dilation::None,
        pin_first: false,
    };
    let build_with = |scheme: &str, sz: f64, d: usize, network| {
        let lat = if d == 2 {
            lat.clone()
        } else {
            Lattice::chain(4, Boundary::Periodic)
        };
        let sched = Schedule::parse(scheme, &lat).unwrap();
        MaskedDiffusion::new(
            &lat,
            d,
            sched,
            cfg(sz, network),
            &Device::Cpu,
            DType::F64,
            7,
        )
    };
    let build = |scheme: &str, sz: f64, d: usize| build_with(scheme, sz, d, Network::Masked);
    for (sz, network) in [
        (0.0, Network::Masked),
        (1.0, Network::Masked),
        (-2.0, Network::Masked),
        (0.0, Network::Causal),
        (-2.0, Network::Causal),
    ] {
        let m = build_with("autoregressive", sz, 2, network).unwrap();
        let all = all_configs(n, 2);
        let lp: Vec<f64> = m.log_prob(&all).unwrap().to_vec1().unwrap();
        let ups_wanted = (4.0 + sz) as usize;
        let mut inside = 0.0;
        for (i, l) in lp.iter().enumerate() {
            let ups = all[i * n..(i + 1) * n].iter().filter(|&&v| v == 0).count();
            if ups == ups_wanted {
                inside += l.exp();
            } else {
                assert!(
                    l.exp() == 0.0,
                    "sz {sz}: p = {} outside the sector",
                    l.exp()
                );
            }
        }
        assert!((inside - 1.0).abs() < 1e-10, "sz {sz}: {inside}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let sampled = m.sample_with_conditionals(200, &mut rng).unwrap();
        for s in sampled.configs.chunks(n) {
            assert_eq!(s.iter().filter(|&&v| v == 0).count(), ups_wanted);
        }
        // Two-site exchanges stay in the sector: fast and full evaluations agree.
        let (mut conn, mut parents) = (Vec::new(), Vec::new());
        for (i, s) in sampled.configs.chunks(n).enumerate().take(20) {
            for x in 0..n {
                let mut c = s.to_vec();
                c.swap(x, (x + 1) % n);
                conn.extend_from_slice(&c);
                parents.push(i);
            }
        }
        let fast = m.log_psi_connected(&sampled, &conn, &parents).unwrap();
        let full = m.log_psi(&conn).unwrap();
        for (a, b) in fast.iter().zip(&full) {
            assert!((a - b).norm() < 1e-10, "{a} vs {b}");
        }
        let j = m.log_prob_jacobian(&sampled.configs[..3 * n]).unwrap();
        let j: Vec<f64> = j.flatten_all().unwrap().to_vec1().unwrap();
        let g = flat_grad(
            &m,
            &m.log_prob(&sampled.configs[..n])
                .unwrap()
                .sum_all()
                .unwrap(),
        );
        for (a, b) in j.iter().zip(&g) {
            assert!((a - b).abs() < 1e-10);
        }
    }
    for (scheme, sz, d, what) in [
        ("rg", 0.0, 2, "one site per step"),
        ("autoregressive", 0.5, 2, "not reachable"),
        ("autoregressive", 5.0, 2, "not reachable"),
        ("autoregressive", 0.0, 3, "spin 1/2"),
    ] {
        let err = build(scheme, sz, d).err().expect("refused").to_string();
        assert!(err.contains(what), "{scheme} {sz} {d}: {err}");
    }
}

/// `marshall+learned`: the phase is Marshall's sign plus the learned head, i.e. that of a
/// `learned` model with the same parameters plus `pi #{down on A}`; the learned part starts
/// small (|theta| well below 1 on every configuration), so training starts near the real
/// (or Marshall-signed) wavefunction.
#[test]
fn marshall_plus_learned_phase_adds_marshalls_sign() {
    let lat = Lattice::square(2, 3, Boundary::Periodic);
    let n = lat.n_sites();
    let all = all_configs(n, 2);
    let learned = model(&lat, 2, "rg", Phase::Learned, DType::F64);
    let both = model(&lat, 2, "rg", Phase::MarshallLearned, DType::F64);
    let a = learned.log_psi(&all).unwrap();
    let b = both.log_psi(&all).unwrap();
    let pi = std::f64::consts::PI;
    let mut flipped = 0;
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        let s = &all[i * n..(i + 1) * n];
        let downs_a = (0..n)
            .filter(|&x| lat.sublattice_sign(x) > 0 && s[x] == 1)
            .count();
        let marshall = pi * (downs_a % 2) as f64;
        flipped += downs_a % 2;
        assert!((a.re - b.re).abs() < 1e-12);
        assert!((b.im - a.im - marshall).abs() < 1e-12, "{s:?}: {a} {b}");
        assert!(a.im.abs() < 0.5, "initial learned phase {} on {s:?}", a.im);
    }
    assert!(flipped > 0 && flipped < all.len() / n);
    for p in [
        Phase::None,
        Phase::Marshall,
        Phase::Learned,
        Phase::MarshallLearned,
    ] {
        assert_eq!(Phase::parse(p.name()).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{}\"", p.name()));
    }
}

/// The receptive-field note: none when `(kernel - 1)/2 sum_l D_l >= L/2`, else the smallest
/// kernel that covers the lattice, and `--dilation levels` for an undilated network on a
/// schedule with coarse steps (not the autoregressive one).
#[test]
fn receptive_field_note_names_the_covering_kernel() {
    let build = |lat: &Lattice, kernel: usize, scheme: &str, dilation: Dilation| {
        let cfg = ModelConfig {
            width: 4,
            depth: 3,
            kernel,
            phase: Phase::None,
            sz: None,
            dilation,
            ..ModelConfig::default()
        };
        let sched = Schedule::parse(scheme, lat).unwrap();
        MaskedDiffusion::new(lat, 2, sched, cfg, &Device::Cpu, DType::F32, 1).unwrap()
    };
    let chain = Lattice::chain(16, Boundary::Periodic);
    let note = build(&chain, 5, "rg", Dilation::None)
        .receptive_field_note()
        .unwrap();
    assert!(
        note.contains("sees 6 sites")
            && note.contains("--kernel 7")
            && note.contains("--dilation levels"),
        "{note}"
    );
    let ar = build(&chain, 5, "autoregressive", Dilation::None)
        .receptive_field_note()
        .unwrap();
    assert!(
        ar.contains("--kernel 7") && !ar.contains("--dilation"),
        "{ar}"
    );
    assert!(build(&chain, 7, "rg", Dilation::None)
        .receptive_field_note()
        .is_none());
    // Kernel 3, depth 3, per-layer dilation 1, 2, 4: 7 sites, one short of 8.
    let dil = build(
        &Lattice::chain(16, Boundary::Periodic),
        3,
        "rg",
        Dilation::Layers,
    )
    .receptive_field_note()
    .unwrap();
    assert!(
        dil.contains("sees 7 sites in each direction (dilation layers)"),
        "{dil}"
    );
    assert!(build(
        &Lattice::chain(16, Boundary::Periodic),
        3,
        "rg",
        Dilation::Levels
    )
    .receptive_field_note()
    .is_none());
    let square = Lattice::square(4, 4, Boundary::Periodic);
    assert!(build(&square, 3, "rg", Dilation::None)
        .receptive_field_note()
        .is_none());
}

/// The dense form of the convolutions (one `(N c) x (N o)` matrix per layer) and the
/// unfolded one compute the same `log p`, phase, per-sample Jacobians and samples: on a
/// chain with fewer sites than twice the kernel, a kernel wider than its chain (taps
/// reading one site twice, d = 3), a square, and both networks; a new model takes the
/// dense form on these and the unfolded one on a long chain.
#[test]
fn dense_and_unfolded_convolutions_agree() {
    let cases = [
        (Lattice::chain(16, Boundary::Periodic), 2, 9),
        (Lattice::chain(4, Boundary::Periodic), 3, 5),
        (Lattice::square(4, 4, Boundary::Periodic), 2, 3),
    ];
    let flat = |t: candle_core::Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let close = |a: &[f64], b: &[f64], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = a.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-11 * scale, "{what} [{i}]: {x} vs {y}");
        }
    };
    for (lat, d, kernel) in cases {
        for network in [Network::Masked, Network::Causal] {
            for scheme in ["rg", "autoregressive"] {
                let what = format!("{:?} d={d} k={kernel} {scheme} {network:?}", lat.extent());
                let cfg = ModelConfig {
                    width: 5,
                    depth: 2,
                    kernel,
                    phase: Phase::Learned,
                    sz: None,
                    network,
                    symmetry: None,
                    dilation: Dilation::None,
                    pin_first: false,
                };
                let sched = Schedule::parse(scheme, &lat).unwrap();
                let mut m =
                    MaskedDiffusion::new(&lat, d, sched, cfg, &Device::Cpu, DType::F64, 3).unwrap();
                assert!(m.dense_convolutions(), "{what}: dense by default");
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
                let (s, lp) = m.sample(16, &mut rng).unwrap();
                let dense = (
                    flat(m.log_prob(&s).unwrap()),
                    flat(m.learned_phase(&s).unwrap().unwrap()),
                    flat(m.log_prob_jacobian(&s).unwrap()),
                    flat(m.phase_jacobian(&s).unwrap().unwrap()),
                );
                m.use_dense_convolutions(false).unwrap();
                assert!(!m.dense_convolutions());
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
                let (s2, lp2) = m.sample(16, &mut rng).unwrap();
                assert_eq!(s, s2, "{what}: the same samples");
                close(&lp, &lp2, &format!("{what}: sampled log p"));
                close(
                    &dense.0,
                    &flat(m.log_prob(&s).unwrap()),
                    &format!("{what}: log p"),
                );
                let phase = flat(m.learned_phase(&s).unwrap().unwrap());
                close(&dense.1, &phase, &format!("{what}: phase"));
                let jl = flat(m.log_prob_jacobian(&s).unwrap());
                close(&dense.2, &jl, &format!("{what}: log p Jacobian"));
                let jp = flat(m.phase_jacobian(&s).unwrap().unwrap());
                close(&dense.3, &jp, &format!("{what}: phase Jacobian"));
            }
        }
    }
    let long = Lattice::chain(64, Boundary::Periodic);
    let m = model_with(&long, 2, "rg", Phase::None, DType::F32, Network::Causal);
    assert!(!m.dense_convolutions(), "64 sites, 3 taps: unfolded");
}

/// Causal networks for comparing two ways of drawing or evaluating them: (lattice, d, scheme,
/// config) with widths below, at and above one register of eight channels, one to three
/// layers, three local states, both dilations, a learned phase head (extra output channels),
/// pinned first sites, and every schedule.
fn causal_cases() -> Vec<(Lattice, usize, &'static str, ModelConfig)> {
    let cases = [
        (
            Lattice::chain(12, Boundary::Periodic),
            2,
            "rg",
            1,
            5,
            Dilation::None,
            false,
        ),
        (
            Lattice::chain(8, Boundary::Periodic),
            3,
            "autoregressive",
            2,
            8,
            Dilation::None,
            true,
        ),
        (
            Lattice::square(4, 4, Boundary::Periodic),
            2,
            "rg-colors=2",
            2,
            12,
            Dilation::None,
            false,
        ),
        (
            Lattice::square(8, 8, Boundary::Periodic),
            2,
            "rg",
            3,
            8,
            Dilation::Levels,
            true,
        ),
        (
            Lattice::square(8, 8, Boundary::Periodic),
            2,
            "rg",
            2,
            6,
            Dilation::Layers,
            false,
        ),
    ];
    cases
        .into_iter()
        .map(|(lat, d, scheme, depth, width, dilation, pin_first)| {
            let cfg = ModelConfig {
                width,
                depth,
                kernel: 3,
                phase: Phase::Learned,
                network: Network::Causal,
                dilation,
                pin_first,
                ..ModelConfig::default()
            };
            (lat, d, scheme, cfg)
        })
        .collect()
}

/// The networks of [`causal_cases`] in `dtype`, each with a description.
fn causal_models(dtype: DType) -> Vec<(String, MaskedDiffusion)> {
    causal_cases()
        .into_iter()
        .map(|(lat, d, scheme, cfg)| {
            let what = format!("{:?} d={d} {scheme} {cfg:?}", lat.extent());
            let sched = Schedule::parse(scheme, &lat).unwrap();
            let m = MaskedDiffusion::new(&lat, d, sched, cfg, &Device::Cpu, dtype, 5).unwrap();
            (what, m)
        })
        .collect()
}

/// Every named pair of sequences agrees elementwise within `tol`.
fn assert_all_close(what: &str, pairs: &[(&str, &[f64], &[f64])], tol: f64) {
    for (name, a, b) in pairs {
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() < tol, "{what} {name}: {x} vs {y}");
        }
    }
}

/// The causal network's stepwise draws (each site evaluated once, at its step, from the
/// hidden states of earlier steps) equal draws with one full causal pass per step: the same
/// samples from the same seed and the same `log p` (and tempered `log q`) for the networks of
/// [`causal_cases`] in `f64` (the tensor stepwise draw), and `log p` equal to the full-pass
/// `log_prob`.
#[test]
fn stepwise_draws_equal_full_causal_passes() {
    for (what, mut m) in causal_models(DType::F64) {
        for beta in [1.0, 0.6] {
            let draw = |m: &MaskedDiffusion| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
                m.sample_tempered(200, beta, &mut rng).unwrap()
            };
            m.use_stepwise_draws(true);
            let stepwise = draw(&m);
            m.use_stepwise_draws(false);
            let full = draw(&m);
            assert_eq!(
                stepwise.configs, full.configs,
                "{what} beta {beta}: samples"
            );
            let lp: Vec<f64> = m.log_prob(&stepwise.configs).unwrap().to_vec1().unwrap();
            assert_all_close(
                &format!("{what} beta {beta}"),
                &[
                    ("log p", &stepwise.log_p, &full.log_p),
                    ("log q", &stepwise.log_q, &full.log_q),
                    ("conditionals", &stepwise.cond, &full.cond),
                    ("log_prob against drawn", &lp, &stepwise.log_p),
                ],
                1e-10,
            );
        }
    }
}

/// [`ModelConfig::pin_first`]: the first site the schedule reveals is always in state 0, `p`
/// is exactly normalised over the configurations with that site in state 0, and every
/// other configuration has probability 0; both networks, drawn and evaluated.
#[test]
fn a_pinned_first_site_is_always_up_and_p_stays_normalised() {
    for lat in [
        Lattice::chain(8, Boundary::Periodic),
        Lattice::square(2, 4, Boundary::Periodic),
    ] {
        for (scheme, network) in schemes_and_networks() {
            let what = format!("{scheme} {network:?} on {:?}", lat.extent());
            let cfg = ModelConfig {
                width: 6,
                depth: 2,
                kernel: 3,
                pin_first: true,
                network,
                ..ModelConfig::default()
            };
            let sched = Schedule::parse(scheme, &lat).unwrap();
            let x0 = sched.steps()[0][0];
            let m = MaskedDiffusion::new(&lat, 2, sched, cfg, &Device::Cpu, DType::F64, 7).unwrap();
            assert_eq!(m.pinned_site(), Some(x0), "{what}");
            let n = lat.n_sites();
            let all = all_configs(n, 2);
            let lp: Vec<f64> = m.log_prob(&all).unwrap().to_vec1().unwrap();
            let (mut up, mut down) = (0.0, 0.0);
            for (c, l) in all.chunks(n).zip(&lp) {
                if c[x0] == 0 {
                    up += l.exp();
                } else {
                    down += l.exp();
                }
            }
            assert!(
                (up - 1.0).abs() < 1e-10 && down == 0.0,
                "{what}: {up} {down}"
            );
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let (s, _) = m.sample(500, &mut rng).unwrap();
            assert!(
                s.chunks(n).all(|c| c[x0] == 0),
                "{what}: a draw with x0 down"
            );
        }
    }
}

/// The causal network on the host (site by site, `f32`, the CPU default) against its tensor
/// form: the same draws from the same seed, `log p`, tempered `log q` and conditionals to
/// `f32` rounding, and `log_prob_values` equal to the tensor `log_prob`, for the networks of
/// [`causal_cases`].
#[test]
fn host_kernels_equal_tensor_passes() {
    for (what, mut m) in causal_models(DType::F32) {
        for beta in [1.0, 0.6] {
            let draw = |m: &MaskedDiffusion| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
                m.sample_tempered(300, beta, &mut rng).unwrap()
            };
            m.use_host_kernels(true);
            let host = draw(&m);
            let lp_host = m.log_prob_values(&host.configs).unwrap();
            m.use_host_kernels(false);
            let tensor = draw(&m);
            let lp_tensor = m.log_prob_values(&host.configs).unwrap();
            assert_eq!(host.configs, tensor.configs, "{what} beta {beta}: samples");
            assert_all_close(
                &format!("{what} beta {beta}"),
                &[
                    ("log p", &host.log_p, &tensor.log_p),
                    ("log q", &host.log_q, &tensor.log_q),
                    ("conditionals", &host.cond, &tensor.cond),
                    ("log_prob_values", &lp_host, &lp_tensor),
                    ("drawn against evaluated", &host.log_p, &lp_host),
                ],
                2e-4,
            );
        }
    }
}

/// A model on a schedule without its last step ([`Schedule::without_last_step`]) is a
/// distribution over the other sites: for both networks and every schedule it sums to one
/// over their configurations, no conditional reads an unrevealed site (`log p` does not
/// change when they do), its draws leave them at 0 and carry their `log p`; the causal
/// network's host kernels and stepwise draws agree with its tensor passes.
#[test]
fn a_model_without_the_last_step_is_a_distribution_of_the_other_sites() {
    let lat = Lattice::square(2, 4, Boundary::Periodic);
    let n = lat.n_sites();
    let all = all_configs(n, 2);
    for (scheme, network) in schemes_and_networks() {
        let what = format!("{scheme} {network:?}");
        let sched = Schedule::parse(scheme, &lat)
            .unwrap()
            .without_last_step()
            .unwrap();
        let hidden = sched.unrevealed().to_vec();
        let cfg = ModelConfig {
            width: 6,
            depth: 2,
            kernel: 3,
            network,
            dilation: Dilation::Levels,
            ..ModelConfig::default()
        };
        let make = |dtype| {
            MaskedDiffusion::new(&lat, 2, sched.clone(), cfg.clone(), &Device::Cpu, dtype, 3)
                .unwrap()
        };
        let m = make(DType::F64);
        let lp: Vec<f64> = m.log_prob(&all).unwrap().to_vec1().unwrap();
        let mut total = 0.0;
        for (c, l) in all.chunks(n).zip(&lp) {
            if hidden.iter().all(|&x| c[x] == 0) {
                total += l.exp();
            }
        }
        assert!((total - 1.0).abs() < 1e-10, "{what}: sum p = {total}");
        // log p(s) = log p(s with the unrevealed sites set to 0).
        let zeroed: Vec<u8> = all
            .chunks(n)
            .flat_map(|c| {
                let mut c = c.to_vec();
                hidden.iter().for_each(|&x| c[x] = 0);
                c
            })
            .collect();
        let lp0: Vec<f64> = m.log_prob(&zeroed).unwrap().to_vec1().unwrap();
        assert_all_close(&what, &[("unrevealed sites read", &lp, &lp0)], 1e-12);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let (s, lp_drawn) = m.sample(200, &mut rng).unwrap();
        assert!(s.chunks(n).all(|c| hidden.iter().all(|&x| c[x] == 0)));
        let lp_eval: Vec<f64> = m.log_prob(&s).unwrap().to_vec1().unwrap();
        assert_all_close(&what, &[("drawn log p", &lp_drawn, &lp_eval)], 1e-10);
        if network == Network::Causal {
            let mut m = make(DType::F32);
            let draw = |m: &MaskedDiffusion| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
                m.sample(300, &mut rng).unwrap()
            };
            m.use_host_kernels(true);
            let (host, lp_host) = draw(&m);
            let values_host = m.log_prob_values(&all).unwrap();
            m.use_host_kernels(false);
            let (tensor, lp_tensor) = draw(&m);
            let values_tensor = m.log_prob_values(&all).unwrap();
            m.use_stepwise_draws(false);
            let (full, _) = draw(&m);
            assert_eq!(host, tensor, "{what}: host and tensor draws");
            assert_eq!(full, tensor, "{what}: stepwise and full-pass draws");
            assert_all_close(
                &what,
                &[
                    ("drawn log p", &lp_host, &lp_tensor),
                    ("log_prob_values", &values_host, &values_tensor),
                ],
                2e-4,
            );
        }
    }
}
