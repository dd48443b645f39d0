//! Logits of a weights directory under the training forward (f32, CPU reference ops): what the
//! transformers compatibility check (`tests/compat/check_transformers.py`) compares against
//! `Qwen2ForCausalLM`, in both directions (our checkpoints in transformers, HF weights in ours).

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device};

use super::checkpoint::load_weights;
use super::error::{Result, TrainError};
use super::model::{param_specs, Qwen2};
use super::ops::ReferenceOps;
use super::Qwen2Config;
use crate::shard::Batch;

/// Logits `(ids.len(), vocab)` for one sequence, row-major f32.
pub fn logits(dir: &Path, ids: &[u32]) -> Result<Vec<f32>> {
    if ids.is_empty() {
        return Err(TrainError::Data("no token ids given".into()));
    }
    let cfg = Qwen2Config::from_hf_file(&dir.join("config.json"))?;
    let device = Device::Cpu;
    let params = load_weights(dir, &param_specs(&cfg), &device)?;
    let model = Qwen2::new(&cfg, DType::F32, &params, &device)?;
    let mut b = Batch { batch: 1, seq_len: ids.len(), input_ids: ids.to_vec(), loss_mask: vec![1; ids.len()], ..Default::default() };
    Batch::row_layout(&[ids.len() as u32], ids.len(), &mut b.position_ids, &mut b.segment_ids);
    let inp = model.inputs(&b)?;
    Ok(model.logits(&ReferenceOps, &inp)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Writes [`logits`] as raw little-endian f32 (`ids.len() × vocab`) to `out`.
pub fn write_logits(dir: &Path, ids: &[u32], out: &Path) -> Result<usize> {
    let v = logits(dir, ids)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| TrainError::file(out, e))?);
    for x in &v {
        f.write_all(&x.to_le_bytes()).map_err(|e| TrainError::file(out, e))?;
    }
    f.flush().map_err(|e| TrainError::file(out, e))?;
    Ok(v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_weights_directory_is_named() {
        let e = logits(Path::new("/nonexistent/ckpt"), &[1, 2]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ckpt"), "{e}");
        assert!(logits(Path::new("."), &[]).is_err());
    }
}
