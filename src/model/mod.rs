//! Generative models built on the RG schemes of [`crate::rg`].
//!
//! [`MaskedDiffusion`] is the RG masked-diffusion model for discrete local spaces: a
//! translation-equivariant denoiser that, at each reverse step of a decimation schedule,
//! returns a categorical distribution for every site revealed at that step given the sites
//! revealed before. It is exactly normalised, sampled exactly in one network pass per step
//! (the step-causal network: each site evaluated once, at its step), and serves as a
//! variational wavefunction `psi(s) = sqrt(p(s)) exp(i theta(s))`.
//!
//! [`ScoreNet`] is the RG-flow score model for real fields: an equivariant score `s(phi, t)`
//! of a Gaussian RG scheme with closed-form divergence, `J^T u` and gradient of the
//! divergence, so that its probability-flow ODE carries exact log densities (and scores).

pub mod activation;
pub mod dense_conv;
pub mod masked;
pub mod params;
pub mod score;
pub mod symmetry;
pub mod unique;

pub use masked::{
    dilations, Dilation, Frozen, MaskedDiffusion, ModelConfig, Network, Phase, Sampled,
};
pub use score::{ScoreConfig, ScoreNet};
pub use symmetry::SymmetryGroup;
