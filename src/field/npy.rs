//! NumPy `.npy` files (format version 1.0), written directly: the magic `\x93NUMPY`, the
//! version bytes `1 0`, a little-endian `u16` header length, and an ASCII header
//! `{'descr': '<f8', 'fortran_order': False, 'shape': (B, Ly, Lx), }` padded with spaces and
//! a final newline so that the data starts at a multiple of 64 bytes; then the data in C
//! order. Spins are `int8` (`|i1`), fields `float64` (`<f8`).

use std::path::Path;

use crate::error::{Error, Result};

/// The element types written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    I8,
    F64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
            Dtype::I8 => "|i1",
            Dtype::F64 => "<f8",
        }
    }
}

/// The header (magic to newline) of an array of `dtype` and `shape`.
pub fn header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    // magic (6) + version (2) + length (2) + dict + newline, a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes `int8` spins of `shape` to `path` (atomically).
pub fn write_i8(path: &Path, shape: &[usize], data: &[i8]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let mut bytes = header(Dtype::I8, shape);
    bytes.extend(data.iter().map(|&v| v as u8));
    crate::run::write_atomic(path, &bytes)
}

/// Writes `float64` values of `shape` to `path` (atomically).
pub fn write_f64(path: &Path, shape: &[usize], data: &[f64]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let mut bytes = header(Dtype::F64, shape);
    bytes.reserve(8 * data.len());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::run::write_atomic(path, &bytes)
}

fn check_len(path: &Path, shape: &[usize], len: usize) -> Result<()> {
    if shape.iter().product::<usize>() != len {
        return Err(Error::Io {
            file: path.display().to_string(),
            message: format!("{len} values do not fill an array of shape {shape:?}"),
        });
    }
    Ok(())
}

/// Reads a `float64` array written by [`write_f64`] (or by NumPy, C order, little endian):
/// `(shape, values)`; any other file is refused with a message naming it.
pub fn read_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let file = path.display().to_string();
    let err = |message: String| Error::Io {
        file: file.clone(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (descr, fortran, shape, start) =
        parse_header(&bytes).map_err(|e| err(format!("not a .npy file: {e}")))?;
    if descr != "<f8" || fortran {
        return Err(err(format!(
            "need a C-order float64 array ('<f8'), found descr '{descr}'{}",
            if fortran { " in Fortran order" } else { "" }
        )));
    }
    let n: usize = shape.iter().product();
    if bytes.len() != start + 8 * n {
        return Err(err(format!(
            "shape {shape:?} needs {} data bytes, the file has {}",
            8 * n,
            bytes.len() - start
        )));
    }
    let data = bytes[start..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((shape, data))
}

/// Reads the header of `.npy` bytes: `(descr, fortran_order, shape, data offset)`, checking
/// the magic, the version and the padding (used by the tests; a minimal parser of the
/// dictionaries written here).
pub fn parse_header(
    bytes: &[u8],
) -> std::result::Result<(String, bool, Vec<usize>, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("bad magic".into());
    }
    if bytes[6] != 1 || bytes[7] != 0 {
        return Err(format!("version {}.{}", bytes[6], bytes[7]));
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let start = 10 + hlen;
    if !start.is_multiple_of(64) {
        return Err(format!("data starts at {start}, not a multiple of 64"));
    }
    let text = std::str::from_utf8(&bytes[10..start]).map_err(|e| e.to_string())?;
    if !text.ends_with('\n') {
        return Err("header does not end with a newline".into());
    }
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = text
            .find(&format!("'{key}': "))
            .ok_or(format!("no {key}"))?;
        Ok(&text[at + key.len() + 4..])
    };
    let descr = field("descr")?;
    let descr = descr[1..descr[1..].find('\'').ok_or("descr")? + 1].to_string();
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_s = field("shape")?;
    let close = shape_s.find(')').ok_or("shape")?;
    let shape = shape_s[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|e| e.to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((descr, fortran, shape, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_follows_the_format() {
        for shape in [vec![3usize], vec![10, 8, 8], vec![100000, 64]] {
            let h = header(Dtype::F64, &shape);
            assert_eq!(h.len() % 64, 0);
            let (d, f, s, off) = parse_header(&h).unwrap();
            assert_eq!(
                (d.as_str(), f, s, off),
                ("<f8", false, shape.clone(), h.len())
            );
        }
        let h = header(Dtype::I8, &[2, 4]);
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .starts_with("{'descr': '|i1', 'fortran_order': False, 'shape': (2, 4), }"));
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize + 10, h.len());
    }
}
