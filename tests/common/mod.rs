//! Helpers shared by the integration tests: closed-form reference values and tolerances,
//! enumeration of small spaces, and running the CLI.

#![allow(dead_code)]

use rgdiff::exact::closed_form;

/// Ground-state energy of the periodic TFIM chain of even length `n` (free fermions; the
/// library's closed form, see `rgdiff::exact::closed_form`).
pub fn tfim_chain_e0(n: usize, j: f64, h: f64) -> f64 {
    closed_form::tfim_chain_e0(n, j, h).expect("the formula holds for even n")
}

/// Ground-state energy of the periodic harmonic chain (normal modes; the library's closed form).
pub fn harmonic_chain_e0(n: usize, m2: f64) -> f64 {
    closed_form::harmonic_chain_e0(n, m2)
}

/// Relative difference `|a - b| / max(|b|, 1e-300)`.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// Asserts `|got - want| <= tol * |want|`.
#[track_caller]
pub fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        rel(got, want) <= tol,
        "{what}: got {got:.15}, want {want:.15} (relative error {:.3e} > {tol:.1e})",
        rel(got, want)
    );
}

/// Flattened gradient of a scalar by one backward pass, in the model's parameter order
/// (zeros for parameters the scalar does not depend on).
pub fn flat_grad(m: &rgdiff::model::MaskedDiffusion, x: &candle_core::Tensor) -> Vec<f64> {
    let g = x.backward().unwrap();
    let mut out = Vec::new();
    for (_, p) in m.params() {
        match g.get(p.as_tensor()) {
            Some(t) => out.extend(
                t.to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap(),
            ),
            None => out.extend(std::iter::repeat_n(0.0, p.elem_count())),
        }
    }
    out
}

/// `<psi|H|psi> / <psi|psi>` with the dense matrix `H[s', s]` of `op`, for a wavefunction
/// given by `log psi` on every configuration of the space (enumeration order).
pub fn rayleigh_quotient(
    op: &dyn rgdiff::operator::Operator,
    lpsi: &[num_complex::Complex64],
) -> num_complex::Complex64 {
    let hm = rgdiff::exact::dense::dense_matrix(op);
    let psi: Vec<num_complex::Complex64> = lpsi.iter().map(|l| l.exp()).collect();
    let mut num = num_complex::Complex64::new(0.0, 0.0);
    for r in 0..psi.len() {
        for c in 0..psi.len() {
            num += psi[r].conj() * hm[(r, c)] * psi[c];
        }
    }
    num / psi.iter().map(|p| p.norm_sqr()).sum::<f64>()
}

/// Every configuration of `h` (row-major, `h.n_sites` entries each), in index order.
pub fn all_configs(h: rgdiff::hilbert::Hilbert) -> Vec<u8> {
    let dim = h.dim().unwrap() as usize;
    let n = h.n_sites;
    let mut out = vec![0u8; dim * n];
    for i in 0..dim {
        h.config_of(i as u64, &mut out[i * n..(i + 1) * n]);
    }
    out
}

/// Runs the `rgdiff` binary with `args`.
pub fn rgdiff(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rgdiff"))
        .args(args)
        .output()
        .expect("the rgdiff binary runs")
}

/// The `summary.json` of the run directory `dir`.
pub fn read_summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Writes the periodic spin-1/2 Heisenberg chain of `n` sites (`J = 1`) as `dir/heisN.toml`
/// and returns its path.
pub fn heisenberg_chain_file(dir: &std::path::Path, n: usize) -> String {
    let file = dir.join(format!("heis{n}.toml"));
    std::fs::write(
        &file,
        format!(
            "[lattice]\nshape = \"chain\"\nsize = [{n}]\n[model]\nkind = \"heisenberg\"\nJ = 1\n"
        ),
    )
    .unwrap();
    file.display().to_string()
}
