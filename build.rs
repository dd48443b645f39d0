//! Build script. Without the `cuda` feature it does nothing (the plain build and CI stay fast).
//! With it, it compiles the CUDA training backend's native parts:
//! * `src/train/cuda/kernels/*.cu` to PTX for sm_90 with `nvcc` (from `CUDA_HOME`/`PATH`, the
//!   recipe in `../shared/gpu/setup-cuda.sh`), embedded with `include_str!`;
//! * `src/train/cuda/csrc/sdpa.cpp`, the cuDNN attention shim, with the host C++ compiler against
//!   the headers `scripts/fetch-cudnn.sh` unpacks (`CORETECH_CUDNN_INCLUDE`); libcudnn is
//!   loaded at run time, so nothing links against it here.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for v in ["CUDA_HOME", "CUDA_COMPUTE_CAP", "CORETECH_CUDNN_INCLUDE", "NVCC", "CXX"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let cuda_home = env::var("CUDA_HOME").ok().map(PathBuf::from);
    build_ptx(&out, cuda_home.as_deref());
    build_sdpa(&out, cuda_home.as_deref());
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: could not start {:?}: {e}", cmd.get_program()));
    if !status.success() {
        panic!("{what} failed ({status}): {cmd:?}");
    }
}

fn build_ptx(out: &Path, cuda_home: Option<&Path>) {
    let nvcc = env::var("NVCC").map(PathBuf::from).unwrap_or_else(|_| match cuda_home {
        Some(h) if h.join("bin/nvcc").exists() => h.join("bin/nvcc"),
        _ => PathBuf::from("nvcc"),
    });
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let dir = Path::new("src/train/cuda/kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("src/train/cuda/kernels")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    names.sort();
    for src in names {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_stem().expect("file name").to_string_lossy().to_string();
        let ptx = out.join(format!("{stem}.ptx"));
        // compute_XX PTX: the driver compiles it for the card at module load.
        run(
            Command::new(&nvcc).args(["-ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}")]).arg(&src).arg("-o").arg(&ptx),
            "nvcc -ptx",
        );
    }
}

fn build_sdpa(out: &Path, cuda_home: Option<&Path>) {
    let src = Path::new("src/train/cuda/csrc/sdpa.cpp");
    println!("cargo:rerun-if-changed={}", src.display());
    let cudnn = env::var("CORETECH_CUDNN_INCLUDE")
        .unwrap_or_else(|_| panic!("--features cuda needs CORETECH_CUDNN_INCLUDE: run scripts/fetch-cudnn.sh and export what it prints"));
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let obj = out.join("sdpa.o");
    let mut flags = vec!["-std=c++17".to_string(), "-O2".into(), "-fPIC".into(), format!("-I{cudnn}")];
    if let Some(h) = cuda_home {
        flags.push(format!("-I{}", h.join("include").display()));
    }
    // The cudnn-frontend headers take minutes to compile: an optional object cache keyed by the
    // source, compiler and flags (CORETECH_CXX_CACHE, a directory) saves rebuilds of build.rs.
    println!("cargo:rerun-if-env-changed=CORETECH_CXX_CACHE");
    let source = std::fs::read(src).expect("sdpa.cpp");
    let key = fnv1a(&[source.as_slice(), cxx.as_bytes(), flags.join(" ").as_bytes()]);
    let cached = env::var_os("CORETECH_CXX_CACHE").map(|d| PathBuf::from(d).join(format!("sdpa-{key:016x}.o")));
    match &cached {
        Some(c) if c.exists() => {
            std::fs::copy(c, &obj).expect("copy cached sdpa.o");
        }
        _ => {
            run(Command::new(&cxx).args(&flags).arg("-c").arg(src).arg("-o").arg(&obj), "c++ sdpa.cpp");
            if let Some(c) = &cached {
                let _ = std::fs::create_dir_all(c.parent().expect("cache dir"));
                let _ = std::fs::copy(&obj, c);
            }
        }
    }
    let lib = out.join("libct_sdpa.a");
    let _ = std::fs::remove_file(&lib);
    run(Command::new("ar").arg("crs").arg(&lib).arg(&obj), "ar");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=ct_sdpa");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=dl");
}

/// FNV-1a over byte strings (stable across toolchains, unlike `DefaultHasher`).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
