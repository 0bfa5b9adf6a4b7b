//! Monte Carlo error analysis, shared by the variational and the classical samplers.
//!
//! - Independent samples: `error = sqrt(var / n)`.
//! - Correlated series: the normalised autocorrelation `rho(t)`, the integrated
//!   autocorrelation time `tau_int = 1/2 + sum_{t=1}^{W} rho(t)` with Sokal's automatic window
//!   (the smallest `W >= c tau_int(W)`, `c = 5`), and the error
//!   `sqrt(2 tau_int var / n)`.
//! - Binning: errors of the means of blocks of growing size; the plateau is the error.
//! - Jackknife: error of a smooth function of means (ratios, cumulants) from leave-one-block-out
//!   estimates.
//!
//! Conventions: `tau_int = 1/2` for independent samples, so "independent samples per second"
//! is `samples per second / (2 tau_int)`.

use serde::Serialize;

/// A Monte Carlo estimate with its statistical error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub mean: f64,
    pub error: f64,
    /// Sample variance of the series.
    pub variance: f64,
    /// Integrated autocorrelation time (1/2 for independent samples).
    pub tau_int: f64,
    pub n: usize,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn variance(x: &[f64], m: f64) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64
}

/// Mean and error of independent samples.
pub fn independent(x: &[f64]) -> Stats {
    let m = mean(x);
    let v = variance(x, m);
    Stats {
        mean: m,
        error: (v / x.len() as f64).sqrt(),
        variance: v,
        tau_int: 0.5,
        n: x.len(),
    }
}

/// Normalised autocorrelation function `rho(t)` for `t = 0 .. max_lag`.
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Vec<f64> {
    let n = x.len();
    let m = mean(x);
    let c0 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64;
    if c0 == 0.0 {
        let mut r = vec![0.0; max_lag.min(n.saturating_sub(1)) + 1];
        r[0] = 1.0;
        return r;
    }
    (0..=max_lag.min(n.saturating_sub(1)))
        .map(|t| {
            let c: f64 = (0..n - t).map(|i| (x[i] - m) * (x[i + t] - m)).sum::<f64>();
            c / (n - t) as f64 / c0
        })
        .collect()
}

/// Integrated autocorrelation time with Sokal's automatic window (`c = 5`); returns
/// `(tau_int, W)`.
pub fn tau_int(x: &[f64]) -> (f64, usize) {
    let n = x.len();
    if n < 4 {
        return (0.5, 0);
    }
    let m = mean(x);
    let c0 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64;
    if c0 == 0.0 {
        return (0.5, 0);
    }
    // rho(t) one lag at a time, stopping at the window: O(n W) work.
    let mut tau = 0.5;
    let max_lag = n / 2;
    for w in 1..=max_lag {
        let c: f64 = (0..n - w).map(|i| (x[i] - m) * (x[i + w] - m)).sum::<f64>();
        tau += c / (n - w) as f64 / c0;
        if w as f64 >= 5.0 * tau {
            return (tau.max(0.5), w);
        }
    }
    (tau.max(0.5), max_lag)
}

/// Mean with an error that accounts for autocorrelation (`sqrt(2 tau_int var / n)`).
pub fn correlated(x: &[f64]) -> Stats {
    let m = mean(x);
    let v = variance(x, m);
    let (tau, _) = tau_int(x);
    Stats {
        mean: m,
        error: (2.0 * tau * v / x.len() as f64).sqrt(),
        variance: v,
        tau_int: tau,
        n: x.len(),
    }
}

/// [`tau_int`] of independent chains of one observable, concatenated in `x` with lengths
/// `lens`: `rho(t)` pools the products of pairs `t` apart *within* each chain (never across a
/// boundary) about the pooled mean, normalised by the pooled variance, with Sokal's window
/// (`W` at most half the shortest chain). One chain gives exactly [`tau_int`].
pub fn tau_int_chains(x: &[f64], lens: &[usize]) -> (f64, usize) {
    assert_eq!(
        lens.iter().sum::<usize>(),
        x.len(),
        "chain lengths cover the series"
    );
    let lens: Vec<usize> = lens.iter().copied().filter(|&l| l > 0).collect();
    let shortest = lens.iter().copied().min().unwrap_or(0);
    let n = x.len();
    if shortest < 4 {
        return (0.5, 0);
    }
    let m = mean(x);
    let c0 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64;
    if c0 == 0.0 {
        return (0.5, 0);
    }
    let mut tau = 0.5;
    let max_lag = shortest / 2;
    for w in 1..=max_lag {
        let mut c = 0.0;
        let mut pairs = 0;
        let mut start = 0;
        for &l in &lens {
            let xs = &x[start..start + l];
            c += (0..l - w)
                .map(|i| (xs[i] - m) * (xs[i + w] - m))
                .sum::<f64>();
            pairs += l - w;
            start += l;
        }
        tau += c / pairs as f64 / c0;
        if w as f64 >= 5.0 * tau {
            return (tau.max(0.5), w);
        }
    }
    (tau.max(0.5), max_lag)
}

/// [`correlated`] for independent chains concatenated in `x` (lengths `lens`): the pooled
/// mean with the error `sqrt(2 tau_int var / n)`, `tau_int` from [`tau_int_chains`]. One chain
/// gives exactly [`correlated`].
pub fn correlated_chains(x: &[f64], lens: &[usize]) -> Stats {
    let m = mean(x);
    let v = variance(x, m);
    let (tau, _) = tau_int_chains(x, lens);
    Stats {
        mean: m,
        error: (2.0 * tau * v / x.len() as f64).sqrt(),
        variance: v,
        tau_int: tau,
        n: x.len(),
    }
}

/// Binning analysis: `(bin size, error of the mean from bins of that size)` for bin sizes
/// `1, 2, 4, ...` while at least 32 bins remain.
pub fn binning(x: &[f64]) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    let mut bins: Vec<f64> = x.to_vec();
    let mut size = 1;
    while bins.len() >= 32 {
        let m = mean(&bins);
        out.push((size, (variance(&bins, m) / bins.len() as f64).sqrt()));
        bins = bins.chunks_exact(2).map(|c| 0.5 * (c[0] + c[1])).collect();
        size *= 2;
    }
    out
}

/// Jackknife estimate of `f(means of the series)` from `n_blocks` leave-one-block-out
/// samples: returns `(estimate, error)`. The series must have equal lengths; blocking (block
/// length `len / n_blocks`) makes it valid for correlated series when blocks are much longer
/// than `tau_int`.
pub fn jackknife(series: &[&[f64]], n_blocks: usize, f: impl Fn(&[f64]) -> f64) -> (f64, f64) {
    let len = series[0].len();
    assert!(series.iter().all(|s| s.len() == len));
    let nb = n_blocks.min(len).max(2);
    let block = len / nb;
    let used = block * nb;
    let totals: Vec<f64> = series.iter().map(|s| s[..used].iter().sum()).collect();
    let full: Vec<f64> = totals.iter().map(|t| t / used as f64).collect();
    let estimates: Vec<f64> = (0..nb)
        .map(|b| {
            let means: Vec<f64> = series
                .iter()
                .zip(&totals)
                .map(|(s, t)| {
                    let part: f64 = s[b * block..(b + 1) * block].iter().sum();
                    (t - part) / (used - block) as f64
                })
                .collect();
            f(&means)
        })
        .collect();
    let mj = mean(&estimates);
    let var = estimates.iter().map(|e| (e - mj).powi(2)).sum::<f64>() * (nb - 1) as f64 / nb as f64;
    let f_full = f(&full);
    // Bias-corrected estimate.
    (nb as f64 * f_full - (nb - 1) as f64 * mj, var.sqrt())
}

/// The largest log weight `m` and the weights relative to it, `e^(log w - m)` (at most 1, so
/// sums do not overflow).
pub fn relative_weights(log_w: &[f64]) -> (f64, Vec<f64>) {
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max, log_w.iter().map(|l| (l - max).exp()).collect())
}

/// Effective sample size of importance weights, `(sum w)^2 / (n sum w^2)` (a fraction in
/// `(0, 1]`), computed from log-weights without overflow.
pub fn ess_fraction(log_w: &[f64]) -> f64 {
    let (_, w) = relative_weights(log_w);
    let s: f64 = w.iter().sum();
    let s2: f64 = w.iter().map(|v| v * v).sum();
    s * s / (w.len() as f64 * s2)
}

/// Statistical error of [`tau_int`] by Sokal's estimate `tau sqrt(2 (2 W + 1) / n)`.
pub fn tau_int_error(tau: f64, window: usize, n: usize) -> f64 {
    tau * (2.0 * (2 * window + 1) as f64 / n.max(1) as f64).sqrt()
}

/// Effective independent samples per second: `n / (2 tau_int) / seconds`.
pub fn independent_per_second(n: usize, tau_int: f64, seconds: f64) -> f64 {
    n as f64 / (2.0 * tau_int.max(0.5)) / seconds.max(1e-12)
}

/// `log mean exp(log_w)` with its error by the delta method,
/// `sqrt(Var(w) / n) / mean(w)` (computed relative to the largest weight, so no overflow):
/// the estimate of `log Z` from importance weights `w = exp(-S) / q`.
pub fn log_mean_exp(log_w: &[f64]) -> (f64, f64) {
    let n = log_w.len();
    let (max, w) = relative_weights(log_w);
    let m = mean(&w);
    let v = variance(&w, m);
    (max + m.ln(), (v / n as f64).sqrt() / m)
}

/// `KL(q || p)` in nats, the divergence of a proposal `q` from the normalised target
/// `p = exp(-S) / Z`, from the importance weights `w = exp(-S) / q` of draws from `q`:
/// `KL(q || p) = E_q[log q - log p] = log Z - E_q[log w]`, estimated as
/// `log mean w - mean log w` (`>= 0` by Jensen's inequality) with a jackknife over `n_blocks`
/// blocks (bias-corrected). For near-Gaussian `log w` of variance `sigma^2`,
/// `KL = sigma^2 / 2` and an independence Metropolis-Hastings chain accepts
/// `2 Phi(-sqrt(KL))` of its proposals: 0.9 needs about 0.016 nats. Like `log Z` from the
/// same weights, it cannot see states `q` (almost) never draws, and is then too low.
pub fn kl_from_weights(log_w: &[f64], n_blocks: usize) -> (f64, f64) {
    let (max, w) = relative_weights(log_w);
    let shifted: Vec<f64> = log_w.iter().map(|l| l - max).collect();
    jackknife(&[&w, &shifted], n_blocks, |m| m[0].ln() - m[1])
}

/// The self-normalised importance-sampling mean `sum w x / sum w` of `x` under the target,
/// from draws of a proposal with log weights `log_w`, with its delta-method error
/// `sqrt(sum (w / sum w)^2 (x - mean)^2)`.
pub fn weighted_mean(log_w: &[f64], x: &[f64]) -> (f64, f64) {
    let (_, w) = relative_weights(log_w);
    let total: f64 = w.iter().sum();
    let m = w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() / total;
    let var = w
        .iter()
        .zip(x)
        .map(|(w, x)| (w / total).powi(2) * (x - m).powi(2))
        .sum::<f64>();
    (m, var.sqrt())
}

/// Effective sample size fraction [`ess_fraction`] with a jackknife error over `n_blocks`
/// blocks.
pub fn ess_with_error(log_w: &[f64], n_blocks: usize) -> (f64, f64) {
    let (_, w) = relative_weights(log_w);
    let w2: Vec<f64> = w.iter().map(|v| v * v).collect();
    let (_, err) = jackknife(&[&w, &w2], n_blocks, |m| m[0] * m[0] / m[1]);
    (ess_fraction(log_w), err)
}

/// Pareto shape `k` of the importance weights' right tail (the PSIS diagnostic of Vehtari,
/// Simpson, Gelman, Yao and Gabry, "Pareto smoothed importance sampling", JMLR 25 (2024)).
///
/// The largest `M = ceil(min(S / 5, 3 sqrt(S)))` of the `S` weights, minus the largest weight
/// not among them, are fitted by a generalised Pareto distribution
/// `P(w - u > x) = (1 + k x / sigma)^(-1/k)` (fitted by `gpd_shape`). The weights have `1/k` finite
/// moments: for `k < 1/2` their variance is finite and ESS and error bars mean what they say;
/// above about 0.7 (or `1 - 1/log10 S` for small `S`, see [`pareto_k_threshold`]) the mean
/// and its error are dominated by a few weights that the run has seen (or not) by chance,
/// which is also when an independence Metropolis-Hastings chain can be held by one heavy
/// state while its `tau_int` looks small. The ESS does not show this reliably: it is a sample
/// second moment, which for `k > 1/2` does not exist and moves with the few largest weights
/// the run happened to draw; `k` measures the shape of the tail instead.
///
/// `None` when there are too few weights (a tail of fewer than 5) or the tail is degenerate
/// (equal weights: nothing heavy to fit).
pub fn pareto_k(log_w: &[f64]) -> Option<f64> {
    let s = log_w.len();
    let m = (0.2 * s as f64).min(3.0 * (s as f64).sqrt()).ceil() as usize;
    if m < 5 || m >= s {
        return None;
    }
    let mut sorted = log_w.to_vec();
    sorted.sort_by(f64::total_cmp);
    let max = sorted[s - 1];
    if !max.is_finite() {
        return None;
    }
    let cut = (sorted[s - m - 1] - max).exp();
    let tail: Vec<f64> = sorted[s - m..]
        .iter()
        .map(|l| (l - max).exp() - cut)
        .collect();
    gpd_shape(&tail)
}

/// Largest [`pareto_k`] at which `S` importance weights are reliable:
/// `min(1 - 1 / log10 S, 0.7)` (Vehtari et al. 2024: below it the Monte Carlo
/// error of a weighted mean falls with `S` at a usable rate).
pub fn pareto_k_threshold(s: usize) -> f64 {
    (1.0 - 1.0 / (s.max(2) as f64).log10()).min(0.7)
}

/// Shape `k` of a generalised Pareto distribution fitted to exceedances `x` (ascending,
/// non-negative) by the empirical Bayes method of Zhang and Stephens (Technometrics 51
/// (2009) 316), with `k` the negative of theirs, and the weakly informative prior of
/// Vehtari et al. (2024) that pulls `k` towards 1/2 by `10 / (n + 10)`:
///
/// with `theta_j = 1 / x_max + (1 - sqrt(m / (j - 1/2))) / (3 x_q)`, `j = 1..m`,
/// `m = 30 + floor(sqrt n)`, `x_q` the first quartile,
/// `k(theta) = mean log(1 - theta x)`, profile log-likelihood
/// `l(theta) = n (log(-theta / k(theta)) - k(theta) - 1)`, posterior mean
/// `theta* = sum_j theta_j w_j` with `w_j` proportional to `exp l(theta_j)`, and
/// `k = (n k(theta*) + 5) / (n + 10)`.
fn gpd_shape(x: &[f64]) -> Option<f64> {
    let n = x.len();
    let x_max = x[n - 1];
    let x_q = x[((n as f64 / 4.0 + 0.5) as usize).max(1) - 1];
    if x_q <= 0.0 || x_max <= 0.0 || !x_max.is_finite() {
        return None;
    }
    let k_of = |theta: f64| x.iter().map(|v| (-theta * v).ln_1p()).sum::<f64>() / n as f64;
    let m = 30 + (n as f64).sqrt() as usize;
    let theta: Vec<f64> = (1..=m)
        .map(|j| 1.0 / x_max + (1.0 - (m as f64 / (j as f64 - 0.5)).sqrt()) / (3.0 * x_q))
        .collect();
    let l: Vec<f64> = theta
        .iter()
        .map(|&t| {
            let k = k_of(t);
            let l = n as f64 * ((-t / k).ln() - k - 1.0);
            if l.is_nan() {
                f64::NEG_INFINITY
            } else {
                l
            }
        })
        .collect();
    let (_, w) = relative_weights(&l);
    let norm: f64 = w.iter().sum();
    let theta_star: f64 = theta.iter().zip(&w).map(|(t, w)| t * w).sum::<f64>() / norm;
    let k = k_of(theta_star);
    k.is_finite()
        .then(|| (n as f64 * k + 10.0 * 0.5) / (n as f64 + 10.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn ar1(rho: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = 0.0;
        let s = (1.0 - rho * rho).sqrt();
        (0..n)
            .map(|_| {
                let e: f64 = rng.sample(StandardNormal);
                x = rho * x + s * e;
                x
            })
            .collect()
    }

    #[test]
    fn tau_int_of_ar1_is_exact() {
        for rho in [0.0, 0.5, 0.8, 0.9] {
            let x = ar1(rho, 400_000, 7);
            let want = (1.0 + rho) / (2.0 * (1.0 - rho));
            let (tau, _) = tau_int(&x);
            assert!(
                (tau - want).abs() < 0.05 * want + 0.02,
                "rho {rho}: {tau} vs {want}"
            );
        }
    }

    #[test]
    fn binning_plateau_matches_the_autocorrelation_error() {
        let x = ar1(0.8, 1 << 18, 3);
        let c = correlated(&x);
        let b = binning(&x);
        let plateau = b[b.len() - 3].1;
        assert!(
            (plateau / c.error - 1.0).abs() < 0.2,
            "{plateau} vs {}",
            c.error
        );
        // The naive error underestimates by sqrt(2 tau) = 3.
        assert!((c.error / b[0].1 - 3.0).abs() < 0.3);
    }

    #[test]
    fn jackknife_of_a_mean_is_the_standard_error() {
        let x = ar1(0.0, 10_000, 11);
        let (m, e) = jackknife(&[&x], 100, |m| m[0]);
        let s = independent(&x);
        assert!((m - s.mean).abs() < 1e-12);
        assert!((e / s.error - 1.0).abs() < 0.2);
        // A ratio: <x^2>/<1> of unit-variance noise is 1.
        let x2: Vec<f64> = x.iter().map(|v| v * v).collect();
        let ones = vec![1.0; x.len()];
        let (r, er) = jackknife(&[&x2, &ones], 50, |m| m[0] / m[1]);
        assert!((r - 1.0).abs() < 4.0 * er, "{r} +- {er}");
    }

    #[test]
    fn log_mean_exp_of_lognormal_weights() {
        // w = exp(g), g ~ N(0, s^2): E w = exp(s^2 / 2).
        let s = 0.5;
        let g: Vec<f64> = ar1(0.0, 100_000, 5)
            .iter()
            .map(|x| s * x + 1000.0)
            .collect();
        let (lz, err) = log_mean_exp(&g);
        assert!(err > 0.0 && err < 0.01);
        assert!(
            (lz - (1000.0 + s * s / 2.0)).abs() < 4.0 * err,
            "{lz} +- {err}"
        );
        let (ess, e_err) = ess_with_error(&g, 50);
        // ESS fraction of lognormal weights: exp(-s^2).
        assert!(
            (ess - (-s * s).exp()).abs() < 4.0 * e_err + 1e-3,
            "{ess} +- {e_err}"
        );
    }

    #[test]
    fn tau_int_of_chains_ignores_boundaries() {
        // One chain: exactly the single-series estimator.
        let x = ar1(0.8, 20_000, 9);
        assert_eq!(tau_int_chains(&x, &[x.len()]), tau_int(&x));
        assert_eq!(correlated_chains(&x, &[x.len()]), correlated(&x));
        // Four independent AR(1) chains: tau_int = (1 + rho) / (2 (1 - rho)) = 4.5, and the
        // error of the pooled mean is that of a chain four times longer.
        let rho = 0.8;
        let chains: Vec<Vec<f64>> = (0..4).map(|c| ar1(rho, 50_000, 20 + c)).collect();
        let all = chains.concat();
        let (tau, _) = tau_int_chains(&all, &[50_000; 4]);
        assert!((tau - 4.5).abs() < 0.3, "{tau}");
        let s = correlated_chains(&all, &[50_000; 4]);
        let want = (2.0 * 4.5 / 200_000f64).sqrt();
        assert!((s.error / want - 1.0).abs() < 0.1, "{} vs {want}", s.error);
    }

    #[test]
    fn ess_of_equal_weights_is_one() {
        assert!((ess_fraction(&[3.0; 10]) - 1.0).abs() < 1e-12);
        assert!((ess_fraction(&[0.0, f64::NEG_INFINITY]) - 0.5).abs() < 1e-12);
    }
    /// A fair coin reweighted to the target `p(1) = 0.8`: the self-normalised mean is 0.8
    /// within its delta-method error, and that error is the spread over independent runs.
    #[test]
    fn weighted_mean_reweights_a_fair_coin() {
        let runs: Vec<(f64, f64)> = (0..20)
            .map(|seed| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                let x: Vec<f64> = (0..10_000)
                    .map(|_| f64::from(u8::from(rng.random::<bool>())))
                    .collect();
                let log_w: Vec<f64> = x
                    .iter()
                    .map(|&v| if v == 1.0 { 1.6f64.ln() } else { 0.4f64.ln() })
                    .collect();
                weighted_mean(&log_w, &x)
            })
            .collect();
        let est: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let spread = variance(&est, mean(&est)).sqrt();
        let err = mean(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
        assert!(
            (mean(&est) - 0.8).abs() < 4.0 * spread / 20f64.sqrt(),
            "{est:?}"
        );
        assert!(
            (err / spread - 1.0).abs() < 0.4,
            "error {err}, spread {spread}"
        );
    }

    /// Draws `x ~ q = N(0, 1)` for the target `exp(-S) = Z N(x; mu, 1)`: `log w = log Z +
    /// mu x - mu^2 / 2`, and `KL(q || p) = mu^2 / 2` whatever `Z`; the jackknife error
    /// matches the spread over independent runs.
    #[test]
    fn kl_from_weights_of_shifted_gaussians() {
        let (mu, log_z) = (0.6, 123.0);
        let want = mu * mu / 2.0;
        let runs: Vec<(f64, f64)> = (0..20)
            .map(|seed| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                let log_w: Vec<f64> = (0..20_000)
                    .map(|_| {
                        let x: f64 = rng.sample(StandardNormal);
                        log_z + mu * x - mu * mu / 2.0
                    })
                    .collect();
                kl_from_weights(&log_w, 50)
            })
            .collect();
        let est: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let spread = variance(&est, mean(&est)).sqrt();
        let err = mean(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
        assert!(
            (mean(&est) - want).abs() < 4.0 * spread / 20f64.sqrt(),
            "{est:?}"
        );
        assert!(
            (err / spread - 1.0).abs() < 0.4,
            "error {err}, spread {spread}"
        );
        assert_eq!(kl_from_weights(&[5.0; 100], 10).0, 0.0);
    }
    /// `S` weights `w = U^(-xi)`, `U` uniform: `P(w > x) = x^(-1/xi)`, a Pareto tail of
    /// shape `xi`, with `1/xi` finite moments.
    fn pareto_log_w(xi: f64, s: usize, seed: u64) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..s)
            .map(|_| -xi * (1.0 - rng.random::<f64>()).ln() + 40.0)
            .collect()
    }

    #[test]
    fn pareto_k_recovers_the_tail_of_known_weights() {
        // Tail of M = 3 sqrt(20,000) = 425 weights: standard error about (1 + xi) / sqrt(M)
        // (measured over 20 seeds: unbiased, sd 0.055 at xi = 0.3, 0.12 at 1.5).
        for (i, xi) in [0.3, 0.6, 0.9, 1.5].into_iter().enumerate() {
            let k = pareto_k(&pareto_log_w(xi, 20_000, 30 + i as u64)).unwrap();
            let se = (1.0 + xi) / 425f64.sqrt();
            assert!((k - xi).abs() < 3.0 * se, "xi {xi}: k = {k}");
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
        let u: Vec<f64> = (0..20_000).map(|_| 1.0 - rng.random::<f64>()).collect();
        // Exponential weights, w = -log U: exceedances are exponential, k = 0 (plus the
        // prior's pull of 10 / 435 towards 1/2).
        let log_w: Vec<f64> = u.iter().map(|u| (-u.ln()).ln()).collect();
        let k = pareto_k(&log_w).unwrap();
        assert!(k.abs() < 0.15, "exponential: k = {k}");
        // Bounded weights (uniform): k = -1, pulled up by the prior.
        let log_w: Vec<f64> = u.iter().map(|u| u.ln()).collect();
        let k = pareto_k(&log_w).unwrap();
        assert!((k + 1.0).abs() < 0.15, "uniform: k = {k}");
    }

    #[test]
    fn pareto_k_flags_weights_without_a_variance() {
        // Weights of shape 0.8 have no variance (the true ESS is zero): flagged at 5,000.
        let log_w = pareto_log_w(0.8, 5_000, 21);
        let k = pareto_k(&log_w).unwrap();
        assert!(k > pareto_k_threshold(log_w.len()), "{k}");
        // Lognormal weights of log-spread 0.3 (ESS 0.91) are far below the threshold.
        let g: Vec<f64> = ar1(0.0, 5_000, 17).iter().map(|x| 0.3 * x).collect();
        let k = pareto_k(&g).unwrap();
        assert!(k < 0.3, "{k}");
        assert!((pareto_k_threshold(5_000) - 0.7).abs() < 1e-12);
        assert!((pareto_k_threshold(100) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn pareto_k_needs_a_tail() {
        assert_eq!(pareto_k(&[0.0; 20]), None);
        assert_eq!(pareto_k(&[1.0; 1000]), None);
        assert_eq!(pareto_k(&[]), None);
    }
}
