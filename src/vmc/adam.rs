//! Adam (no weight decay) over the model's named parameters, with its moment estimates
//! checkpointable so that a resumed run continues bit for bit. (candle-nn's AdamW has weight
//! decay 0.01 by default and no way to save its state.)
//!
//! `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2`,
//! `theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    pub fn new(params: &[(String, Var)]) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        Ok(Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: params
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<candle_core::Result<_>>()?,
            v: params
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, params: &[(String, Var)], grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        for (k, (_, p)) in params.iter().enumerate() {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            self.m[k] = ((&self.m[k] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            self.v[k] = ((&self.v[k] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let mhat = (&self.m[k] / c1)?;
            let vhat = (&self.v[k] / c2)?;
            let upd = (mhat / (vhat.sqrt()? + self.eps)?)?;
            p.set(&(p.as_tensor() - (upd * lr)?)?)?;
        }
        Ok(())
    }

    /// Saves the moments as safetensors (`m.NAME`, `v.NAME`).
    pub fn save(&self, params: &[(String, Var)], path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (k, (name, _)) in params.iter().enumerate() {
            map.insert(format!("m.{name}"), self.m[k].clone());
            map.insert(format!("v.{name}"), self.v[k].clone());
        }
        candle_core::safetensors::save(&map, path).map_err(|e| Error::Io {
            file: path.display().to_string(),
            message: format!("cannot write optimizer state: {e}"),
        })
    }

    /// Loads moments saved by [`Adam::save`]; `t` is restored by the caller.
    pub fn load(&mut self, params: &[(String, Var)], path: &Path) -> Result<()> {
        let file = path.display().to_string();
        let device = params[0].1.device().clone();
        let map = candle_core::safetensors::load(path, &device).map_err(|e| Error::Io {
            file: file.clone(),
            message: format!("cannot read optimizer state: {e}"),
        })?;
        for (k, (name, p)) in params.iter().enumerate() {
            let get = |key: String| {
                map.get(&key).cloned().ok_or_else(|| Error::Io {
                    file: file.clone(),
                    message: format!("`{key}` missing"),
                })
            };
            self.m[k] = get(format!("m.{name}"))?.to_dtype(p.dtype())?;
            self.v[k] = get(format!("v.{name}"))?.to_dtype(p.dtype())?;
        }
        Ok(())
    }
}
