//! The fused kernels of `kernels/train.cu` (PTX built by build.rs) and what launching them needs:
//! raw device pointers of candle tensors, uninitialised outputs, launch shapes.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::cuda_backend::cudarc::driver::CudaFunction;
use candle_core::cuda_backend::cudarc::driver::{result, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::{CudaDevice, DType, Device, Shape, Storage, Tensor};

use crate::train::error::{Result, TrainError};

/// PTX of `kernels/train.cu`, compiled for `compute_90` at build time.
pub const TRAIN_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train.ptx"));
const MODULE: &str = "coretech_train";

/// A kernel of the module (loaded once per device, then looked up).
pub fn func(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev.get_or_load_custom_func(name, MODULE, TRAIN_PTX)?.into_cuda_function())
}

/// The CUDA device of a tensor.
pub fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        d => Err(TrainError::config("device", format!("CUDA kernel called on a {d:?} tensor"))),
    }
}

fn err(msg: impl Into<String>) -> TrainError {
    TrainError::Candle(candle_core::Error::Msg(msg.into()))
}

/// Device address of the first element of a contiguous CUDA tensor. The address stays valid as
/// long as the tensor lives; everything runs on the device's one stream, so work queued before a
/// tensor is dropped completes before its memory is reused.
pub fn dptr(t: &Tensor) -> Result<u64> {
    let dev = cuda_device(t)?;
    let stream = dev.cuda_stream();
    let (st, layout) = t.storage_and_layout();
    let (start, _) = layout.contiguous_offsets().ok_or_else(|| err(format!("kernel input of shape {:?} is not contiguous", t.dims())))?;
    let Storage::Cuda(cs) = &*st else { return Err(err("kernel input is not on the GPU")) };
    let base = match &cs.slice {
        CudaStorageSlice::BF16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::F32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::F64(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::I64(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U8(s) => s.device_ptr(&stream).0,
        _ => return Err(err(format!("no kernel takes {:?} tensors", t.dtype()))),
    };
    Ok(base + (start * t.dtype().size_in_bytes()) as u64)
}

/// Device address of a raw slice.
pub fn slice_ptr<T: DeviceRepr>(dev: &CudaDevice, s: &CudaSlice<T>) -> u64 {
    s.device_ptr(&dev.cuda_stream()).0
}

static POISON: AtomicBool = AtomicBool::new(false);

/// While on, [`empty`] fills new tensors with 0xFF bytes (NaN in bf16/f32/f64), so an element a
/// kernel fails to write shows up as NaN (selftest turns it on).
pub fn set_poison(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// An uninitialised tensor every element of which the caller's kernel writes.
pub fn empty(shape: impl Into<Shape>, dtype: DType, dev: &CudaDevice) -> Result<Tensor> {
    // SAFETY: callers launch a kernel that writes every element before anything reads it.
    let t = unsafe { Tensor::empty(shape, dtype, &Device::Cuda(dev.clone()))? };
    if POISON.load(Ordering::Relaxed) && t.elem_count() > 0 {
        let bytes = t.elem_count() * dtype.size_in_bytes();
        // SAFETY: the range is the tensor's own allocation; queued on its stream.
        unsafe { result::memset_d8_async(dptr(&t)?, 0xFF, bytes, dev.cuda_stream().cu_stream()) }.map_err(candle_core::Error::wrap)?;
    }
    Ok(t)
}

/// Uploads host data.
pub fn upload<T: DeviceRepr + Clone>(dev: &CudaDevice, v: &[T]) -> Result<CudaSlice<T>> {
    Ok(dev.cuda_stream().clone_htod(v).map_err(candle_core::Error::wrap)?)
}

/// A 1-D launch of `n` threads in blocks of `block`.
pub fn cfg_1d(n: usize, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(block as usize).max(1) as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// A launch of `grid` blocks of `block` threads.
pub fn cfg_grid(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// Launches `f` with the arguments pushed by `push`; maps launch errors.
#[macro_export]
#[doc(hidden)]
macro_rules! ct_launch {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        let f = $crate::train::cuda::kernels::func($dev, $name)?;
        let stream = $dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        $( b.arg(&$arg); )*
        // SAFETY: argument lists match the kernel signatures in train.cu (checked by selftest).
        unsafe { b.launch($cfg) }.map_err(candle_core::Error::wrap)?;
    }};
}
pub use crate::ct_launch as launch;
