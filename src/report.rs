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

/// The CLI's progress bar for VMC: running energy, its error and the relative error to the
/// exact energy when known (hidden when stderr is not a terminal).
pub struct VmcProgress {
    bar: indicatif::ProgressBar,
}

impl VmcProgress {
    pub fn new(total: usize, done: usize) -> Self {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}")
                .expect("valid template"),
        );
        bar.set_position(done as u64);
        VmcProgress { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl crate::run::Monitor for VmcProgress {
    fn iteration(&mut self, s: &crate::vmc::IterationStats, exact: Option<f64>) {
        let rel = exact.map_or(String::new(), |e| {
            format!("  rel {:.2e}", (s.energy - e) / e.abs())
        });
        self.bar.set_message(format!(
            "E = {:.6} +- {:.6}  var {:.3e}{rel}",
            s.energy, s.error, s.variance
        ));
        self.bar.set_position(s.iter as u64 + 1);
    }

    fn message(&mut self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

/// The final report of `rgdiff ground-state`.
pub fn summary_text(s: &crate::run::Summary, dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line("status", s.status.clone());
    line(
        "energy",
        format!("{:.8} +- {:.8}", s.energy, s.energy_error),
    );
    line("variance", format!("{:.6e}", s.variance));
    line("v-score", format!("{:.6e}", s.v_score));
    if let (Some(e), Some(r)) = (s.exact_energy, s.relative_error) {
        line("exact energy", format!("{e:.10}"));
        line("relative error", format!("{r:.3e}"));
    }
    line("iterations", s.iterations.to_string());
    line(
        "time",
        format!(
            "{:.1} s, {:.3} s per iteration, {:.0} samples/s",
            s.seconds, s.seconds_per_iteration, s.samples_per_second
        ),
    );
    if s.ranks > 1 {
        line(
            "communication",
            format!(
                "{:.4} s per iteration in MPI collectives ({} ranks), of which {:.4} s waiting for the slowest rank",
                s.comm_seconds_per_iteration, s.ranks, s.wait_seconds_per_iteration
            ),
        );
    }
    line("parameters", s.n_params.to_string());
    line("run directory", dir.display().to_string());
    for w in &s.warnings {
        line("warning", w.clone());
    }
    out
}

/// Progress bars of `rgdiff sample`: one for training (free energy, ESS), one for sampling
/// (hidden when stderr is not a terminal).
pub struct SampleProgress {
    train: Option<indicatif::ProgressBar>,
    sample: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl SampleProgress {
    /// `quiet` hides both bars (for `--json`).
    pub fn new(quiet: bool) -> Self {
        SampleProgress {
            train: None,
            sample: None,
            quiet,
        }
    }

    fn bar(total: usize, label: &str) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{label:<8} {{bar:30}} {{pos}}/{{len}} [{{elapsed}}<{{eta}}] {{msg}}"
            ))
            .expect("valid template"),
        );
        bar
    }

    pub fn finish(&self) {
        for b in self.train.iter().chain(self.sample.iter()) {
            b.finish_and_clear();
        }
    }
}

impl crate::field::sample::SampleMonitor for SampleProgress {
    fn training(&mut self, s: &crate::field::variational::TrainStats, total: usize) {
        if self.quiet {
            return;
        }
        let bar = self.train.get_or_insert_with(|| Self::bar(total, "train"));
        bar.set_message(format!(
            "F = {:.4} +- {:.4}  beta {:.4}  ESS {:.3}",
            s.free_energy, s.free_energy_error, s.beta, s.ess
        ));
        bar.set_position(s.iter as u64 + 1);
    }

    fn flow_training(&mut self, s: &crate::field::flow::FlowStats, total: usize) {
        if self.quiet {
            return;
        }
        let bar = self.train.get_or_insert_with(|| Self::bar(total, "train"));
        bar.set_message(format!(
            "loss {:.4}  F = {:.4} +- {:.4}  ESS {:.3}  dsm {:.4}",
            s.loss, s.free_energy, s.free_energy_error, s.ess, s.dsm
        ));
        bar.set_position(s.iter as u64);
    }

    fn sampling(&mut self, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        if let Some(t) = &self.train {
            t.finish_and_clear();
        }
        let bar = self
            .sample
            .get_or_insert_with(|| Self::bar(total, "sample"));
        bar.set_position(done as u64);
    }

    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// The final report of `rgdiff sample`.
pub fn sample_text(r: &crate::field::sample::SampleReport, dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<26} {v}\n"));
    line("status", r.status.clone());
    line("method", r.method.name().to_string());
    line("samples", r.samples.to_string());
    if r.chains > 1 {
        line("chains", r.chains.to_string());
    }
    for (k, e) in &r.estimates {
        let exact = r
            .exact
            .get(k)
            .map_or(String::new(), |x| format!("   (exact {x:.10})"));
        line(k, format!("{:.8} +- {:.8}{exact}", e.mean, e.error));
    }
    line(
        "acceptance",
        format!("{:.4} +- {:.4}", r.acceptance.mean, r.acceptance.error),
    );
    line(
        "tau_int |M|, E",
        format!(
            "{:.3} +- {:.3}, {:.3} +- {:.3}",
            r.tau_int.mean, r.tau_int.error, r.tau_int_energy.mean, r.tau_int_energy.error
        ),
    );
    if let Some(e) = r.ess {
        line("ess fraction", format!("{:.4} +- {:.4}", e.mean, e.error));
    }
    if let Some(k) = r.pareto_k {
        line("Pareto k of weights", format!("{k:.3}"));
    }
    if let Some(e) = r.log_z {
        let exact = r
            .exact
            .get("log_z")
            .map_or(String::new(), |x| format!("   (exact {x:.10})"));
        line("log Z", format!("{:.8} +- {:.8}{exact}", e.mean, e.error));
    }
    if let Some(e) = r.kl_divergence {
        line(
            "KL(q || p), nats",
            format!("{:.6} +- {:.6}", e.mean, e.error),
        );
    }
    if let Some(e) = r.free_energy_bound {
        line(
            "F bound (>= -log Z)",
            format!("{:.6} +- {:.6}", e.mean, e.error),
        );
    }
    if let Some(rw) = &r.reweighted {
        line(
            "reweighted",
            format!("every proposal, weight exp(-S)/q ({} draws):", rw.samples),
        );
        for (k, e) in &rw.estimates {
            let exact = r
                .exact
                .get(k)
                .map_or(String::new(), |x| format!("   (exact {x:.10})"));
            line(
                &format!("  {k}"),
                format!("{:.8} +- {:.8}{exact}", e.mean, e.error),
            );
        }
        let n = |k: &str| rw.effective_samples.get(k).copied().unwrap_or(0.0);
        line(
            "  effective samples |M|, E",
            format!(
                "{:.0}, {:.0}; {:.0} independent samples/s",
                n("abs_magnetization"),
                n("energy_density"),
                rw.independent_samples_per_second
            ),
        );
    }
    for w in &r.warnings {
        line("WARNING", w.clone());
    }
    if let (Some(s), Some(n)) = (r.step_size, r.leapfrog_steps) {
        line("hmc step", format!("{s:.5} x {n} leapfrog steps"));
    } else if let Some(s) = r.step_size {
        line("local step", format!("{s:.5}"));
    }
    if r.training_iterations > 0 {
        line(
            "training",
            format!(
                "{} iterations, {:.1} s",
                r.training_iterations, r.training_seconds
            ),
        );
    }
    line(
        "sampling",
        format!(
            "{:.2} s, {:.0} samples/s, {:.0} independent samples/s",
            r.sampling_seconds, r.samples_per_second, r.independent_samples_per_second
        ),
    );
    if let Some(f) = &r.flow {
        line(
            "flow",
            format!(
                "scheme {}, reference mu^2 {:.4}, {} parameters, {} steps",
                f.scheme, f.reference_m2, f.parameters, f.steps
            ),
        );
        line(
            "ODE error (n vs 2n steps)",
            format!(
                "rms log q {:.2e}, max |phi| {:.2e}",
                f.ode_logq_error, f.ode_phi_error
            ),
        );
        for g in &f.rg_two_point {
            let show = |v: &[f64], e: &[f64]| {
                v.iter()
                    .zip(e)
                    .take(3)
                    .map(|(a, b)| format!("{a:.4}({:.0})", 1e4 * b))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            line(
                &format!("G_t(r<3) t={:.3}", g.t),
                format!(
                    "model {}  flowed data {}",
                    show(&g.model, &g.model_error),
                    show(&g.data, &g.data_error)
                ),
            );
        }
    }
    line("run directory", dir.display().to_string());
    out
}
