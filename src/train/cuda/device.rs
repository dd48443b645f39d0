//! Device-wide settings for training speed, and memory statistics.
//!
//! * cudarc allocates with `cuMemAllocAsync` from the device's default memory pool, whose release
//!   threshold is 0: every synchronize returns freed memory to the driver and the next step maps
//!   it again (measured: GEMMs 3.5x and copies 5x slower, ../shared/gpu/README.md §6.3). The
//!   threshold is set to the maximum so the pool keeps what it has, like PyTorch's caching
//!   allocator.
//! * cudarc records CUDA events on every kernel argument once a context has a non-default
//!   stream (candle creates one). The trainer runs everything on that one stream, so the events
//!   only cost host time; they are turned off.

use candle_core::cuda_backend::cudarc::driver::{result, sys};
use candle_core::CudaDevice;

use crate::train::error::Result;

fn pool(dev: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let cu = result::device::get(dev.cuda_stream().context().ordinal() as i32).map_err(candle_core::Error::wrap)?;
    Ok(unsafe { result::device::get_mem_pool(cu) }.map_err(candle_core::Error::wrap)?)
}

fn pool_attr_u64(dev: &CudaDevice, attr: sys::CUmemPool_attribute) -> Result<u64> {
    let p = pool(dev)?;
    let mut v: u64 = 0;
    unsafe { result::mem_pool::get_attribute(p, attr, &mut v as *mut u64 as *mut std::ffi::c_void) }.map_err(candle_core::Error::wrap)?;
    Ok(v)
}

fn set_pool_attr_u64(dev: &CudaDevice, attr: sys::CUmemPool_attribute, mut v: u64) -> Result<()> {
    let p = pool(dev)?;
    unsafe { result::mem_pool::set_attribute(p, attr, &mut v as *mut u64 as *mut std::ffi::c_void) }.map_err(candle_core::Error::wrap)?;
    Ok(())
}

/// Keeps freed memory in the pool and turns off per-argument event recording (see the module
/// doc). Idempotent.
pub fn configure(dev: &CudaDevice) -> Result<()> {
    set_pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX)?;
    // SAFETY: every kernel, copy and allocation of the trainer goes to the device's one stream,
    // so stream order alone orders them; the events would only be needed across streams.
    unsafe { dev.disable_event_tracking() };
    Ok(())
}

/// Memory figures of the device's pool (what the trainer's tensors use, like PyTorch's
/// `max_memory_allocated` / `max_memory_reserved`) and of the whole device.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemStats {
    /// Peak bytes in use by allocations from the pool since the last reset.
    pub pool_used_peak: u64,
    /// Peak bytes the pool held from the driver since the last reset.
    pub pool_reserved_peak: u64,
    /// Bytes in use on the whole device now (`cuMemGetInfo`: total − free; all processes,
    /// the CUDA context, cuBLAS/cuDNN workspaces included).
    pub device_used: u64,
}

/// Resets the pool's high-water marks.
pub fn reset_peaks(dev: &CudaDevice) -> Result<()> {
    set_pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)?;
    set_pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0)?;
    Ok(())
}

/// Current memory figures.
pub fn mem_stats(dev: &CudaDevice) -> Result<MemStats> {
    dev.cuda_stream().context().bind_to_thread().map_err(candle_core::Error::wrap)?;
    let (free, total) = result::mem_get_info().map_err(candle_core::Error::wrap)?;
    Ok(MemStats {
        pool_used_peak: pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        pool_reserved_peak: pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        device_used: (total - free) as u64,
    })
}

/// Bytes a new allocation can get: free on the device (`cuMemGetInfo`) plus what the pool holds
/// but does not use (kept by the release threshold, see the module doc).
pub fn available_bytes(dev: &CudaDevice) -> Result<u64> {
    dev.cuda_stream().context().bind_to_thread().map_err(candle_core::Error::wrap)?;
    dev.cuda_stream().synchronize().map_err(candle_core::Error::wrap)?;
    let (free, _) = result::mem_get_info().map_err(candle_core::Error::wrap)?;
    let reserved = pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
    let used = pool_attr_u64(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
    Ok(free as u64 + reserved.saturating_sub(used))
}

/// The GPU's name (e.g. "NVIDIA H100 80GB HBM3").
pub fn gpu_name(dev: &CudaDevice) -> Result<String> {
    Ok(dev.cuda_stream().context().name().map_err(candle_core::Error::wrap)?)
}

/// Measured bf16 matmul rate (TFLOP/s): median of `reps` timed 8192³ products through candle
/// (cuBLAS), after warm-up; the "measured peak" MFU denominator (the PyTorch reference script
/// measures the same product the same way).
pub fn matmul_tflops(dev: &CudaDevice, reps: usize) -> Result<f64> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    let d = candle_core::Device::Cuda(dev.clone());
    let n = 8192usize;
    let a = candle_core::Tensor::randn(0f32, 1.0, (n, n), &d)?.to_dtype(candle_core::DType::BF16)?;
    let b = candle_core::Tensor::randn(0f32, 1.0, (n, n), &d)?.to_dtype(candle_core::DType::BF16)?;
    for _ in 0..3 {
        a.matmul(&b)?;
    }
    let stream = dev.cuda_stream();
    let mut ts = Vec::new();
    for _ in 0..reps.max(1) {
        let s = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(candle_core::Error::wrap)?;
        let c = a.matmul(&b)?;
        let e = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(candle_core::Error::wrap)?;
        stream.synchronize().map_err(candle_core::Error::wrap)?;
        drop(c);
        ts.push(s.elapsed_ms(&e).map_err(candle_core::Error::wrap)? as f64 / 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(2.0 * (n as f64).powi(3) / ts[ts.len() / 2] / 1e12)
}
