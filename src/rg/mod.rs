//! Renormalization-group schemes used as forward diffusion processes.
//!
//! For discrete local spaces (spins, truncated oscillators, Ising) the scheme is a
//! *decimation schedule* ([`decimation`]): the forward process masks sites level by level,
//! finest first; the generative reverse process reveals them coarsest first, all sites of one
//! step at once and independently given the sites revealed before, so that
//! `p(s) = prod_k prod_{x in step k} p(s_x | s_<k)` is exactly normalised and sampled.
//!
//! For real fields the scheme is a Gaussian kernel per Fourier mode ([`gaussian`]:
//! `carosso`, `polchinski`). Both kinds are chosen by name ([`SchemeFamily::of`]).

pub mod decimation;
pub mod gaussian;

pub use decimation::Schedule;
pub use gaussian::{GaussianOptions, GaussianScheme};

/// Which kind of scheme a `--scheme` name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeFamily {
    /// Decimation schedules (`rg`, `rg-colors=K`, `autoregressive`): discrete local spaces.
    Decimation,
    /// Gaussian kernels (`carosso`, `polchinski`): real fields.
    Gaussian,
}

impl SchemeFamily {
    pub fn of(name: &str) -> SchemeFamily {
        match name {
            "carosso" | "polchinski" => SchemeFamily::Gaussian,
            _ => SchemeFamily::Decimation,
        }
    }
}
