//! Every kind of mistake in a problem file is refused with `Error::Spec` naming the file, the
//! exact line, the dotted field and what was expected.

use std::path::{Path, PathBuf};

use rgdiff::exact::ExactOptions;
use rgdiff::operator::{Connections, Hamiltonian};
use rgdiff::spec::{load, parse};
use rgdiff::Error;

/// Joins lines with newlines, so that the line of `lines[i]` is `i + 1`.
fn doc<S: AsRef<str>>(lines: &[S]) -> String {
    lines.iter().map(|l| format!("{}\n", l.as_ref())).collect()
}

/// Asserts that `err` is a spec error at `file:line` on `field` whose message contains `phrase`.
fn assert_spec(err: Error, file: &str, line: usize, field: &str, phrase: &str) {
    let shown = err.to_string();
    match &err {
        Error::Spec {
            file: f,
            line: l,
            field: fd,
            message,
        } => {
            assert_eq!(f, file, "{shown}");
            assert_eq!(*l, line, "{shown}");
            assert_eq!(fd, field, "{shown}");
            assert!(message.contains(phrase), "{shown}\nwanted: {phrase}");
        }
        other => panic!("expected Error::Spec, got {other:?}"),
    }
    let prefix = format!("{file}:{line}: `{field}`: ");
    assert!(
        shown.starts_with(&prefix),
        "{shown}\nwanted prefix: {prefix}"
    );
    assert!(shown.contains(phrase), "{shown}");
}

/// Parses `lines` as `bad.toml` and checks the refusal.
fn refused<S: AsRef<str>>(lines: &[S], line: usize, field: &str, phrase: &str) {
    let text = doc(lines);
    match parse(&text, "bad.toml") {
        Ok(p) => panic!("accepted a bad file: {:?}\n{text}", p.model),
        Err(e) => assert_spec(e, "bad.toml", line, field, phrase),
    }
}

const CHAIN8: [&str; 3] = ["[lattice]", "shape = \"chain\"", "size = [8]"];

/// A chain of 8 sites (lines 1-3) followed by `model` (from line 4).
fn on_chain(model: &[&str]) -> Vec<String> {
    CHAIN8.iter().chain(model).map(|l| l.to_string()).collect()
}

fn bad_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bad")
        .join(name)
}

// --- syntax and unknown keys -------------------------------------------------------------------

#[test]
fn toml_syntax_error_has_its_line() {
    refused(
        &["[lattice]", "shape = \"chain\"", "size = [16", "[model]"],
        4,
        "toml",
        "invalid TOML",
    );
    refused(
        &["[lattice]", "shape = chain", "size = [4]"],
        2,
        "toml",
        "invalid TOML",
    );
}

#[test]
fn unknown_top_level_key() {
    refused(
        &[
            "[lattice]",
            "shape = \"chain\"",
            "size = [4]",
            "[model]",
            "kind = \"heisenberg\"",
            "J = 1",
            "[output]",
            "dir = \"x\"",
        ],
        7,
        "output",
        "unknown key at the top level; expected one of: lattice, model",
    );
}

#[test]
fn unknown_lattice_key_with_suggestion() {
    refused(
        &["[lattice]", "shape = \"chain\"", "sise = [4]"],
        3,
        "lattice.sise",
        "expected one of: shape, size, boundary (did you mean `size`?)",
    );
}

#[test]
fn key_of_another_kind_is_refused_naming_the_kinds_keys() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"tfim\"",
            "J = 1",
            "h = 1",
            "delta = 0.5",
        ]),
        8,
        "model.delta",
        "unknown key for a tfim model; expected one of: J, h, g",
    );
}

#[test]
fn unknown_term_key() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"X\"]",
            "on = \"sites\"",
            "[[model.term]]",
            "ops = [\"Z\"]",
            "on = \"sites\"",
            "coef = 2",
        ]),
        12,
        "model.term[1].coef",
        "unknown key in a term; expected one of: ops, on, coeff",
    );
}

// --- missing keys and tables -------------------------------------------------------------------

#[test]
fn missing_lattice_table_is_reported_on_line_1() {
    refused(
        &["", "[model]", "kind = \"heisenberg\"", "J = 1"],
        1,
        "lattice",
        "missing; a problem file needs a [lattice] table",
    );
}

#[test]
fn missing_required_parameter_is_reported_at_model_header() {
    refused(
        &on_chain(&["", "[model]", "kind = \"tfim\"", "J = 1.0"]),
        5,
        "model.h",
        "missing; the tfim model needs J and h",
    );
}

#[test]
fn missing_kind_lists_the_kinds() {
    refused(
        &on_chain(&["[model]", "J = 1.0"]),
        4,
        "model.kind",
        "missing; expected one of: tfim, heisenberg, xxz, j1j2, phi4, terms",
    );
}

#[test]
fn missing_size_names_the_shape_needs() {
    refused(
        &["# square", "[lattice]", "shape = \"square\""],
        2,
        "lattice.size",
        "missing; a square needs size = [Lx, Ly]",
    );
}

// --- types and names ---------------------------------------------------------------------------

#[test]
fn string_where_a_number_is_expected() {
    refused(
        &on_chain(&["[model]", "kind = \"xxz\"", "J = \"1.0\"", "delta = 1"]),
        6,
        "model.J",
        "expected a number, found a string",
    );
}

#[test]
fn table_where_a_table_is_not_expected() {
    refused(
        &["lattice = 3"],
        1,
        "lattice",
        "expected a table, found an integer",
    );
}

#[test]
fn unknown_shape_lists_the_shapes() {
    refused(
        &["[lattice]", "shape = \"hex\"", "size = [4]"],
        2,
        "lattice.shape",
        "unknown shape \"hex\"; expected one of: chain, square",
    );
}

#[test]
fn unknown_boundary_lists_the_boundaries() {
    refused(
        &[
            "[lattice]",
            "shape = \"chain\"",
            "size = [4]",
            "boundary = \"twisted\"",
        ],
        4,
        "lattice.boundary",
        "unknown boundary \"twisted\"; expected one of: periodic, open",
    );
}

#[test]
fn unknown_kind_from_a_file() {
    let path = bad_file("unknown_kind.toml");
    let err = load(&path).unwrap_err();
    assert_spec(
        err,
        &path.display().to_string(),
        7,
        "model.kind",
        "unknown model kind \"potts\"; expected one of: tfim, heisenberg",
    );
}

// --- sizes -------------------------------------------------------------------------------------

#[test]
fn chain_size_with_two_entries() {
    refused(
        &["[lattice]", "shape = \"chain\"", "", "size = [4, 4]"],
        4,
        "lattice.size",
        "a chain needs size = [N], found 2 entries",
    );
}

#[test]
fn square_size_with_one_entry_or_a_bare_integer() {
    refused(
        &["[lattice]", "shape = \"square\"", "size = [4]"],
        3,
        "lattice.size",
        "a square needs size = [Lx, Ly], found 1 entries",
    );
    refused(
        &["[lattice]", "shape = \"square\"", "size = 4"],
        3,
        "lattice.size",
        "expected an array (a square needs size = [Lx, Ly]), found an integer (4)",
    );
}

#[test]
fn zero_sites() {
    refused(
        &[
            "[lattice]",
            "shape = \"square\"",
            "size = [",
            "  4,",
            "  0,",
            "]",
        ],
        5,
        "lattice.size[1]",
        "zero sites",
    );
}

#[test]
fn negative_size() {
    refused(
        &["[lattice]", "shape = \"chain\"", "size = [-4]"],
        3,
        "lattice.size[0]",
        "expected a non-negative integer, found -4",
    );
}

#[test]
fn spin_models_beyond_64_sites_load_and_exact_diagonalisation_refuses_them() {
    // 72 spins: no u64 packing, so the Hamiltonian takes the local-matrix form (checked
    // against the Pauli form on small lattices in tests/exact_physics.rs).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spins_72.toml");
    let problem = load(&path).expect("72 spins load for variational runs");
    assert_eq!(problem.lattice.n_sites(), 72);
    let hilbert = problem.model.hilbert(&problem.lattice);
    let h = Hamiltonian::compile(hilbert, &problem.model.terms(&problem.lattice));
    assert!(matches!(h, Hamiltonian::Local(_)));
    // On the Neel state of the open 9 x 8 square (127 bonds, all antiparallel), S_i . S_j
    // gives -1/4 on the diagonal per bond and one exchange of amplitude 1/2 per bond.
    let lat = &problem.lattice;
    assert_eq!(lat.bonds().len(), 127);
    let neel: Vec<u8> = (0..72)
        .map(|i| u8::from(lat.sublattice_sign(i) < 0))
        .collect();
    let mut conn = Connections::new();
    h.as_operator().connected(&neel, &mut conn);
    assert!(
        (conn.diag.re + 127.0 / 4.0).abs() < 1e-12,
        "{:?}",
        conn.diag
    );
    // The X X and Y Y parts of a bond reach the same configuration once merged.
    assert_eq!(conn.len(), 127);
    let distinct: std::collections::BTreeSet<&[u8]> = (0..127).map(|k| conn.config(k)).collect();
    assert_eq!(distinct.len(), 127);
    assert!(conn
        .values
        .iter()
        .all(|v| (v.re - 0.5).abs() < 1e-12 && v.im == 0.0));
    // A ferromagnetic state: every bond parallel, X X and Y Y cancel, nothing is connected.
    h.as_operator().connected(&[0u8; 72], &mut conn);
    assert!(conn.is_empty() && (conn.diag.re - 127.0 / 4.0).abs() < 1e-12);
    let err = rgdiff::exact::solve(&problem.lattice, &problem.model, &ExactOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("exact diagonalization of"), "{err}");
}

// --- phi4 --------------------------------------------------------------------------------------

#[test]
fn phi4_cutoff_below_two() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "m2 = 1",
            "lambda = 0.1",
            "cutoff = 1",
        ]),
        8,
        "model.cutoff",
        "cutoff must be an integer >= 2, found 1",
    );
}

#[test]
fn phi4_unknown_basis_lists_the_bases() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "m2 = 1",
            "lambda = 0.1",
            "cutoff = 6",
            "basis = \"harmonic\"",
        ]),
        9,
        "model.basis",
        "unknown basis \"harmonic\"; expected one of: fock, local",
    );
}

#[test]
fn phi4_cutoff_above_255_or_not_an_integer() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "cutoff = 300",
            "m2 = 1",
            "lambda = 0.1",
        ]),
        6,
        "model.cutoff",
        "cutoff must be at most 255",
    );
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "cutoff = 4.5",
            "m2 = 1",
            "lambda = 0.1",
        ]),
        6,
        "model.cutoff",
        "expected an integer >= 2, found a float (4.5)",
    );
}

#[test]
fn phi4_omega_not_positive() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "m2 = 1",
            "lambda = 0.1",
            "cutoff = 4",
            "omega = 0",
        ]),
        9,
        "model.omega",
        "omega must be > 0, found 0",
    );
}

#[test]
fn non_finite_numbers() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"phi4\"",
            "m2 = nan",
            "lambda = 0.1",
            "cutoff = 4",
        ]),
        6,
        "model.m2",
        "expected a finite number, found a float (nan)",
    );
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"X\"]",
            "on = \"sites\"",
            "coeff = [1.0, -inf]",
        ]),
        9,
        "model.term[0].coeff[1]",
        "expected a finite number, found a float (-inf)",
    );
}

// --- terms -------------------------------------------------------------------------------------

#[test]
fn terms_without_any_term() {
    refused(
        &on_chain(&["", "[model]", "kind = \"terms\""]),
        5,
        "model.term",
        "missing; the terms model needs at least one [[model.term]] entry",
    );
    refused(
        &on_chain(&["[model]", "kind = \"terms\"", "term = []"]),
        6,
        "model.term",
        "no terms",
    );
}

#[test]
fn unknown_operator_lists_the_operators() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"Z\",",
            "       \"W\"]",
            "on = \"bonds\"",
        ]),
        8,
        "model.term[0].ops",
        "unknown operator \"W\"; expected one of: X, Y, Z, Sp, Sm, Sz (spin) or a, adag, n, phi, pi (oscillator)",
    );
}

#[test]
fn mixing_spin_and_oscillator_operators() {
    let path = bad_file("mixed_ops.toml");
    let err = load(&path).unwrap_err();
    assert_spec(
        err,
        &path.display().to_string(),
        16,
        "model.term[1].ops",
        "oscillator operator phi mixed with spin operator Z (model.term[0].ops, line 12)",
    );
}

#[test]
fn empty_ops() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "on = \"sites\"",
            "ops = []",
        ]),
        8,
        "model.term[0].ops",
        "ops is empty",
    );
}

#[test]
fn bonds_need_two_operators() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"X\", \"X\", \"X\"]",
            "on = \"next-bonds\"",
        ]),
        8,
        "model.term[0].on",
        "on = \"next-bonds\" acts on pairs of sites and needs exactly 2 operators, found 3",
    );
}

#[test]
fn site_tuple_length_must_match_ops() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"Sp\", \"Sm\"]",
            "on = [",
            "  [0, 1],",
            "  [2, 3, 4],",
            "]",
        ]),
        10,
        "model.term[0].on[1]",
        "site tuple has 3 sites but the term has 2 operators",
    );
}

#[test]
fn site_index_out_of_range() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"Z\", \"Z\"]",
            "on = [[0, 7], [7, 8]]",
        ]),
        8,
        "model.term[0].on[1]",
        "site 8 is out of range; the lattice has 8 sites",
    );
}

#[test]
fn coeff_must_be_a_number_or_a_pair() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"Z\"]",
            "on = \"sites\"",
            "coeff = \"-1\"",
        ]),
        9,
        "model.term[0].coeff",
        "expected a number or [re, im], found a string",
    );
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "[[model.term]]",
            "ops = [\"Z\"]",
            "on = \"sites\"",
            "coeff = [1, 2, 3]",
        ]),
        9,
        "model.term[0].coeff",
        "expected a number or [re, im], found an array of 3 elements",
    );
}

#[test]
fn oscillator_operators_need_a_cutoff() {
    refused(
        &on_chain(&[
            "",
            "[model]",
            "kind = \"terms\"",
            "omega = 1.0",
            "[[model.term]]",
            "ops = [\"phi\", \"phi\"]",
            "on = \"bonds\"",
        ]),
        5,
        "model.cutoff",
        "missing; oscillator operators (phi in model.term[0].ops) need model.cutoff",
    );
}

#[test]
fn spin_operators_refuse_a_cutoff() {
    refused(
        &on_chain(&[
            "[model]",
            "kind = \"terms\"",
            "cutoff = 4",
            "[[model.term]]",
            "ops = [\"Z\", \"Z\"]",
            "on = \"bonds\"",
        ]),
        6,
        "model.cutoff",
        "cutoff only applies to oscillator operators",
    );
}

// --- files -------------------------------------------------------------------------------------

#[test]
fn nonexistent_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_problem.toml");
    match load(&path) {
        Err(Error::Io { file, message }) => {
            assert_eq!(file, path.display().to_string());
            assert!(message.contains("cannot read"), "{message}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    let shown = load(&path).unwrap_err().to_string();
    assert!(shown.contains("no_such_problem.toml"), "{shown}");
}

#[test]
fn good_file_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ising8.toml");
    std::fs::write(
        &path,
        doc(&on_chain(&["[model]", "kind = \"tfim\"", "J = 1", "h = 1"])),
    )
    .unwrap();
    let p = load(&path).unwrap();
    assert_eq!(p.name, "ising8");
    assert_eq!(p.path, path.display().to_string());
    assert_eq!(p.lattice.n_sites(), 8);
}

// --- classical theories --------------------------------------------------------------------------

fn refused_classical<S: AsRef<str>>(lines: &[S], line: usize, field: &str, phrase: &str) {
    let text = doc(lines);
    match rgdiff::spec::parse_classical(&text, "bad.toml") {
        Ok(p) => panic!("accepted a bad file: {:?}\n{text}", p.theory),
        Err(e) => assert_spec(e, "bad.toml", line, field, phrase),
    }
}

#[test]
fn classical_theories_parse() {
    use rgdiff::field::Theory;
    let p = rgdiff::spec::parse_classical(
        &doc(&on_chain(&[
            "[model]",
            "kind = \"ising\"",
            "beta = 0.5",
            "J = 1",
        ])),
        "i.toml",
    )
    .unwrap();
    assert_eq!(
        p.theory,
        Theory::Ising {
            beta: 0.5,
            j: 1.0,
            h: 0.0
        }
    );
    let p = rgdiff::spec::parse_classical(
        &doc(&on_chain(&[
            "[model]",
            "kind = \"phi4-classical\"",
            "m2 = -4",
            "lambda = 8",
        ])),
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        p.theory,
        Theory::Phi4 {
            m2: -4.0,
            lambda: 8.0
        }
    );
    // Classical lattices are not limited to 64 sites.
    let big = "[lattice]\nshape = \"square\"\nsize = [32, 32]\n[model]\nkind = \"ising\"\nbeta = 0.4\nJ = 1\nh = 0.1\n";
    assert_eq!(
        rgdiff::spec::parse_classical(big, "b.toml")
            .unwrap()
            .lattice
            .n_sites(),
        1024
    );
}

#[test]
fn shipped_classical_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hamiltonians");
    for name in [
        "ising_square_8",
        "ising_square_16",
        "phi4_square_8",
        "phi4_square_6_critical",
        "phi4_square_8_critical",
        "phi4_square_10_critical",
        "phi4_square_12_critical",
        "phi4_square_14_critical",
    ] {
        let p = rgdiff::spec::load_classical(&dir.join(format!("{name}.toml"))).unwrap();
        assert_eq!(p.name, name);
    }
}

#[test]
fn classical_keys_are_checked() {
    refused_classical(
        &on_chain(&["[model]", "kind = \"ising\"", "J = 1"]),
        4,
        "model.beta",
        "missing; the ising model needs beta and J",
    );
    refused_classical(
        &on_chain(&["[model]", "kind = \"ising\"", "beta = 0.4", "J = 1", "lambda = 1"]),
        8,
        "model.lambda",
        "unknown key for a ising model; expected one of: beta, J, h (lambda belongs to the phi4 and phi4-classical models)",
    );
    refused_classical(
        &on_chain(&[
            "[model]",
            "kind = \"phi4-classical\"",
            "m2 = 1",
            "lambda = -1",
        ]),
        7,
        "model.lambda",
        "lambda must be >= 0",
    );
    refused_classical(
        &on_chain(&["[model]", "kind = \"ising\"", "beta = \"hot\"", "J = 1"]),
        6,
        "model.beta",
        "expected a number, found a string (\"hot\")",
    );
}

#[test]
fn classical_files_with_bad_values() {
    let path = bad_file("ising_negative_beta.toml");
    let err = rgdiff::spec::load_classical(&path).unwrap_err();
    assert_spec(
        err,
        &path.display().to_string(),
        8,
        "model.beta",
        "beta (the inverse temperature) must be >= 0, found -0.44",
    );
    let path = bad_file("phi4_unbounded.toml");
    let err = rgdiff::spec::load_classical(&path).unwrap_err();
    assert_spec(
        err,
        &path.display().to_string(),
        8,
        "model.m2",
        "with lambda = 0 the theory is Gaussian and needs m2 > 0",
    );
}

#[test]
fn quantum_and_classical_files_name_the_right_command() {
    let ising = doc(&on_chain(&[
        "[model]",
        "kind = \"ising\"",
        "beta = 0.4",
        "J = 1",
    ]));
    match parse(&ising, "c.toml") {
        Err(e) => assert_spec(e, "c.toml", 5, "model.kind", "\"ising\" is a classical lattice theory, not a Hamiltonian; sample it with `rgdiff sample c.toml`"),
        Ok(_) => panic!("a classical theory was accepted as a Hamiltonian"),
    }
    let tfim = doc(&on_chain(&["[model]", "kind = \"tfim\"", "J = 1", "h = 1"]));
    match rgdiff::spec::parse_classical(&tfim, "q.toml") {
        Err(e) => assert_spec(
            e,
            "q.toml",
            5,
            "model.kind",
            "\"tfim\" is a quantum Hamiltonian; `rgdiff sample` needs a classical theory",
        ),
        Ok(_) => panic!("a Hamiltonian was accepted as a classical theory"),
    }
}
