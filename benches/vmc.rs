//! Hot paths of the variational solver per schedule (`rg`, `rg-colors=2`, `autoregressive`):
//! batched `log psi`, exact sampling, and one whole VMC iteration (1024 samples), on the TFIM
//! chain of 16 and the Heisenberg 4x4 square. Run with `cargo bench --bench vmc`.

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::model::{MaskedDiffusion, ModelConfig, Phase};
use rgdiff::operator::{Hamiltonian, Model};
use rgdiff::rg::Schedule;
use rgdiff::vmc::{Vmc, VmcConfig};
use std::hint::black_box;

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

fn model(lat: &Lattice, scheme: &str, phase: Phase) -> MaskedDiffusion {
    let cfg = ModelConfig {
        phase,
        ..ModelConfig::default()
    };
    let sched = Schedule::parse(scheme, lat).unwrap();
    MaskedDiffusion::new(lat, 2, sched, cfg, &Device::Cpu, DType::F32, 1).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmc");
    g.sample_size(10);
    for (name, lat, m, phase) in cases() {
        let h = Hamiltonian::compile(m.hilbert(&lat), &m.terms(&lat));
        for scheme in ["rg", "rg-colors=2", "autoregressive"] {
            let net = model(&lat, scheme, phase);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let (s, _) = net.sample(1024, &mut rng).unwrap();
            g.bench_function(format!("{name}/{scheme}/sample_1024"), |b| {
                b.iter(|| net.sample(1024, &mut rng).unwrap())
            });
            g.bench_function(format!("{name}/{scheme}/log_psi_1024"), |b| {
                b.iter(|| net.log_psi(black_box(&s)).unwrap())
            });
            let cfg = VmcConfig {
                samples: 1024,
                ..VmcConfig::default()
            };
            let mut vmc = Vmc::new(model(&lat, scheme, phase), h.as_operator(), cfg).unwrap();
            g.bench_function(format!("{name}/{scheme}/iteration_1024"), |b| {
                b.iter(|| vmc.step().unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
