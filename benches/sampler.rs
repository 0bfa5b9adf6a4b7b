//! Hot paths of the classical Ising sampler (`rgdiff sample`) on the 16x16 square at
//! `beta_c`: the step-causal network's host kernels (draws and `log p` of 256 configurations,
//! level-dilated, width 8, depth 1 and 2, the `rg` schedule without its heat-bath last step,
//! as the model chain runs them), the lookup tables' draws and `log q` (`--network table`,
//! 100 training iterations; every site, heat baths included), one single-spin Metropolis
//! sweep, and the energy every chain measures per sample. Throughput is in sites (network
//! sites for the kernels), so the reports read as time per site. Run with `cargo bench
//! --bench sampler`.
//!
//! The allocator is set up as in the `rgdiff` binary (mimalloc, freed memory kept mapped).

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::field::ising::IsingChain;
use rgdiff::field::table::{TableConfig, TableModel};
use rgdiff::field::theory::{ising_energy, Neighbours};
use rgdiff::field::variational::TrainConfig;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{Dilation, MaskedDiffusion, ModelConfig, Network};
use rgdiff::rg::Schedule;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (mimalloc.h), as in `main.rs`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Configurations per kernel call (the model chain draws in batches of this order).
const BATCH: usize = 256;

fn bench(c: &mut Criterion) {
    // SAFETY: sets a process-wide allocator option; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let lat = Lattice::square(16, 16, Boundary::Periodic);
    let sched = Schedule::parse("rg", &lat)
        .unwrap()
        .without_last_step()
        .expect("the rg schedule has a last step");
    let sites: usize = sched.steps().iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("sampler");
    g.sample_size(20);
    for depth in [1, 2] {
        let cfg = ModelConfig {
            width: 8,
            depth,
            kernel: 3,
            network: Network::Causal,
            dilation: Dilation::Levels,
            ..ModelConfig::default()
        };
        let m =
            MaskedDiffusion::new(&lat, 2, sched.clone(), cfg, &Device::Cpu, DType::F32, 1).unwrap();
        let net = m.frozen().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (s, _) = net.sample(BATCH, &mut rng).unwrap();
        g.throughput(Throughput::Elements((BATCH * sites) as u64));
        g.bench_function(format!("ising_16x16/depth_{depth}/draw_{BATCH}"), |b| {
            b.iter(|| net.sample(BATCH, &mut rng).unwrap())
        });
        g.bench_function(format!("ising_16x16/depth_{depth}/log_p_{BATCH}"), |b| {
            b.iter(|| net.log_prob_values(black_box(&s)).unwrap())
        });
    }
    let beta_c = 0.5 * (1.0 + 2f64.sqrt()).ln();
    let train = TrainConfig {
        samples: 512,
        iters: 100,
        lr: 5e-2,
        anneal_iters: 0,
        ..TrainConfig::default()
    };
    let mut tables =
        TableModel::new(&lat, (beta_c, 1.0, 0.0), TableConfig::default(), train).unwrap();
    for _ in 0..100 {
        tables.train_step().unwrap();
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let drawn = tables.table.draw_with(BATCH, &mut rng);
    g.throughput(Throughput::Elements((BATCH * lat.n_sites()) as u64));
    g.bench_function(format!("ising_16x16/table/draw_{BATCH}"), |b| {
        b.iter(|| tables.table.draw_with(BATCH, &mut rng))
    });
    g.bench_function(format!("ising_16x16/table/log_q_{BATCH}"), |b| {
        b.iter(|| tables.table.log_q(black_box(&drawn.states)))
    });
    let nb = Neighbours::new(&lat);
    let mut chain = IsingChain::new(nb.clone(), beta_c, 1.0, 0.0);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    for _ in 0..100 {
        chain.metropolis_sweep(&mut rng);
    }
    g.throughput(Throughput::Elements(lat.n_sites() as u64));
    g.bench_function("ising_16x16/metropolis_sweep", |b| {
        b.iter(|| chain.metropolis_sweep(&mut rng))
    });
    let spins = chain.spins.clone();
    g.bench_function("ising_16x16/energy", |b| {
        b.iter(|| ising_energy(&nb, 1.0, 0.0, black_box(&spins)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
