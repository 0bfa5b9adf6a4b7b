//! Problem files: a lattice and a Hamiltonian, written in TOML and checked when read.
//!
//! ```toml
//! [lattice]
//! shape = "chain"          # "chain" | "square"
//! size = [16]              # [N] (or a bare 16) for a chain, [Lx, Ly] for a square
//! boundary = "periodic"    # "periodic" (default) | "open"
//!
//! [model]
//! kind = "tfim"            # "tfim" | "heisenberg" | "xxz" | "j1j2" | "phi4" | "terms"
//!                          # classical: "ising" | "phi4-classical"
//! J = 1.0
//! h = 0.5
//! ```
//!
//! Keys of `[model]` per kind (integers are accepted wherever a number is expected):
//! - `tfim`: `J`, `h` required; `g` optional (default 0).
//! - `heisenberg`: `J`.
//! - `xxz`: `J`, `delta`.
//! - `j1j2`: `J1`, `J2` required; `delta` optional (default 1).
//! - `phi4`: `m2`, `lambda`, `cutoff` (integer, 2..=255) required; `omega` optional (> 0),
//!   default `sqrt(m2 + 2 dim)` when that is positive and 1 otherwise (`dim` = 1 for a chain,
//!   2 for a square).
//! - `ising` (classical): `beta` (>= 0) and `J` required, `h` optional (default 0);
//!   `E = -J sum_<ij> s_i s_j - h sum_i s_i`, weight `exp(-beta E)`.
//! - `phi4-classical`: `m2`, `lambda` (>= 0; `m2 > 0` when `lambda = 0`);
//!   `S = sum_<xy> (phi_x - phi_y)^2 + sum_x [m2 phi_x^2 + lambda phi_x^4]`, weight `exp(-S)`.
//!
//! [`load`]/[`parse`] read Hamiltonians and refuse classical theories at `model.kind` (and
//! [`load_classical`]/[`parse_classical`] the reverse), so `rgdiff exact` on an Ising file and
//! `rgdiff sample` on a TFIM file both say which command to use.
//! - `terms`: one `[[model.term]]` table per term, with `ops = ["Z", "Z"]` (spin operators
//!   `X Y Z Sp Sm Sz` or oscillator operators `a adag n phi pi`, never both in one model),
//!   `on = "bonds" | "next-bonds" | "sites" | [[0, 1], ...]` and optional `coeff = -1.0` or
//!   `[re, im]` (default 1). `model.cutoff` and `model.omega` are required when the operators
//!   are oscillator operators and refused when they are spin operators.
//!
//! Every lattice is limited to [`MAX_SITES`] sites. Spin models of more than 64 sites are
//! accepted for variational runs (their Hamiltonian takes the local-matrix form, see
//! [`crate::operator::MAX_PAULI_SITES`]); exact diagonalisation refuses them by size.
//!
//! Every mistake is reported as [`Error::Spec`] with the file, the 1-based line of the
//! offending key (or of the enclosing table header when a key is missing, or line 1 when a
//! whole table is missing), the dotted field (`model.term[2].ops`) and what was expected.

use std::path::Path;

use num_complex::Complex64;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::field::Theory;
use crate::hilbert::LocalSpace;
use crate::lattice::{Boundary, Lattice, Shape};
use crate::operator::local_ops::LocalOp;
use crate::operator::models::{Model, OscillatorBasis, Support, TermSpec};

/// Largest lattice accepted for any model (2048 x 2048).
pub const MAX_SITES: usize = 1 << 22;
/// Largest oscillator cutoff: local basis indices are stored in a `u8`.
pub const MAX_CUTOFF: usize = 255;

/// A checked problem file.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The file as named by the caller.
    pub path: String,
    /// The file stem, used to name outputs.
    pub name: String,
    pub lattice: Lattice,
    pub model: Model,
}

/// A checked classical theory file (`kind = "ising"` or `kind = "phi4-classical"`).
#[derive(Clone, Debug)]
pub struct ClassicalProblem {
    /// The file as named by the caller.
    pub path: String,
    /// The file stem, used to name outputs.
    pub name: String,
    pub lattice: Lattice,
    pub theory: Theory,
}

/// Either kind of problem file.
#[derive(Clone, Debug)]
pub enum AnyProblem {
    /// A Hamiltonian (`rgdiff exact`, `rgdiff ground-state`).
    Quantum(Problem),
    /// A classical lattice theory (`rgdiff sample`).
    Classical(ClassicalProblem),
}

fn read_text(path: &Path) -> Result<(String, String)> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        file: file.clone(),
        message: format!("cannot read problem file: {e}"),
    })?;
    Ok((text, file))
}

/// Reads and checks the Hamiltonian file at `path` (a classical theory is refused).
pub fn load(path: &Path) -> Result<Problem> {
    let (text, file) = read_text(path)?;
    parse(&text, &file)
}

/// Reads and checks the classical theory file at `path` (a Hamiltonian is refused).
pub fn load_classical(path: &Path) -> Result<ClassicalProblem> {
    let (text, file) = read_text(path)?;
    parse_classical(&text, &file)
}

/// Checks the Hamiltonian file contents `text`; `file` names it in messages and in [`Problem`].
/// A classical theory is refused with an error at `model.kind` that names `rgdiff sample`.
pub fn parse(text: &str, file: &str) -> Result<Problem> {
    match parse_any(text, file)? {
        AnyProblem::Quantum(p) => Ok(p),
        AnyProblem::Classical(c) => Err(wrong_family(
            text,
            file,
            &format!(
                "{:?} is a classical lattice theory, not a Hamiltonian; sample it with \
                 `rgdiff sample {file}`",
                c.theory.kind()
            ),
        )),
    }
}

/// Checks a classical theory file; a Hamiltonian is refused with an error at `model.kind`.
pub fn parse_classical(text: &str, file: &str) -> Result<ClassicalProblem> {
    match parse_any(text, file)? {
        AnyProblem::Classical(c) => Ok(c),
        AnyProblem::Quantum(p) => Err(wrong_family(
            text,
            file,
            &format!(
                "{:?} is a quantum Hamiltonian; `rgdiff sample` needs a classical theory \
                 (kind = \"ising\" or \"phi4-classical\"); solve this file with `rgdiff exact` \
                 or `rgdiff ground-state`",
                p.model.kind()
            ),
        )),
    }
}

/// An error at the `model.kind` key of a file already known to parse.
fn wrong_family(text: &str, file: &str, message: &str) -> Error {
    let cx = Cx { text, file };
    let at = DeTable::parse(text)
        .ok()
        .and_then(|doc| {
            let root = doc.get_ref();
            let (_, model) = root.iter().find(|(k, _)| k.get_ref() == "model")?;
            let DeValue::Table(t) = model.get_ref() else {
                return None;
            };
            t.iter()
                .find(|(k, _)| k.get_ref() == "kind")
                .map(|(k, _)| k.span().start)
        })
        .unwrap_or(0);
    cx.err(at, "model.kind", message)
}

/// Checks a problem file of either family.
pub fn parse_any(text: &str, file: &str) -> Result<AnyProblem> {
    let cx = Cx { text, file };
    let doc = DeTable::parse(text).map_err(|e| cx.syntax(&e))?;
    let root = Section {
        table: doc.get_ref(),
        path: String::new(),
        at: 0,
    };
    root.deny_unknown(&cx, &["lattice", "model"], "at the top level")?;
    let lat = root.subtable(&cx, "lattice", "a problem file needs a [lattice] table")?;
    let lattice = read_lattice(&cx, &lat)?;
    let model_sec = root.subtable(&cx, "model", "a problem file needs a [model] table")?;
    let name = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let model = match read_model(&cx, &model_sec, &lattice)? {
        Kind::Quantum(m) => m,
        Kind::Classical(theory) => {
            return Ok(AnyProblem::Classical(ClassicalProblem {
                path: file.to_string(),
                name,
                lattice,
                theory,
            }))
        }
    };
    Ok(AnyProblem::Quantum(Problem {
        path: file.to_string(),
        name,
        lattice,
        model,
    }))
}

/// 1-based line of the byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Val<'i> = Spanned<DeValue<'i>>;

/// The text being read, for turning byte offsets into located errors.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Cx<'_> {
    fn err(&self, offset: usize, field: &str, message: impl Into<String>) -> Error {
        Error::Spec {
            file: self.file.to_string(),
            line: line_of(self.text, offset),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> Error {
        let offset = e.span().map_or(0, |s| s.start);
        self.err(offset, "toml", format!("invalid TOML: {}", e.message()))
    }
}

/// A table with its dotted path and the offset of its header (for missing keys).
struct Section<'t, 'i> {
    table: &'t DeTable<'i>,
    path: String,
    at: usize,
}

impl<'t, 'i> Section<'t, 'i> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The key's span start and its value.
    fn entry(&self, key: &str) -> Option<(usize, &'t Val<'i>)> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, v)| (k.span().start, v))
    }

    fn get(&self, key: &str) -> Option<&'t Val<'i>> {
        self.entry(key).map(|(_, v)| v)
    }

    /// Refuses the first key (in file order) not in `allowed`; `owner` says whose keys they are.
    fn deny_unknown(&self, cx: &Cx, allowed: &[&str], owner: &str) -> Result<()> {
        let unknown = self
            .table
            .iter()
            .filter(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
            .min_by_key(|(k, _)| k.span().start);
        let Some((key, _)) = unknown else {
            return Ok(());
        };
        let name = key.get_ref().as_ref();
        let mut message = format!(
            "unknown key {owner}; expected one of: {}",
            allowed.join(", ")
        );
        if let Some(s) = suggest(name, allowed) {
            message.push_str(&format!(" (did you mean `{s}`?)"));
        }
        Err(cx.err(key.span().start, &self.field(name), message))
    }

    /// A missing key, reported at the table header with `why` it is needed.
    fn missing(&self, cx: &Cx, key: &str, why: &str) -> Error {
        cx.err(self.at, &self.field(key), format!("missing; {why}"))
    }

    /// The value of a required key.
    fn require(&self, cx: &Cx, key: &str, why: &str) -> Result<&'t Val<'i>> {
        self.get(key).ok_or_else(|| self.missing(cx, key, why))
    }

    /// A required sub-table, located at its key.
    fn subtable(&self, cx: &Cx, key: &str, why: &str) -> Result<Section<'t, 'i>> {
        let field = self.field(key);
        let Some((at, v)) = self.entry(key) else {
            return Err(self.missing(cx, key, why));
        };
        let table = expect_table(cx, &field, v)?;
        Ok(Section {
            table,
            path: field,
            at,
        })
    }

    fn number(&self, cx: &Cx, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| expect_f64(cx, &self.field(key), v))
            .transpose()
    }
}

/// A close match for a mistyped key: same letters in another case, or one or two edits away.
fn suggest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let near = |a: &str| {
        let d = edit_distance(&key.to_ascii_lowercase(), &a.to_ascii_lowercase());
        d == 0 || (d == 1 && key.len() >= 3) || (d == 2 && key.len() >= 5)
    };
    allowed.iter().copied().find(|a| near(a))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Values

/// "a string (\"x\")", "an integer (3)", ... for messages.
fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) => format!("a string ({s:?})"),
        DeValue::Integer(i) => format!("an integer ({i})"),
        DeValue::Float(f) => format!("a float ({f})"),
        DeValue::Boolean(b) => format!("a boolean ({b})"),
        DeValue::Datetime(d) => format!("a date-time ({d})"),
        DeValue::Array(a) => format!("an array of {} elements", a.len()),
        DeValue::Table(_) => "a table".to_string(),
    }
}

fn type_err(cx: &Cx, field: &str, v: &Val, expected: &str) -> Error {
    cx.err(
        v.span().start,
        field,
        format!("expected {expected}, found {}", describe(v.get_ref())),
    )
}

fn int_value(cx: &Cx, field: &str, v: &Val) -> Result<Option<i64>> {
    match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(Some)
            .map_err(|_| {
                cx.err(
                    v.span().start,
                    field,
                    format!("integer {i} is out of range"),
                )
            }),
        _ => Ok(None),
    }
}

/// A finite number; TOML integers are accepted.
fn expect_f64(cx: &Cx, field: &str, v: &Val) -> Result<f64> {
    let x = match v.get_ref() {
        DeValue::Integer(_) => int_value(cx, field, v)?.unwrap_or_default() as f64,
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .map_err(|_| cx.err(v.span().start, field, format!("cannot read the float {f}")))?,
        _ => return Err(type_err(cx, field, v, "a number")),
    };
    if !x.is_finite() {
        let found = describe(v.get_ref());
        return Err(cx.err(
            v.span().start,
            field,
            format!("expected a finite number, found {found}"),
        ));
    }
    Ok(x)
}

/// A non-negative integer.
fn expect_count(cx: &Cx, field: &str, v: &Val) -> Result<usize> {
    let Some(i) = int_value(cx, field, v)? else {
        return Err(type_err(cx, field, v, "a non-negative integer"));
    };
    usize::try_from(i).map_err(|_| {
        cx.err(
            v.span().start,
            field,
            format!("expected a non-negative integer, found {i}"),
        )
    })
}

fn expect_str<'t>(cx: &Cx, field: &str, v: &'t Val) -> Result<&'t str> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.as_ref()),
        _ => Err(type_err(cx, field, v, "a string")),
    }
}

fn expect_array<'t, 'i>(cx: &Cx, field: &str, v: &'t Val<'i>) -> Result<&'t [Val<'i>]> {
    match v.get_ref() {
        DeValue::Array(a) => Ok(a),
        _ => Err(type_err(cx, field, v, "an array")),
    }
}

fn expect_table<'t, 'i>(cx: &Cx, field: &str, v: &'t Val<'i>) -> Result<&'t DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Ok(t),
        _ => Err(type_err(cx, field, v, "a table")),
    }
}

/// A string from `allowed`; `what` names it in the message ("shape").
fn expect_choice<'a>(
    cx: &Cx,
    field: &str,
    v: &Val,
    what: &str,
    allowed: &[&'a str],
) -> Result<&'a str> {
    let s = expect_str(cx, field, v)?;
    allowed.iter().copied().find(|a| *a == s).ok_or_else(|| {
        let list = allowed.join(", ");
        cx.err(
            v.span().start,
            field,
            format!("unknown {what} {s:?}; expected one of: {list}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// [lattice]

const SHAPES: [&str; 2] = ["chain", "square"];
const BOUNDARIES: [&str; 2] = ["periodic", "open"];

/// Reads `[lattice]`; also returns the offset of the `size` key (where site limits are reported).
fn read_lattice(cx: &Cx, sec: &Section) -> Result<Lattice> {
    sec.deny_unknown(cx, &["shape", "size", "boundary"], "in [lattice]")?;
    let shape_v = sec.require(cx, "shape", "expected one of: chain, square")?;
    let shape = match expect_choice(cx, "lattice.shape", shape_v, "shape", &SHAPES)? {
        "chain" => Shape::Chain,
        _ => Shape::Square,
    };
    let needs = match shape {
        Shape::Chain => "a chain needs size = [N]",
        Shape::Square => "a square needs size = [Lx, Ly]",
    };
    let size_v = sec.require(cx, "size", needs)?;
    let size_at = sec.entry("size").map_or(sec.at, |(at, _)| at);
    let extent = read_size(cx, size_v, shape, needs)?;
    let boundary = match sec.get("boundary") {
        None => Boundary::Periodic,
        Some(v) => match expect_choice(cx, "lattice.boundary", v, "boundary", &BOUNDARIES)? {
            "periodic" => Boundary::Periodic,
            _ => Boundary::Open,
        },
    };
    let n = extent[0].checked_mul(extent[1]).filter(|&n| n <= MAX_SITES);
    if n.is_none() {
        return Err(cx.err(
            size_at,
            "lattice.size",
            format!(
                "too many sites ({} x {}); at most {MAX_SITES} are supported",
                extent[0], extent[1]
            ),
        ));
    }
    let lattice = match shape {
        Shape::Chain => Lattice::chain(extent[0], boundary),
        Shape::Square => Lattice::square(extent[0], extent[1], boundary),
    };
    Ok(lattice)
}

/// `size`: `[N]` or `N` for a chain, `[Lx, Ly]` for a square; every entry at least 1.
fn read_size(cx: &Cx, v: &Val, shape: Shape, needs: &str) -> Result<[usize; 2]> {
    let field = "lattice.size";
    let entries: Vec<(String, &Val)> = match v.get_ref() {
        DeValue::Integer(_) if shape == Shape::Chain => vec![(field.to_string(), v)],
        DeValue::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("{field}[{i}]"), e))
            .collect(),
        _ => return Err(type_err(cx, field, v, &format!("an array ({needs})"))),
    };
    let want = match shape {
        Shape::Chain => 1,
        Shape::Square => 2,
    };
    if entries.len() != want {
        return Err(cx.err(
            v.span().start,
            field,
            format!("{needs}, found {} entries", entries.len()),
        ));
    }
    let mut extent = [1usize; 2];
    for (slot, (f, e)) in extent.iter_mut().zip(&entries) {
        let l = expect_count(cx, f, e)?;
        if l == 0 {
            return Err(cx.err(
                e.span().start,
                f,
                "zero sites: every size entry must be at least 1",
            ));
        }
        *slot = l;
    }
    Ok(extent)
}

// ---------------------------------------------------------------------------------------------
// [model]

/// The keys of one model kind besides `kind`.
struct KindKeys {
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
}

const KINDS: [KindKeys; 8] = [
    KindKeys {
        name: "tfim",
        required: &["J", "h"],
        optional: &["g"],
    },
    KindKeys {
        name: "heisenberg",
        required: &["J"],
        optional: &[],
    },
    KindKeys {
        name: "xxz",
        required: &["J", "delta"],
        optional: &[],
    },
    KindKeys {
        name: "j1j2",
        required: &["J1", "J2"],
        optional: &["delta"],
    },
    KindKeys {
        name: "phi4",
        required: &["m2", "lambda", "cutoff"],
        optional: &["omega", "basis"],
    },
    KindKeys {
        name: "terms",
        required: &["term"],
        optional: &["cutoff", "omega"],
    },
    KindKeys {
        name: "ising",
        required: &["beta", "J"],
        optional: &["h"],
    },
    KindKeys {
        name: "phi4-classical",
        required: &["m2", "lambda"],
        optional: &[],
    },
];

/// A quantum Hamiltonian or a classical theory.
enum Kind {
    Quantum(Model),
    Classical(Theory),
}

impl KindKeys {
    fn all(&self) -> Vec<&'static str> {
        self.required.iter().chain(self.optional).copied().collect()
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Reads `[model]` for `lattice`.
fn read_model(cx: &Cx, sec: &Section, lattice: &Lattice) -> Result<Kind> {
    let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    let kind_v = sec.require(
        cx,
        "kind",
        &format!("expected one of: {}", names.join(", ")),
    )?;
    let kind = expect_choice(cx, "model.kind", kind_v, "model kind", &names)?;
    let keys = KINDS
        .iter()
        .find(|k| k.name == kind)
        .expect("kind is listed");
    deny_unknown_model_keys(cx, sec, keys)?;
    if let Some(key) = keys.required.iter().find(|k| sec.get(k).is_none()) {
        let why = if kind == "terms" {
            "the terms model needs at least one [[model.term]] entry".to_string()
        } else {
            format!("the {kind} model needs {}", and_list(keys.required))
        };
        return Err(sec.missing(cx, key, &why));
    }
    let num = |key: &str| -> Result<f64> {
        Ok(sec.number(cx, key)?.expect("required keys were checked"))
    };
    if kind == "ising" || kind == "phi4-classical" {
        return read_classical(cx, sec, kind).map(Kind::Classical);
    }
    Ok(Kind::Quantum(match kind {
        "tfim" => Model::Tfim {
            j: num("J")?,
            h: num("h")?,
            g: sec.number(cx, "g")?.unwrap_or(0.0),
        },
        "heisenberg" => Model::Heisenberg { j: num("J")? },
        "xxz" => Model::Xxz {
            j: num("J")?,
            delta: num("delta")?,
        },
        "j1j2" => Model::J1J2 {
            j1: num("J1")?,
            j2: num("J2")?,
            delta: sec.number(cx, "delta")?.unwrap_or(1.0),
        },
        "phi4" => read_phi4(cx, sec, lattice.dim())?,
        _ => read_terms(cx, sec, lattice.n_sites())?,
    }))
}

/// `ising` (`beta >= 0`, `J`, optional `h`) or `phi4-classical` (`m2`, `lambda >= 0`, and
/// `m2 > 0` when `lambda = 0`, so that `exp(-S)` is normalisable).
fn read_classical(cx: &Cx, sec: &Section, kind: &str) -> Result<Theory> {
    let num = |key: &str| -> Result<f64> { Ok(sec.number(cx, key)?.expect("required")) };
    let at = |key: &str| sec.get(key).map_or(sec.at, |v| v.span().start);
    if kind == "ising" {
        let beta = num("beta")?;
        if beta < 0.0 {
            return Err(cx.err(
                at("beta"),
                "model.beta",
                format!("beta (the inverse temperature) must be >= 0, found {beta}"),
            ));
        }
        return Ok(Theory::Ising {
            beta,
            j: num("J")?,
            h: sec.number(cx, "h")?.unwrap_or(0.0),
        });
    }
    let m2 = num("m2")?;
    let lambda = num("lambda")?;
    if lambda < 0.0 {
        return Err(cx.err(
            at("lambda"),
            "model.lambda",
            format!("lambda must be >= 0 (exp(-S) is not normalisable otherwise), found {lambda}"),
        ));
    }
    if lambda == 0.0 && m2 <= 0.0 {
        return Err(cx.err(
            at("m2"),
            "model.m2",
            format!(
                "with lambda = 0 the theory is Gaussian and needs m2 > 0 (exp(-S) is not \
                 normalisable otherwise), found {m2}"
            ),
        ));
    }
    Ok(Theory::Phi4 { m2, lambda })
}

/// Unknown keys of `[model]`, naming the kind's keys and the kinds a stray key belongs to.
fn deny_unknown_model_keys(cx: &Cx, sec: &Section, keys: &KindKeys) -> Result<()> {
    let mut allowed = keys.all();
    allowed.push("kind");
    let unknown = sec
        .table
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
        .min_by_key(|(k, _)| k.span().start);
    let Some((key, _)) = unknown else {
        return Ok(());
    };
    let name = key.get_ref().as_ref();
    let mut message = format!(
        "unknown key for a {} model; expected one of: {}",
        keys.name,
        keys.all().join(", ")
    );
    let owners: Vec<&str> = KINDS
        .iter()
        .filter(|k| k.all().contains(&name))
        .map(|k| k.name)
        .collect();
    if !owners.is_empty() {
        message.push_str(&format!(
            " ({name} belongs to the {} model{})",
            and_list(&owners),
            if owners.len() > 1 { "s" } else { "" }
        ));
    } else if let Some(s) = suggest(name, &keys.all()) {
        message.push_str(&format!(" (did you mean `{s}`?)"));
    }
    Err(cx.err(key.span().start, &sec.field(name), message))
}

/// `cutoff`: an integer in `2..=MAX_CUTOFF`.
fn read_cutoff(cx: &Cx, sec: &Section) -> Result<Option<usize>> {
    let Some(v) = sec.get("cutoff") else {
        return Ok(None);
    };
    let field = "model.cutoff";
    let Some(c) = int_value(cx, field, v)? else {
        return Err(type_err(cx, field, v, "an integer >= 2"));
    };
    if c < 2 {
        return Err(cx.err(
            v.span().start,
            field,
            format!("cutoff must be an integer >= 2, found {c}"),
        ));
    }
    if c > MAX_CUTOFF as i64 {
        return Err(cx.err(
            v.span().start,
            field,
            format!(
                "cutoff must be at most {MAX_CUTOFF} (local states are stored in a u8), found {c}"
            ),
        ));
    }
    Ok(Some(c as usize))
}

/// `omega`: a number > 0.
fn read_omega(cx: &Cx, sec: &Section) -> Result<Option<f64>> {
    let Some(w) = sec.number(cx, "omega")? else {
        return Ok(None);
    };
    if w <= 0.0 {
        let at = sec.get("omega").map_or(sec.at, |v| v.span().start);
        return Err(cx.err(at, "model.omega", format!("omega must be > 0, found {w}")));
    }
    Ok(Some(w))
}

/// `phi4`: `m2`, `lambda`, `cutoff`, optional `omega` (default `sqrt(m2 + 2 dim)`, or 1) and
/// `basis` (`fock`, the default, or `local`: the on-site eigenbasis).
fn read_phi4(cx: &Cx, sec: &Section, dim: usize) -> Result<Model> {
    let m2 = sec.number(cx, "m2")?.expect("required");
    let lambda = sec.number(cx, "lambda")?.expect("required");
    let cutoff = read_cutoff(cx, sec)?.expect("required");
    let omega = read_omega(cx, sec)?.unwrap_or_else(|| {
        let w2 = m2 + 2.0 * dim as f64;
        if w2 > 0.0 {
            w2.sqrt()
        } else {
            1.0
        }
    });
    let basis = match sec.get("basis") {
        None => OscillatorBasis::Fock,
        Some(v) => match expect_choice(cx, "model.basis", v, "basis", &["fock", "local"])? {
            "fock" => OscillatorBasis::Fock,
            _ => OscillatorBasis::Local,
        },
    };
    Ok(Model::Phi4 {
        m2,
        lambda,
        cutoff,
        omega,
        basis,
    })
}

// ---------------------------------------------------------------------------------------------
// kind = "terms"

const SUPPORTS: [&str; 3] = ["bonds", "next-bonds", "sites"];

/// An operator seen in a term, remembered to report mixed spin and oscillator models.
struct FirstOp {
    op: LocalOp,
    field: String,
    line: usize,
}

/// `terms`: the `[[model.term]]` list, then `cutoff`/`omega` as the operators require.
fn read_terms(cx: &Cx, sec: &Section, n_sites: usize) -> Result<Model> {
    let (term_at, term_v) = sec.entry("term").expect("required");
    let items = expect_array(cx, "model.term", term_v)?;
    if items.is_empty() {
        return Err(cx.err(
            term_at,
            "model.term",
            "no terms; a terms model needs at least one [[model.term]] entry",
        ));
    }
    let mut first: Option<FirstOp> = None;
    let mut terms = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("model.term[{i}]");
        let table = expect_table(cx, &path, item)?;
        let term = Section {
            table,
            path,
            at: item.span().start,
        };
        terms.push(read_term(cx, &term, n_sites, &mut first)?);
    }
    let first = first.expect("every term has an operator");
    let local = if first.op.is_spin() {
        for key in ["cutoff", "omega"] {
            if let Some((at, _)) = sec.entry(key) {
                return Err(cx.err(
                    at,
                    &sec.field(key),
                    format!(
                        "{key} only applies to oscillator operators; this model uses spin \
                         operators ({} in {})",
                        first.op, first.field
                    ),
                ));
            }
        }
        LocalSpace::Spin
    } else {
        let why = |what: &str| {
            format!(
                "oscillator operators ({} in {}) need model.{what}",
                first.op, first.field
            )
        };
        let Some(cutoff) = read_cutoff(cx, sec)? else {
            return Err(sec.missing(cx, "cutoff", &why("cutoff (an integer >= 2)")));
        };
        let Some(omega) = read_omega(cx, sec)? else {
            return Err(sec.missing(cx, "omega", &why("omega (a number > 0)")));
        };
        LocalSpace::Oscillator { cutoff, omega }
    };
    Ok(Model::Terms { local, terms })
}

/// One `[[model.term]]`: `ops`, `on`, optional `coeff`.
fn read_term(
    cx: &Cx,
    term: &Section,
    n_sites: usize,
    first: &mut Option<FirstOp>,
) -> Result<TermSpec> {
    term.deny_unknown(cx, &["ops", "on", "coeff"], "in a term")?;
    let ops = read_ops(cx, term, first)?;
    let on_v = term.require(
        cx,
        "on",
        "a term needs on = \"bonds\", \"next-bonds\", \"sites\" or a list of site tuples",
    )?;
    let on = read_support(cx, &term.field("on"), on_v, ops.len(), n_sites)?;
    let coeff = match term.get("coeff") {
        None => Complex64::new(1.0, 0.0),
        Some(v) => read_coeff(cx, &term.field("coeff"), v)?,
    };
    Ok(TermSpec { ops, on, coeff })
}

/// `ops`: a non-empty list of operator names, all spin or all oscillator across the model.
fn read_ops(cx: &Cx, term: &Section, first: &mut Option<FirstOp>) -> Result<Vec<LocalOp>> {
    let field = term.field("ops");
    let v = term.require(cx, "ops", "a term needs ops, e.g. ops = [\"Z\", \"Z\"]")?;
    let names = expect_array(cx, &field, v)?;
    if names.is_empty() {
        return Err(cx.err(
            v.span().start,
            &field,
            "ops is empty; a term needs at least one operator",
        ));
    }
    let mut ops = Vec::with_capacity(names.len());
    for name_v in names {
        let name = expect_str(cx, &field, name_v)?;
        let Some(op) = LocalOp::parse(name) else {
            return Err(cx.err(
                name_v.span().start,
                &field,
                format!(
                    "unknown operator {name:?}; expected one of: {} (spin) or {} (oscillator)",
                    op_list(&LocalOp::SPIN),
                    op_list(&LocalOp::OSCILLATOR)
                ),
            ));
        };
        match first {
            None => {
                *first = Some(FirstOp {
                    op,
                    field: field.clone(),
                    line: line_of(cx.text, name_v.span().start),
                })
            }
            Some(f) if f.op.is_spin() != op.is_spin() => {
                let family = |o: LocalOp| if o.is_spin() { "spin" } else { "oscillator" };
                return Err(cx.err(
                    name_v.span().start,
                    &field,
                    format!(
                        "{} operator {op} mixed with {} operator {} ({}, line {}); a model uses \
                         either spin operators ({}) or oscillator operators ({})",
                        family(op),
                        family(f.op),
                        f.op,
                        f.field,
                        f.line,
                        op_list(&LocalOp::SPIN),
                        op_list(&LocalOp::OSCILLATOR)
                    ),
                ));
            }
            Some(_) => {}
        }
        ops.push(op);
    }
    Ok(ops)
}

fn op_list(ops: &[LocalOp]) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
}

/// `on`: `"bonds"` / `"next-bonds"` (two operators), `"sites"`, or explicit site tuples with
/// one site per operator.
fn read_support(cx: &Cx, field: &str, v: &Val, n_ops: usize, n_sites: usize) -> Result<Support> {
    let tuples = match v.get_ref() {
        DeValue::String(_) => {
            let name = expect_choice(cx, field, v, "support", &SUPPORTS)?;
            if name != "sites" && n_ops != 2 {
                return Err(cx.err(
                    v.span().start,
                    field,
                    format!(
                        "on = {name:?} acts on pairs of sites and needs exactly 2 operators, \
                         found {n_ops}"
                    ),
                ));
            }
            return Ok(match name {
                "bonds" => Support::Bonds,
                "next-bonds" => Support::NextBonds,
                _ => Support::Sites,
            });
        }
        DeValue::Array(a) => a,
        _ => {
            return Err(type_err(
                cx,
                field,
                v,
                "\"bonds\", \"next-bonds\", \"sites\" or a list of site tuples like [[0, 1]]",
            ))
        }
    };
    if tuples.is_empty() {
        return Err(cx.err(
            v.span().start,
            field,
            "no site tuples; expected e.g. [[0, 1]]",
        ));
    }
    let mut list = Vec::with_capacity(tuples.len());
    for (j, t) in tuples.iter().enumerate() {
        let tf = format!("{field}[{j}]");
        let sites = expect_array(cx, &tf, t)?;
        if sites.len() != n_ops {
            return Err(cx.err(
                t.span().start,
                &tf,
                format!(
                    "site tuple has {} sites but the term has {n_ops} operators",
                    sites.len()
                ),
            ));
        }
        let mut tuple = Vec::with_capacity(n_ops);
        for s in sites {
            let x = expect_count(cx, &tf, s)?;
            if x >= n_sites {
                return Err(cx.err(
                    s.span().start,
                    &tf,
                    format!(
                        "site {x} is out of range; the lattice has {n_sites} sites (0..={})",
                        n_sites - 1
                    ),
                ));
            }
            tuple.push(x);
        }
        list.push(tuple);
    }
    Ok(Support::List(list))
}

/// `coeff`: a number or `[re, im]`.
fn read_coeff(cx: &Cx, field: &str, v: &Val) -> Result<Complex64> {
    const EXPECTED: &str = "a number or [re, im]";
    match v.get_ref() {
        DeValue::Integer(_) | DeValue::Float(_) => {
            Ok(Complex64::new(expect_f64(cx, field, v)?, 0.0))
        }
        DeValue::Array(a) if a.len() == 2 => {
            let re = expect_f64(cx, &format!("{field}[0]"), &a[0])?;
            let im = expect_f64(cx, &format!("{field}[1]"), &a[1])?;
            Ok(Complex64::new(re, im))
        }
        _ => Err(type_err(cx, field, v, EXPECTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> Model {
        parse(text, "t.toml").unwrap().model
    }

    const CHAIN: &str = "[lattice]\nshape = \"chain\"\nsize = [8]\n";

    #[test]
    fn line_of_counts_newlines() {
        let t = "a\nb\n\nc";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 5), 4);
        assert_eq!(line_of(t, 100), 4);
    }

    #[test]
    fn tfim_with_defaults() {
        let p = parse(
            &format!("{CHAIN}[model]\nkind = \"tfim\"\nJ = 1\nh = 0.5\n"),
            "dir/ising.toml",
        )
        .unwrap();
        assert_eq!(p.name, "ising");
        assert_eq!(p.path, "dir/ising.toml");
        assert_eq!(p.lattice.n_sites(), 8);
        assert_eq!(p.lattice.boundary(), Boundary::Periodic);
        assert_eq!(p.lattice.shape(), Shape::Chain);
        assert_eq!(
            p.model,
            Model::Tfim {
                j: 1.0,
                h: 0.5,
                g: 0.0
            }
        );
    }

    #[test]
    fn tfim_with_field_g() {
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"tfim\"\nJ = -1.0\nh = 2\ng = 0.25\n"
        ));
        assert_eq!(
            m,
            Model::Tfim {
                j: -1.0,
                h: 2.0,
                g: 0.25
            }
        );
    }

    #[test]
    fn bare_integer_size_and_open_boundary() {
        let p = parse(
            "[lattice]\nshape = \"chain\"\nsize = 12\nboundary = \"open\"\n\
             [model]\nkind = \"heisenberg\"\nJ = 1\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(p.lattice.n_sites(), 12);
        assert_eq!(p.lattice.boundary(), Boundary::Open);
        assert_eq!(p.model, Model::Heisenberg { j: 1.0 });
    }

    #[test]
    fn square_xxz_and_j1j2() {
        let sq = "[lattice]\nshape = \"square\"\nsize = [4, 3]\n";
        let p = parse(
            &format!("{sq}[model]\nkind = \"xxz\"\nJ = 1\ndelta = 0.5\n"),
            "x.toml",
        )
        .unwrap();
        assert_eq!(p.lattice.extent(), [4, 3]);
        assert_eq!(p.lattice.shape(), Shape::Square);
        assert_eq!(p.model, Model::Xxz { j: 1.0, delta: 0.5 });
        let m = model(&format!("{sq}[model]\nkind = \"j1j2\"\nJ1 = 1\nJ2 = 0.5\n"));
        assert_eq!(
            m,
            Model::J1J2 {
                j1: 1.0,
                j2: 0.5,
                delta: 1.0
            }
        );
        let m = model(&format!(
            "{sq}[model]\nkind = \"j1j2\"\nJ1 = 1\nJ2 = 0.5\ndelta = 2\n"
        ));
        assert_eq!(
            m,
            Model::J1J2 {
                j1: 1.0,
                j2: 0.5,
                delta: 2.0
            }
        );
    }

    #[test]
    fn phi4_default_and_explicit_omega() {
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"phi4\"\nm2 = 1\nlambda = 0.1\ncutoff = 8\n"
        ));
        assert_eq!(
            m,
            Model::Phi4 {
                m2: 1.0,
                lambda: 0.1,
                cutoff: 8,
                omega: 3f64.sqrt(),
                basis: OscillatorBasis::Fock,
            }
        );
        let sq = "[lattice]\nshape = \"square\"\nsize = [2, 2]\n";
        let m = model(&format!(
            "{sq}[model]\nkind = \"phi4\"\nm2 = 0.5\nlambda = 0\ncutoff = 4\n"
        ));
        assert_eq!(m.local_space().dim(), 4);
        assert!(matches!(m, Model::Phi4 { omega, .. } if (omega - 4.5f64.sqrt()).abs() < 1e-15));
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"phi4\"\nm2 = -5\nlambda = 1\ncutoff = 4\n"
        ));
        assert!(matches!(m, Model::Phi4 { omega, .. } if omega == 1.0));
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"phi4\"\nm2 = -5\nlambda = 1\ncutoff = 4\nomega = 2\n"
        ));
        assert!(matches!(m, Model::Phi4 { omega, .. } if omega == 2.0));
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"phi4\"\nm2 = 1\nlambda = 1\ncutoff = 4\nbasis = \"local\"\n"
        ));
        assert!(matches!(
            m,
            Model::Phi4 {
                basis: OscillatorBasis::Local,
                ..
            }
        ));
    }

    #[test]
    fn spin_terms() {
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"terms\"\n\
             [[model.term]]\nops = [\"Z\", \"Z\"]\non = \"bonds\"\ncoeff = -1\n\
             [[model.term]]\nops = [\"X\"]\non = \"sites\"\ncoeff = [0.5, -0.25]\n\
             [[model.term]]\nops = [\"Sp\", \"Sm\"]\non = [[0, 2], [1, 3]]\n\
             [[model.term]]\nops = [\"Sz\", \"Y\"]\non = \"next-bonds\"\n"
        ));
        let Model::Terms { local, terms } = m else {
            panic!("expected terms")
        };
        assert_eq!(local, LocalSpace::Spin);
        assert_eq!(terms.len(), 4);
        assert_eq!(terms[0].ops, vec![LocalOp::Z, LocalOp::Z]);
        assert_eq!(terms[0].on, Support::Bonds);
        assert_eq!(terms[0].coeff, Complex64::new(-1.0, 0.0));
        assert_eq!(terms[1].on, Support::Sites);
        assert_eq!(terms[1].coeff, Complex64::new(0.5, -0.25));
        assert_eq!(terms[2].on, Support::List(vec![vec![0, 2], vec![1, 3]]));
        assert_eq!(terms[2].coeff, Complex64::new(1.0, 0.0));
        assert_eq!(terms[3].on, Support::NextBonds);
    }

    #[test]
    fn oscillator_terms() {
        let m = model(&format!(
            "{CHAIN}[model]\nkind = \"terms\"\ncutoff = 6\nomega = 1.5\n\
             [[model.term]]\nops = [\"phi\", \"phi\"]\non = \"bonds\"\ncoeff = -1\n\
             [[model.term]]\nops = [\"n\"]\non = \"sites\"\n"
        ));
        let Model::Terms { local, terms } = m else {
            panic!("expected terms")
        };
        assert_eq!(
            local,
            LocalSpace::Oscillator {
                cutoff: 6,
                omega: 1.5
            }
        );
        assert_eq!(terms[1].ops, vec![LocalOp::N]);
    }

    #[test]
    fn inline_tables_are_accepted() {
        let m = model(
            "lattice = { shape = \"chain\", size = [4] }\n\
             model = { kind = \"terms\", term = [{ ops = [\"X\"], on = \"sites\" }] }\n",
        );
        assert!(matches!(m, Model::Terms { ref terms, .. } if terms.len() == 1));
    }

    #[test]
    fn spin_limit_is_64_sites() {
        let ok =
            "[lattice]\nshape = \"square\"\nsize = [8, 8]\n[model]\nkind = \"heisenberg\"\nJ = 1\n";
        assert_eq!(parse(ok, "x.toml").unwrap().lattice.n_sites(), 64);
        let big = "[lattice]\nshape = \"chain\"\nsize = [1000]\n\
                   [model]\nkind = \"phi4\"\nm2 = 1\nlambda = 1\ncutoff = 3\n";
        assert_eq!(parse(big, "x.toml").unwrap().lattice.n_sites(), 1000);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("j", &["J", "h", "g"]), Some("J"));
        assert_eq!(suggest("shpae", &["shape", "size"]), Some("shape"));
        assert_eq!(suggest("x", &["J", "h", "g"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
