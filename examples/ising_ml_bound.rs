//! How close can the RG masked diffusion come to the Ising model at `beta_c` with more or
//! better training? `rgdiff sample` trains without data, by the reverse KL (the variational
//! free energy). This example continues that training by maximum likelihood on exact
//! samples (a Wolff cluster chain, each configuration flipped with probability 1/2), which
//! minimises the forward KL directly with low-variance gradients: as a proxy for the best
//! proposal a network of this size can give, it bounds what more training without data is
//! likely to buy.
//!
//! Every `--report` iterations it prints both divergences in nats, from the importance
//! weights `log w = -beta E - log q` and the exact `log Z` (Kaufman's formula):
//! `KL(p || q) = E_p[log w] - log Z` on held-out exact samples and
//! `KL(q || p) = log Z - E_q[log w]` on the chain's proposals (errors: standard errors of
//! the means), and the independence Metropolis-Hastings chain of `rgdiff sample` (local
//! sweeps every 2 proposals): acceptance, ESS, `tau_int` of `|M|`, proposals per second.
//!
//! ```sh
//! cargo run --release --example ising_ml_bound -- --l 16 --depth 1 --iters 600
//! ```
//! Options (defaults): `--l 16 --depth 1 --width 8 --kernel 3 --reverse-kl 150 --iters 600
//! --batch 128 --lr 3e-3 --data 50000 --held-out 4000 --proposals 10000 --report 100
//! --seed 1`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rgdiff::field::exact::ising_kaufman;
use rgdiff::field::ising::IsingChain;
use rgdiff::field::theory::{ising_energy, Neighbours};
use rgdiff::field::variational::{IsingModel, LastStep, TrainConfig, Z2};
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{Dilation, ModelConfig, Network, Phase};
use rgdiff::rg::Schedule;
use rgdiff::{stats, Error, Result};

/// mimalloc with freed memory kept mapped, as in `rgdiff` (src/main.rs): the training's
/// tensors are freed and reallocated every iteration, and with the system allocator the
/// kernel zeroing their fresh pages took a third of this example's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--key value` options with their defaults.
fn options() -> Result<HashMap<String, f64>> {
    let mut opt: HashMap<String, f64> = [
        ("l", 16.0),
        ("depth", 1.0),
        ("width", 8.0),
        ("kernel", 3.0),
        ("reverse-kl", 150.0),
        ("iters", 600.0),
        ("batch", 128.0),
        ("lr", 3e-3),
        ("data", 50_000.0),
        ("held-out", 4_000.0),
        ("proposals", 10_000.0),
        ("report", 100.0),
        ("seed", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let key = pair[0].trim_start_matches("--");
        let value = pair.get(1).and_then(|v| v.parse::<f64>().ok());
        match (opt.get_mut(key), value) {
            (Some(slot), Some(v)) => *slot = v,
            _ => {
                return Err(Error::Input(format!(
                    "{}: expected --key number with a key among {:?}",
                    pair.join(" "),
                    opt.keys().collect::<Vec<_>>()
                )))
            }
        }
    }
    Ok(opt)
}

/// Mean and error (binned: the held-out Wolff samples are one sweep apart).
fn mean_error(x: &[f64]) -> (f64, f64) {
    let s = stats::correlated(x);
    (s.mean, s.error)
}

fn main() -> Result<()> {
    // SAFETY: sets a process-wide allocator option (15: `mi_option_purge_delay`, -1: never).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let opt = options()?;
    let get = |k: &str| opt[k] as usize;
    let (l, seed) = (get("l"), opt["seed"] as u64);
    let n = l * l;
    let beta = 0.5 * (1.0 + 2f64.sqrt()).ln();
    let lattice = Lattice::square(l, l, Boundary::Periodic);
    let nb = Neighbours::new(&lattice);
    let (log_z, _) = ising_kaufman(l, beta, 1.0);
    let model_cfg = ModelConfig {
        width: get("width"),
        depth: get("depth"),
        kernel: get("kernel"),
        phase: Phase::None,
        sz: None,
        network: Network::parse("causal")?,
        symmetry: None,
        dilation: Dilation::parse("levels")?,
        pin_first: false,
    };
    // The `rgdiff sample` defaults: 128 samples, lr 1e-2, annealed over half the iterations.
    let rkl = get("reverse-kl");
    let train_cfg = TrainConfig {
        samples: 128,
        iters: rkl.max(1),
        lr: 1e-2,
        anneal_iters: rkl / 2,
        anneal_start: 0.3,
        z2: Z2::Mixture,
        last_step: LastStep::HeatBath,
        seed,
    };
    let schedule = Schedule::parse("rg", &lattice)?;
    let mut m = IsingModel::new(
        &lattice,
        (beta, 1.0, 0.0),
        schedule,
        model_cfg,
        &Device::Cpu,
        train_cfg,
    )?;
    let t0 = Instant::now();
    for _ in 0..rkl {
        m.train_step()?;
    }
    println!(
        "{l}x{l} at beta_c, exact log Z {log_z:.4}; {rkl} reverse-KL iterations in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Exact samples: one Wolff sweep (clusters flipping N spins in all) apart, after 1,000.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut chain = IsingChain::new(nb.clone(), beta, 1.0, 0.0);
    for _ in 0..1000 {
        chain.wolff_sweep(&mut rng);
    }
    let (n_data, n_held) = (get("data"), get("held-out"));
    let mut data = Vec::with_capacity((n_data + n_held) * n);
    for _ in 0..n_data + n_held {
        chain.wolff_sweep(&mut rng);
        data.extend(chain.spins.iter().map(|&s| u8::from(s < 0)));
    }
    let (train, held) = data.split_at(n_data * n);
    let held_energy: Vec<f64> = held
        .chunks(n)
        .map(|row| {
            let spins: Vec<i8> = row.iter().map(|&v| 1 - 2 * v as i8).collect();
            ising_energy(&nb, 1.0, 0.0, &spins)
        })
        .collect();

    let stop = AtomicBool::new(false);
    let report = |m: &IsingModel, iter: usize, seconds: f64| -> Result<()> {
        let lq = m.log_q_values(held)?;
        let lw: Vec<f64> = lq
            .iter()
            .zip(&held_energy)
            .map(|(lq, e)| -beta * e - lq)
            .collect();
        let (fwd, fwd_err) = mean_error(&lw);
        let mut chain_rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xc4a1);
        let mh = m.metropolis_hastings(
            &lattice,
            get("proposals"),
            1000,
            2,
            &mut chain_rng,
            &mut |_| {},
            &stop,
        )?;
        let (rev, rev_err) = mean_error(&mh.log_w);
        let tau = stats::tau_int(&mh.recorder.m.iter().map(|v| v.abs()).collect::<Vec<_>>()).0;
        println!(
            "{iter:>6} {seconds:>8.1} {:>8.3}({:.3}) {:>8.3}({:.3}) {:>6.3} {:>6.3} {tau:>6.2} {:>9.0}",
            fwd - log_z,
            fwd_err,
            log_z - rev,
            rev_err,
            mh.acceptance.mean,
            stats::ess_fraction(&mh.log_w),
            mh.log_w.len() as f64 / mh.seconds,
        );
        Ok(())
    };
    println!(
        "{:>6} {:>8} {:>15} {:>15} {:>6} {:>6} {:>6} {:>9}",
        "ML it.", "ML s", "KL(p||q)", "KL(q||p)", "acc.", "ESS", "tau|M|", "prop./s"
    );
    report(&m, 0, 0.0)?;
    let (iters, b, every) = (get("iters"), get("batch"), get("report").max(1));
    let mut batch = vec![0u8; b * n];
    let mut seconds = 0.0;
    for it in 0..iters {
        let t1 = Instant::now();
        for row in batch.chunks_mut(n) {
            let k = rng.random_range(0..n_data);
            let flip = u8::from(rng.random::<bool>());
            for (o, &v) in row.iter_mut().zip(&train[k * n..(k + 1) * n]) {
                *o = v ^ flip;
            }
        }
        let loss = m.log_q(&batch)?.mean_all()?.neg()?;
        let grads = loss.backward()?;
        // Cosine decay to a tenth, as in the reverse-KL training.
        let x = it as f64 / iters as f64;
        let lr = opt["lr"] * (0.1 + 0.45 * (1.0 + (std::f64::consts::PI * x).cos()));
        m.adam.step(m.model.params(), &grads, lr)?;
        seconds += t1.elapsed().as_secs_f64();
        if (it + 1) % every == 0 || it + 1 == iters {
            report(&m, it + 1, seconds)?;
        }
    }
    Ok(())
}
