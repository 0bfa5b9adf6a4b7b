//! Renormalization-group schemes used as forward diffusion processes.
//!
//! For discrete local spaces (spins, truncated oscillators, Ising) the scheme is a
//! *decimation schedule* ([`decimation`]): the forward process masks sites level by level,
//! finest first; the generative reverse process reveals them coarsest first, all sites of one
//! step at once and independently given the sites revealed before, so that
//! `p(s) = prod_k prod_{x in step k} p(s_x | s_<k)` is exactly normalised and sampled.

pub mod decimation;

pub use decimation::Schedule;
