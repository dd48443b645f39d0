//! Causal GQA attention forward/backward through cuDNN's fused flash-attention graphs, via the
//! C++ shim `csrc/sdpa.cpp` (cudnn-frontend, libcudnn.so.9 dlopen'ed at first use).

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

use candle_core::CudaDevice;

use crate::train::error::{Result, TrainError};

/// Shape of one attention call (mirrors `CtSdpaDesc` in sdpa.cpp).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SdpaDesc {
    /// Sequences (rows, or segments when ragged).
    pub b: i64,
    /// Query heads.
    pub hq: i64,
    /// Key/value heads.
    pub hkv: i64,
    /// Sequence length (ragged: the row length, an upper bound).
    pub s: i64,
    /// Head dim.
    pub d: i64,
    /// Tokens (ragged only).
    pub total: i64,
    /// Softmax scale.
    pub scale: f32,
    /// Packed segments.
    pub ragged: i32,
    /// Backward.
    pub bwd: i32,
}

impl SdpaDesc {
    /// The dense layout of `(b, t, hq, d)` queries over `hkv` key/value heads, forward or backward
    /// (the ragged fields are set by the caller when the rows hold packed segments).
    pub fn dense((b, t, hq, hkv, d): (usize, usize, usize, usize, usize), scale: f64, bwd: bool) -> Self {
        SdpaDesc {
            b: b as i64,
            hq: hq as i64,
            hkv: hkv as i64,
            s: t as i64,
            d: d as i64,
            total: 0,
            scale: scale as f32,
            ragged: 0,
            bwd: bwd as i32,
        }
    }
}

/// Tensor slots of `ct_sdpa_run` (index = uid in sdpa.cpp).
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Slot {
    /// Queries.
    Q = 1,
    /// Keys.
    K,
    /// Values.
    V,
    /// Output.
    O,
    /// Log-sum-exp statistics.
    Stats,
    /// Output gradient.
    DO,
    /// Query gradient.
    DQ,
    /// Key gradient.
    DK,
    /// Value gradient.
    DV,
    /// Query lengths (ragged).
    SeqQ,
    /// Key lengths (ragged).
    SeqKv,
    /// Query/output offsets (ragged).
    OffQ,
    /// Key/value offsets (ragged).
    OffKv,
    /// Stats offsets (ragged).
    OffStats,
}

/// Number of pointer slots (`N_UID` in sdpa.cpp).
pub const SLOTS: usize = 15;

extern "C" {
    fn ct_sdpa_last_error() -> *const c_char;
    fn ct_sdpa_init(lib: *const c_char) -> i32;
    fn ct_sdpa_backend_version() -> i64;
    fn ct_sdpa_prepare(d: *const SdpaDesc, workspace_bytes: *mut i64) -> i32;
    fn ct_sdpa_run(d: *const SdpaDesc, stream: *mut c_void, ptrs: *const *mut c_void, workspace: *mut c_void) -> i32;
}

fn last_error(what: &str) -> TrainError {
    // SAFETY: the shim returns a NUL-terminated thread-local string.
    let msg = unsafe { CStr::from_ptr(ct_sdpa_last_error()) }.to_string_lossy().into_owned();
    TrainError::Candle(candle_core::Error::Msg(format!("cuDNN attention {what}: {msg}")))
}

/// Loads libcudnn (soname `libcudnn.so.9`, or `CORETECH_CUDNN_LIB`) once and creates the handle.
pub fn init(dev: &CudaDevice) -> Result<i64> {
    dev.cuda_stream().context().bind_to_thread().map_err(candle_core::Error::wrap)?;
    static INIT: OnceLock<std::result::Result<i64, String>> = OnceLock::new();
    let r = INIT.get_or_init(|| {
        let lib = std::env::var("CORETECH_CUDNN_LIB").unwrap_or_else(|_| "libcudnn.so.9".into());
        let c = CString::new(lib).map_err(|e| e.to_string())?;
        // SAFETY: plain C call with a valid string.
        if unsafe { ct_sdpa_init(c.as_ptr()) } != 0 {
            return Err(last_error("init").to_string());
        }
        Ok(unsafe { ct_sdpa_backend_version() })
    });
    r.clone().map_err(|e| TrainError::Candle(candle_core::Error::Msg(e)))
}

/// Builds (once per shape) the graph and returns its workspace size in bytes.
pub fn prepare(dev: &CudaDevice, d: &SdpaDesc) -> Result<usize> {
    init(dev)?;
    let mut ws: i64 = 0;
    // SAFETY: `d` and `ws` are valid for the call.
    if unsafe { ct_sdpa_prepare(d, &mut ws) } != 0 {
        return Err(last_error("graph build"));
    }
    Ok(ws as usize)
}

/// Queues the graph on the device's stream with the given device addresses (0 = unused slot).
pub fn run(dev: &CudaDevice, d: &SdpaDesc, ptrs: &[u64; SLOTS], workspace: u64) -> Result<()> {
    let stream = dev.cuda_stream().cu_stream() as *mut c_void;
    let p: Vec<*mut c_void> = ptrs.iter().map(|&a| a as *mut c_void).collect();
    // SAFETY: pointers are live device allocations sized for `d` (the caller's contract).
    if unsafe { ct_sdpa_run(d, stream, p.as_ptr(), workspace as *mut c_void) } != 0 {
        return Err(last_error("run"));
    }
    Ok(())
}
