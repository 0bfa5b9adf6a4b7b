//! Hot paths of the variational solver per schedule (`rg`, `rg-colors=2`, `autoregressive`,
//! and `autoregressive` with the step-causal network): batched `log psi`, exact sampling, and
//! one whole VMC iteration (1024 samples, Adam and minSR), on the TFIM chain of 16 and the
//! Heisenberg 4x4 square. Run with `cargo bench --bench vmc`.
//!
//! The allocator is set up as in the `rgdiff` binary (mimalloc, freed memory kept mapped), so
//! the times are those of the CLI; with glibc's allocator an iteration takes up to twice as long.

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{MaskedDiffusion, ModelConfig, Network, Phase};
use rgdiff::operator::{Hamiltonian, Model};
use rgdiff::rg::Schedule;
use rgdiff::vmc::driver::Optimizer;
use rgdiff::vmc::{Vmc, VmcConfig};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (mimalloc.h), as in `main.rs`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn cases() -> Vec<(&'static str, Lattice, Model, Phase)> {
    vec![
        (
            "tfim_chain_16",
            Lattice::chain(16, Boundary::Periodic),
            Model::Tfim {
                j: 1.0,
                h: 1.0,
                g: 0.0,
            },
            Phase::None,
        ),
        (
            "heisenberg_square_4x4",
            Lattice::square(4, 4, Boundary::Periodic),
            Model::Heisenberg { j: 1.0 },
            Phase::Marshall,
        ),
    ]
}

fn model(lat: &Lattice, scheme: &str, phase: Phase, network: Network) -> MaskedDiffusion {
    let cfg = ModelConfig {
        phase,
        network,
        ..ModelConfig::default()
    };
    let sched = Schedule::parse(scheme, lat).unwrap();
    MaskedDiffusion::new(lat, 2, sched, cfg, &Device::Cpu, DType::F32, 1).unwrap()
}

fn bench(c: &mut Criterion) {
    // SAFETY: sets a process-wide allocator option; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let mut g = c.benchmark_group("vmc");
    g.sample_size(10);
    for (name, lat, m, phase) in cases() {
        let h = Hamiltonian::compile(m.hilbert(&lat), &m.terms(&lat));
        for (scheme, network) in [
            ("rg", Network::Masked),
            ("rg-colors=2", Network::Masked),
            ("autoregressive", Network::Masked),
            ("autoregressive", Network::Causal),
        ] {
            let net = model(&lat, scheme, phase, network);
            let label = match network {
                Network::Masked => scheme.to_string(),
                Network::Causal => format!("{scheme}+causal"),
            };
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let (s, _) = net.sample(1024, &mut rng).unwrap();
            g.bench_function(format!("{name}/{label}/sample_1024"), |b| {
                b.iter(|| net.sample(1024, &mut rng).unwrap())
            });
            g.bench_function(format!("{name}/{label}/log_psi_1024"), |b| {
                b.iter(|| net.log_psi(black_box(&s)).unwrap())
            });
            for optimizer in [Optimizer::Adam, Optimizer::Sr] {
                let cfg = VmcConfig {
                    samples: 1024,
                    optimizer,
                    ..VmcConfig::default()
                };
                let net = model(&lat, scheme, phase, network);
                let mut vmc = Vmc::new(net, h.as_operator(), cfg).unwrap();
                let opt = format!("{optimizer:?}").to_lowercase();
                g.bench_function(format!("{name}/{label}/iteration_1024_{opt}"), |b| {
                    b.iter(|| vmc.step().unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
