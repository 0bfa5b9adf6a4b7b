//! Exact samples repeat (a concentrated wavefunction on a small space draws the same
//! configurations many times), and the VMC computes each distinct configuration once: its
//! `log psi` and those of its connected configurations, its Jacobian rows, its term of the
//! gradient. These tests check, on batches full of repeats, that every per-sample number is
//! what the formula gives for each sample on its own: local energies against the dense
//! Hamiltonian, the minSR direction against the parameter-space solve with every row, and
//! the Adam gradient against the sum of per-sample gradients.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device};
use common::all_configs;
use nalgebra::{DMatrix, DVector};
use num_complex::Complex64;
use rgdiff::exact::dense::dense_matrix;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::unique::Unique;
use rgdiff::model::{MaskedDiffusion, ModelConfig, Network, Phase};
use rgdiff::operator::{Hamiltonian, Model};
use rgdiff::rg::Schedule;
use rgdiff::vmc::{Vmc, VmcConfig};

const N: usize = 6;
const B: usize = 256;

fn j1j2() -> (Lattice, Model, Hamiltonian) {
    let lat = Lattice::chain(N, Boundary::Periodic);
    let m = Model::J1J2 {
        j1: 1.0,
        j2: 0.5,
        delta: 1.0,
    };
    let h = Hamiltonian::compile(m.hilbert(&lat), &m.terms(&lat));
    (lat, m, h)
}

/// Both networks (masked on the `rg` schedule, causal on the autoregressive one), f64, with
/// Marshall's sign times a learned phase (complex local energies, two Jacobian blocks).
fn networks(lat: &Lattice) -> Vec<(&'static str, MaskedDiffusion)> {
    let cfg = |network| ModelConfig {
        width: 6,
        depth: 2,
        kernel: 3,
        phase: Phase::MarshallLearned,
        network,
        ..ModelConfig::default()
    };
    let net = |schedule, network| {
        MaskedDiffusion::new(lat, 2, schedule, cfg(network), &Device::Cpu, DType::F64, 3).unwrap()
    };
    vec![
        ("masked rg", net(Schedule::rg(lat), Network::Masked)),
        (
            "causal autoregressive",
            net(Schedule::autoregressive(lat), Network::Causal),
        ),
    ]
}

/// A batch of `B` exact samples with its local energies; panics unless it repeats.
fn batch(vmc: &Vmc) -> (Vec<u8>, Vec<Complex64>) {
    let (s, _, eloc) = vmc.sample_energies(B, 0).unwrap();
    let distinct = Unique::new(&s, N).len();
    assert!(distinct < B / 2, "{distinct} distinct of {B}");
    (s, eloc)
}

/// Rows of a `rows x cols` tensor as f64 vectors.
fn rows_of(t: &candle_core::Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

#[test]
fn local_energies_of_repeated_samples_are_the_dense_formula() {
    let (lat, m, h) = j1j2();
    let all = all_configs(m.hilbert(&lat));
    let index: HashMap<&[u8], usize> = all.chunks(N).enumerate().map(|(i, c)| (c, i)).collect();
    let hm = dense_matrix(h.as_operator());
    for (name, net) in networks(&lat) {
        let lpsi = net.log_psi(&all).unwrap();
        let vmc = Vmc::new(net, h.as_operator(), VmcConfig::default()).unwrap();
        let (s, eloc) = batch(&vmc);
        for (c, e) in s.chunks(N).zip(&eloc) {
            // E_loc(s) = sum_s' <s|H|s'> psi(s') / psi(s).
            let r = index[c];
            let want: Complex64 = (0..all.len() / N)
                .map(|k| hm[(r, k)] * (lpsi[k] - lpsi[r]).exp())
                .sum();
            assert!(
                (e - want).norm() < 1e-9 * (1.0 + want.norm()),
                "{name}: E_loc({c:?}) = {e}, dense formula {want}"
            );
        }
    }
}

#[test]
fn min_sr_direction_of_repeated_samples_is_the_parameter_space_solve() {
    let (lat, _, h) = j1j2();
    // One chunk, and three (run in parallel, with repeats across chunks).
    for (name, net, chunks) in [1, 3]
        .into_iter()
        .flat_map(|c| networks(&lat).into_iter().map(move |(n, m)| (n, m, c)))
    {
        let p = net.n_params();
        let cfg = VmcConfig {
            chunks,
            ..VmcConfig::default()
        };
        let vmc = Vmc::new(net, h.as_operator(), cfg).unwrap();
        let (s, eloc) = batch(&vmc);
        let mean = eloc.iter().sum::<Complex64>() / B as f64;
        let wa: Vec<f64> = eloc.iter().map(|e| e.re - mean.re).collect();
        let wp: Vec<f64> = eloc.iter().map(|e| e.im - mean.im).collect();
        // Importance weights that differ even between repeats of one configuration.
        let uneven: Vec<f64> = (0..B).map(|i| 0.5 + (i % 7) as f64 / 6.0).collect();
        for weights in [None, Some(&uneven[..])] {
            let w = |i: usize| weights.map_or(1.0, |w| w[i]);
            // Every row: Re O = (1/2) d log p, Im O = d theta, each centred with the weights
            // and scaled by sqrt(w_b / B); ebar_b = sqrt(w_b / B) wa_b (the solver's input
            // wa carries one more factor w_b).
            let (jl, jt) = vmc.model.jacobians(&s).unwrap();
            let blocks = [(rows_of(&jl), 0.5, &wa), (rows_of(&jt.unwrap()), 1.0, &wp)];
            let mut o = DMatrix::<f64>::zeros(2 * B, p);
            let mut e = DVector::<f64>::zeros(2 * B);
            for (k, (j, scale, we)) in blocks.iter().enumerate() {
                let mut centre = vec![0.0; p];
                for (i, row) in j.iter().enumerate() {
                    for (c, v) in centre.iter_mut().zip(row) {
                        *c += w(i) * v / B as f64;
                    }
                }
                for (i, row) in j.iter().enumerate() {
                    let f = scale * (w(i) / B as f64).sqrt();
                    for c in 0..p {
                        o[(k * B + i, c)] = f * (row[c] - centre[c]);
                    }
                    e[k * B + i] = we[i] * (w(i) / B as f64).sqrt();
                }
            }
            // dtheta = (O^T O + eps I)^-1 O^T ebar.
            let eps = vmc.cfg.diag_shift;
            let lhs = o.transpose() * &o + DMatrix::<f64>::identity(p, p) * eps;
            let want = lhs.cholesky().unwrap().solve(&(o.transpose() * &e));
            let wa_w: Vec<f64> = (0..B).map(|i| wa[i] * w(i)).collect();
            let wp_w: Vec<f64> = (0..B).map(|i| wp[i] * w(i)).collect();
            let got: Vec<f64> = vmc
                .min_sr_direction(&s, &wa_w, &wp_w, weights)
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = want.amax();
            for c in 0..p {
                assert!(
                    (got[c] - want[c]).abs() < 1e-7 * scale,
                    "{name}, {chunks} chunks, weights {}: dtheta[{c}] = {}, parameter-space solve {}",
                    weights.is_some(),
                    got[c],
                    want[c]
                );
            }
        }
    }
}

#[test]
fn gradient_of_repeated_samples_is_the_sum_of_per_sample_gradients() {
    let (lat, _, h) = j1j2();
    for (name, net) in networks(&lat) {
        let vmc = Vmc::new(net, h.as_operator(), VmcConfig::default()).unwrap();
        let (s, eloc) = batch(&vmc);
        let wa: Vec<f64> = eloc.iter().map(|e| e.re).collect();
        let wp: Vec<f64> = eloc.iter().map(|e| e.im + 0.3).collect();
        // (1/B) sum_b [wa_b d log p_b + 2 wp_b d theta_b], row by row.
        let (jl, jt) = vmc.model.jacobians(&s).unwrap();
        let (jl, jt) = (rows_of(&jl), rows_of(&jt.unwrap()));
        let p = vmc.model.n_params();
        let mut want = vec![0.0; p];
        for i in 0..B {
            for c in 0..p {
                want[c] += (wa[i] * jl[i][c] + 2.0 * wp[i] * jt[i][c]) / B as f64;
            }
        }
        let grads = vmc.surrogate_gradient(&s, &wa, &wp).unwrap();
        let mut got = Vec::new();
        for (_, v) in vmc.model.params() {
            let g = grads.get(v.as_tensor()).unwrap();
            got.extend(g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for c in 0..p {
            assert!(
                (got[c] - want[c]).abs() < 1e-9 * scale,
                "{name}: gradient[{c}] = {}, per-sample sum {}",
                got[c],
                want[c]
            );
        }
    }
}
