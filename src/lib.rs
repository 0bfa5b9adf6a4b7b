//! rgdiff: renormalizing diffusion models for quantum ground states and lattice field
//! sampling, with the exact solvers they are checked against.

pub mod bench;
pub mod error;
pub mod exact;
pub mod field;
pub mod hilbert;
pub mod lattice;
pub mod model;
pub mod operator;
pub mod parallel;
pub mod report;
pub mod rg;
pub mod run;
pub mod scalar;
pub mod spec;
pub mod stats;
pub mod vmc;

pub use error::{Error, Result};
