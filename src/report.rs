//! Text and JSON renderings of results, shared by the CLI and the examples.

use crate::exact::ExactResult;
use crate::lattice::{Boundary, Shape};
use crate::spec::Problem;

/// `chain 16, periodic` / `square 4x4, open`.
pub fn lattice_label(problem: &Problem) -> String {
    let l = &problem.lattice;
    let [lx, ly] = l.extent();
    let size = match l.shape() {
        Shape::Chain => format!("chain {lx}"),
        Shape::Square => format!("square {lx}x{ly}"),
    };
    let b = match l.boundary() {
        Boundary::Periodic => "periodic",
        Boundary::Open => "open",
    };
    format!("{size}, {b}")
}

fn parameters(problem: &Problem) -> String {
    problem
        .model
        .parameters()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable report of `rgdiff exact`.
pub fn exact_text(problem: &Problem, r: &ExactResult) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
    line("problem", problem.path.clone());
    line(
        "model",
        format!("{} ({})", problem.model.kind(), parameters(problem)),
    );
    line("convention", problem.model.convention().to_string());
    line("lattice", lattice_label(problem));
    line("sector", format!("{} ({} states)", r.sector, r.dimension));
    for sc in &r.scanned {
        line(
            "  scanned",
            if sc.rough {
                format!(
                    "{:<18} {:>12} states  E0 ~ {:.8} (rough)",
                    sc.sector, sc.dimension, sc.energy
                )
            } else {
                format!(
                    "{:<18} {:>12} states  E0 = {:.12}",
                    sc.sector, sc.dimension, sc.energy
                )
            },
        );
    }
    line("E0", format!("{:.12}", r.energy));
    line("E0 / N", format!("{:.12}", r.energy_per_site));
    if r.levels.len() > 1 {
        let lv: Vec<String> = r.levels.iter().map(|e| format!("{e:.10}")).collect();
        line("levels", lv.join("  "));
    }
    if let Some(g) = r.gap {
        line("gap", format!("{g:.10}"));
    }
    for (k, v) in &r.observables {
        line(&format!("<{k}>"), format!("{v:.10}"));
    }
    let phases: Vec<String> = ["basis", "matrix", "solve", "observables"]
        .iter()
        .filter_map(|k| r.timings.get(*k).map(|t| format!("{k} {t:.2} s")))
        .collect();
    let steps = if r.solver == "dense" {
        "dense".to_string()
    } else {
        format!("lanczos, {} steps", r.iterations)
    };
    line(
        "solver",
        format!(
            "{steps}, {}, {:.2} s, {:.1} MiB",
            if r.converged {
                "converged"
            } else {
                "NOT converged"
            },
            r.seconds,
            r.memory_bytes as f64 / (1u64 << 20) as f64
        ),
    );
    line("time", phases.join(", "));
    s
}

/// The JSON object of `rgdiff exact --json`.
pub fn exact_json(problem: &Problem, r: &ExactResult) -> String {
    let mut v = serde_json::to_value(r).expect("results serialise");
    let obj = v.as_object_mut().unwrap();
    obj.insert("problem".into(), problem.path.clone().into());
    obj.insert("model".into(), problem.model.kind().into());
    obj.insert("lattice".into(), lattice_label(problem).into());
    let params: serde_json::Map<String, serde_json::Value> = problem
        .model
        .parameters()
        .into_iter()
        .map(|(k, x)| (k.to_string(), x.into()))
        .collect();
    obj.insert("parameters".into(), params.into());
    serde_json::to_string(&v).expect("results serialise")
}
