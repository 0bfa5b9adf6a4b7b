//! Hot paths of exact diagonalization: the matrix-free matvec in each kind of basis, and the
//! `connected` call (the VMC local-energy primitive) of every shipped Hamiltonian file.
//! Run with `cargo bench --bench matvec`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rgdiff::exact::basis::{matvec, FullBasis, SpinBasis, SymmetricBasis, SzBasis};
use rgdiff::lattice::{Boundary, Lattice};
use rgdiff::operator::{Connections, Hamiltonian, Model, PauliSum};
use rgdiff::spec;
use std::hint::black_box;
use std::path::Path;

fn pauli(model: &Model, lattice: &Lattice) -> PauliSum {
    match Hamiltonian::compile(model.hilbert(lattice), &model.terms(lattice)) {
        Hamiltonian::Pauli(p) => p,
        Hamiltonian::Local(_) => unreachable!("spin model"),
    }
}

fn bench_basis<B: SpinBasis>(c: &mut Criterion, name: &str, h: &PauliSum, basis: &B) {
    let x = vec![1.0f64; basis.dim()];
    let mut y = vec![0.0f64; basis.dim()];
    let mut g = c.benchmark_group("matvec");
    g.throughput(Throughput::Elements(basis.dim() as u64));
    g.sample_size(10);
    g.bench_function(name, |b| b.iter(|| matvec(h, basis, black_box(&x), &mut y)));
    g.finish();
}

fn matvecs(c: &mut Criterion) {
    let chain20 = Lattice::chain(20, Boundary::Periodic);
    let heis = pauli(&Model::Heisenberg { j: 1.0 }, &chain20);
    bench_basis(c, "heisenberg_chain_20_sz0", &heis, &SzBasis::new(20, 10));
    bench_basis(
        c,
        "heisenberg_chain_20_sz0_k0_p+",
        &heis,
        &SymmetricBasis::new(&chain20, Some([0, 0]), Some(1), Some(10)),
    );
    let chain16 = Lattice::chain(16, Boundary::Periodic);
    let tfim = pauli(
        &Model::Tfim {
            j: 1.0,
            h: 1.0,
            g: 0.0,
        },
        &chain16,
    );
    bench_basis(c, "tfim_chain_16_full", &tfim, &FullBasis::new(16));
}

/// `connected` of every shipped Hamiltonian (`hamiltonians/*.toml`), on one fixed
/// configuration (not a fully polarised one, which has few connections).
fn connected(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hamiltonians");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("hamiltonians/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut g = c.benchmark_group("connected");
    for file in files {
        let problem = spec::load(&file).expect("a shipped problem");
        let (lat, model) = (&problem.lattice, &problem.model);
        let h = Hamiltonian::compile(model.hilbert(lat), &model.terms(lat));
        let op = h.as_operator();
        let d = model.local_space().dim() as u8;
        let s: Vec<u8> = (0..lat.n_sites()).map(|i| (i as u8 * 7 + 3) % d).collect();
        let mut conn = Connections::new();
        g.bench_function(&problem.name, |b| {
            b.iter(|| op.connected(black_box(&s), &mut conn))
        });
    }
    g.finish();
}

criterion_group!(benches, matvecs, connected);
criterion_main!(benches);
