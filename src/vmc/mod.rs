//! Variational Monte Carlo with the RG diffusion wavefunction: exact samples from the reverse
//! RG flow, local energies through the Hamiltonian's connected elements, and the gradient of
//! the energy by one backward pass (estimators.md).

pub mod adam;
pub mod concentration;
pub mod driver;
pub mod local_energy;
pub mod minsr;

pub use driver::{IterationStats, Vmc, VmcConfig};
pub use local_energy::local_energies;
