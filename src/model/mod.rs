//! Generative models built on the RG schemes of [`crate::rg`].
//!
//! [`MaskedDiffusion`] is the RG masked-diffusion model for discrete local spaces: a
//! translation-equivariant denoiser that, at each reverse step of a decimation schedule,
//! returns a categorical distribution for every site revealed at that step given the sites
//! revealed before. It is exactly normalised, sampled exactly in one network pass per step,
//! and serves as a variational wavefunction `psi(s) = sqrt(p(s)) exp(i theta(s))`.

pub mod activation;
pub mod masked;

pub use masked::{MaskedDiffusion, ModelConfig, Phase, Sampled};
