//! Classical lattice field theories: actions, Markov-chain baselines, observables, exact
//! references, and the RG masked diffusion as an exact (Metropolis-Hastings / importance
//! weighted) sampler.

pub mod theory;

pub use theory::{Neighbours, Theory};
pub mod chain;
pub mod exact;
pub mod flow;
pub mod ising;
pub mod observables;
pub mod phi4;

pub use chain::{run_chain, ChainConfig, ChainResult, Configs, Method};
pub use observables::{analyse, analyse_chains, Analysis, Estimate, Recorder};
pub mod npy;
pub mod sample;
pub mod spins;
pub mod table;
pub mod variational;
