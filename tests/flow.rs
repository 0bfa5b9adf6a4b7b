//! The RG-flow score model on real fields: exactness on the free field, unbiased path weights
//! with an untrained network, and the tutorial phi^4 ensemble.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::field::flow::{metropolis_hastings, propose, FlowConfig, Sampler};
use rgdiff::field::theory::{phi4_action, Neighbours};
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::ScoreNet;
use rgdiff::stats;

/// `log Z = (V/2) ln pi - 1/2 sum_p ln(p_hat^2 + m2)` of `S = sum [(d phi)^2 + m2 phi^2]`.
fn free_log_z(lat: &Lattice, m2: f64) -> f64 {
    let v = lat.n_sites() as f64;
    0.5 * v * std::f64::consts::PI.ln()
        - 0.5
            * lat
                .p_hat_squared()
                .iter()
                .map(|q| (q + m2).ln())
                .sum::<f64>()
}

fn free_net(scheme: &str, lat: &Lattice, m2: f64, ref_m2: Option<f64>) -> ScoreNet {
    let cfg = FlowConfig {
        ref_m2,
        // The CLI's defaults: polchinski's UV modes contract at rate w / 2 for all t, so its
        // IR end comes sooner.
        t_max: if scheme == "polchinski" { 1.0 } else { 3.0 },
        channels: 3,
        time_basis: 3,
        ..Default::default()
    };
    cfg.build(scheme, lat, (m2, 0.0), 7, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

#[test]
fn free_field_ode_density_and_score_are_the_exact_gaussian_ones() {
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    let m2 = 0.5;
    let v = lat.n_sites();
    let sigma0: Vec<f64> = lat.p_hat_squared().iter().map(|q| 0.5 / (q + m2)).collect();
    for scheme in ["carosso", "polchinski"] {
        let net = free_net(scheme, &lat, m2, None);
        net.zero_kernels().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (tl, lp) = net.prior_sample(100, &mut rng);
        let (phi, lq, score) = net.flow_prior(&tl, &lp, 32, true).unwrap();
        // The Gaussian part is integrated exactly (integrating factor): any step is exact.
        let (_, lq3, _) = net.flow_prior(&tl, &lp, 3, false).unwrap();
        let score = score.unwrap();
        let tilde = net.hartley_host(&phi).unwrap();
        let s_tilde = net.hartley_host(&score).unwrap();
        for b in 0..100 {
            let mut exact = 0.0;
            for p in 0..v {
                let x = tilde[b * v + p];
                exact +=
                    -0.5 * x * x / sigma0[p] - 0.5 * (2.0 * std::f64::consts::PI * sigma0[p]).ln();
                let want = -x / sigma0[p];
                assert!(
                    (s_tilde[b * v + p] - want).abs() < 1e-9 * (1.0 + want.abs()),
                    "{scheme}: score {} vs {want}",
                    s_tilde[b * v + p]
                );
            }
            assert!(
                (lq[b] - exact).abs() < 1e-9,
                "{scheme}: log q {} vs exact {exact}",
                lq[b]
            );
            assert!((lq3[b] - exact).abs() < 1e-9, "{scheme}: 3 steps");
        }
        // MH acceptance 1 and log Z exact, for both samplers.
        for sampler in [Sampler::Ode, Sampler::Sde] {
            let stop = AtomicBool::new(false);
            let mh = metropolis_hastings(
                &net,
                sampler,
                &lat,
                (m2, 0.0),
                400,
                200,
                16,
                &mut rng,
                &mut |_| {},
                &stop,
            )
            .unwrap();
            assert!(mh.acceptance.mean > 0.999, "{scheme} {sampler:?}");
            let (lz, _) = stats::log_mean_exp(&mh.log_w);
            let want = free_log_z(&lat, m2);
            assert!(
                (lz - want).abs() < 1e-9,
                "{scheme} {sampler:?}: log Z {lz} vs {want}"
            );
        }
    }
}

/// Self-normalised importance estimate `sum w f / sum w` with a jackknife error.
fn reweighted(log_w: &[f64], f: &[f64]) -> (f64, f64) {
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - max).exp()).collect();
    let wf: Vec<f64> = w.iter().zip(f).map(|(a, b)| a * b).collect();
    stats::jackknife(&[&wf, &w], 40, |m| m[0] / m[1])
}

#[test]
fn path_weights_are_unbiased_with_an_untrained_network() {
    // Free field m2 = 0.6 on 4x4, a network with random kernels and a wrong reference mass:
    // the weighted averages of |phi~(p)|^2 and log Z must still be exact, for the reverse SDE
    // (path weights) and the ODE (model density).
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    let m2 = 0.6;
    let v = lat.n_sites();
    let nb = Neighbours::new(&lat);
    let p2 = lat.p_hat_squared();
    for (scheme, sampler) in [
        ("carosso", Sampler::Sde),
        ("polchinski", Sampler::Sde),
        ("carosso", Sampler::Ode),
    ] {
        let net = free_net(scheme, &lat, m2, Some(1.2));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let theta = &net
            .params()
            .into_iter()
            .find(|(k, _)| k == "theta")
            .unwrap()
            .1;
        let th: Vec<f64> = (0..theta.elem_count())
            .map(|_| 0.004 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        theta
            .set(&Tensor::from_vec(th, theta.dims(), &Device::Cpu).unwrap())
            .unwrap();
        let (phi, lq) = propose(&net, sampler, 6000, 12, &mut rng).unwrap();
        let log_w: Vec<f64> = phi
            .chunks(v)
            .zip(&lq)
            .map(|(row, q)| -phi4_action(&nb, m2, 0.0, row) - q)
            .collect();
        let ess = stats::ess_fraction(&log_w);
        assert!(
            ess > 0.05 && ess < 0.98,
            "{scheme} {sampler:?}: ESS {ess} (the proposal should be imperfect but usable)"
        );
        let tilde = net.hartley_host(&phi).unwrap();
        for p in [0usize, 1, 5] {
            let f: Vec<f64> = tilde.chunks(v).map(|r| r[p] * r[p]).collect();
            let (est, err) = reweighted(&log_w, &f);
            let want = 0.5 / (p2[p] + m2);
            assert!(
                (est - want).abs() < 4.0 * err,
                "{scheme} {sampler:?} mode {p}: {est} +- {err} vs {want}"
            );
        }
        let (lz, lz_err) = stats::log_mean_exp(&log_w);
        let want = free_log_z(&lat, m2);
        assert!(
            (lz - want).abs() < 4.0 * lz_err + 1e-3,
            "{scheme} {sampler:?}: log Z {lz} +- {lz_err} vs {want}"
        );
    }
}

#[test]
fn rk4_error_of_the_interacting_flow_is_fourth_order() {
    // Random kernels: the ODE is nonlinear; the error in phi_0 and log q against a 64-step
    // reference falls about 16-fold per halving of the step.
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    for scheme in ["carosso", "polchinski"] {
        let net = free_net(scheme, &lat, 0.5, None);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let theta = &net
            .params()
            .into_iter()
            .find(|(k, _)| k == "theta")
            .unwrap()
            .1;
        let th: Vec<f64> = (0..theta.elem_count())
            .map(|_| 0.05 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        theta
            .set(&Tensor::from_vec(th, theta.dims(), &Device::Cpu).unwrap())
            .unwrap();
        let (tl, lp) = net.prior_sample(20, &mut rng);
        let (p64, l64, _) = net.flow_prior(&tl, &lp, 64, false).unwrap();
        let err = |n: usize| {
            let (p, l, _) = net.flow_prior(&tl, &lp, n, false).unwrap();
            let ep = p
                .iter()
                .zip(&p64)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let el = l
                .iter()
                .zip(&l64)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            (ep, el)
        };
        let (e4, e8) = (err(4), err(8));
        assert!(
            e4.0 > 1e-8,
            "{scheme}: the kernels should make the flow nonlinear"
        );
        assert!(
            e8.0 < e4.0 / 8.0 && e8.1 < e4.1 / 8.0,
            "{scheme}: errors {e4:?} at 4 steps, {e8:?} at 8"
        );
    }
}

#[test]
fn tutorial_ensemble_susceptibility_after_a_short_reverse_kl_training() {
    // L = 8, m2 = -4, lambda = 8: chi_2 = V <m^2> = <M^2>/V = 0.745 +- 0.01 (HMC, flow-sampling
    // literature). A short reverse-KL training through the ODE, then independence MH.
    use rgdiff::field::flow::{FlowModel, FlowTrain, Objective};
    use rgdiff::field::observables::analyse;
    let lat = Lattice::square(8, 8, Boundary::Periodic);
    let (m2, lambda) = (-4.0, 8.0);
    let cfg = FlowConfig {
        channels: 4,
        time_basis: 3,
        steps: 8,
        ..Default::default()
    };
    let net = cfg
        .build("carosso", &lat, (m2, lambda), 1, &Device::Cpu)
        .unwrap();
    let mut m = FlowModel::new(
        net,
        (m2, lambda),
        Objective::Kl,
        cfg.steps,
        None,
        FlowTrain {
            samples: 64,
            iters: 150,
            lr: 3e-3,
            seed: 1,
        },
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let mut first = f64::NAN;
    let mut last = f64::NAN;
    for _ in 0..150 {
        let s = m.train_step().unwrap();
        if first.is_nan() {
            first = s.free_energy;
        }
        last = s.free_energy;
    }
    eprintln!(
        "training: {:.1} s, F {first} -> {last}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        last < first - 1.0,
        "training did not lower F: {first} -> {last}"
    );
    let net = m.net.to_dtype(DType::F64).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let stop = AtomicBool::new(false);
    let mh = metropolis_hastings(
        &net,
        Sampler::Ode,
        &lat,
        (m2, lambda),
        6000,
        500,
        cfg.steps,
        &mut rng,
        &mut |_| {},
        &stop,
    )
    .unwrap();
    let a = analyse(&mh.recorder);
    let chi2 = a.estimates["m2_density"];
    eprintln!(
        "chi_2 {} +- {}, acceptance {:?}, ESS {}, {:.1} s in all",
        chi2.mean,
        chi2.error,
        mh.acceptance,
        stats::ess_fraction(&mh.log_w),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        chi2.error < 0.05,
        "error bar {} too large to test",
        chi2.error
    );
    let err = (chi2.error.powi(2) + 0.01f64.powi(2)).sqrt();
    assert!(
        (chi2.mean - 0.745).abs() < 3.0 * err,
        "chi_2 = {} +- {} vs 0.745 +- 0.01",
        chi2.mean,
        chi2.error
    );
}

#[test]
fn every_parameter_gets_a_gradient_from_both_objectives() {
    // Reverse KL through the ODE, and denoising score matching: theta and omega both move.
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    let cfg = FlowConfig {
        channels: 3,
        time_basis: 2,
        steps: 4,
        ..Default::default()
    };
    let net = cfg
        .build("carosso", &lat, (-1.0, 1.0), 3, &Device::Cpu)
        .unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    // Kernels of a trained size, so that omega's gradient is not negligible.
    let theta = &net
        .params()
        .into_iter()
        .find(|(k, _)| k == "theta")
        .unwrap()
        .1;
    let th: Vec<f32> = (0..theta.elem_count())
        .map(|_| 0.05 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    theta
        .set(&Tensor::from_vec(th, theta.dims(), &Device::Cpu).unwrap())
        .unwrap();
    let (tl, lp) = net.prior_sample(8, &mut rng);
    let tt = Tensor::from_vec(tl, (8, 16), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let lpt = Tensor::from_vec(lp, 8, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let (phi0, lq, _) = net
        .integrate(&net.hartley(&tt).unwrap(), &lpt, None, cfg.steps)
        .unwrap();
    let kl = (net.phi4_action(&phi0, -1.0, 1.0).unwrap() + lq)
        .unwrap()
        .mean_all()
        .unwrap();
    let dsm = net
        .score_tilde(&tt, &[0.1; 8])
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    for loss in [kl, dsm] {
        let g = loss.backward().unwrap();
        for (name, v) in net.params() {
            let gv: Vec<f32> = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(gv.iter().any(|x| *x != 0.0), "{name}: zero gradient");
            assert!(gv.iter().all(|x| x.is_finite()), "{name}: {gv:?}");
        }
    }
}
