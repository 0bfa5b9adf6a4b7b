//! Named model parameters as safetensors files: the one format every model's checkpoint uses.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};

/// Writes `params` (name, variable) to `path` as safetensors.
pub fn save(params: &[(String, Var)], path: &Path) -> Result<()> {
    let map: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&map, path).map_err(|e| Error::Io {
        file: path.display().to_string(),
        message: format!("cannot write parameters: {e}"),
    })
}

/// Loads a file written by [`save`] into `params`, converted to `dtype` on `device`. Every
/// parameter must be present with the variable's shape; otherwise the error names it (a
/// checkpoint of a differently configured model).
pub fn load(params: &[(String, Var)], path: &Path, device: &Device, dtype: DType) -> Result<()> {
    let file = path.display().to_string();
    let map = candle_core::safetensors::load(path, device).map_err(|e| Error::Io {
        file: file.clone(),
        message: format!("cannot read parameters: {e}"),
    })?;
    for (name, var) in params {
        let t = map.get(name).ok_or_else(|| Error::Io {
            file: file.clone(),
            message: format!("parameter `{name}` missing"),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::Io {
                file: file.clone(),
                message: format!(
                    "parameter `{name}` has shape {:?}, the model expects {:?} (another \
                     configuration?)",
                    t.dims(),
                    var.dims()
                ),
            });
        }
        var.set(&t.to_dtype(dtype)?)?;
    }
    Ok(())
}
