//! The CUDA side of the trainer (feature `cuda`): device setup (memory pool, event tracking,
//! memory statistics), the fused kernels compiled at build time (`kernels/*.cu` → PTX), and the
//! cuDNN attention shim (`csrc/sdpa.cpp`). [`crate::train::ops::CudaOps`] puts them behind the
//! `Ops` trait.

pub mod device;
pub mod kernels;
pub mod sdpa;
