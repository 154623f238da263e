//! With the `cuda` feature, compiles the CUDA kernels in `kernels/` to PTX (loaded at run time by
//! `src/flash.rs`, `src/fused_ops.rs`, `src/mamba.rs`, `src/train_attention.rs` and `src/train_ops.rs`). nvcc comes from `NVCC`,
//! `$CUDA_HOME/bin` or `PATH`, as for candle's own kernels.
//! The PTX targets compute_80 (the first with bf16 tensor-core mma); the driver compiles it for the
//! GPU at hand, so one build serves Ampere, Ada and Hopper. `flash_hopper.cu` uses Hopper-only
//! instructions (wgmma) and targets compute_90a: `src/flash.rs` loads it on compute capability 9.0 only.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    // Each kernel and the PTX architecture it is compiled for.
    let kernels = [
        ("flash_prefill", "compute_80"),
        ("flash_hopper", "compute_90a"),
        ("decode_attention", "compute_80"),
        ("causal_softmax", "compute_80"),
        ("train_ops", "compute_80"),
        ("fused_ops", "compute_80"),
        ("selective_scan", "compute_80"),
    ];
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/half_tiles.cuh");
    for (kernel, _) in kernels {
        println!("cargo::rerun-if-changed=kernels/{kernel}.cu");
    }
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("NVCC").map(PathBuf::from).unwrap_or_else(|| match std::env::var_os("CUDA_HOME") {
        Some(home) => PathBuf::from(home).join("bin").join("nvcc"),
        None => PathBuf::from("nvcc"),
    });
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (kernel, arch) in kernels {
        let source = format!("kernels/{kernel}.cu");
        let status = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch={arch}"), "-O3", "-std=c++17", &source, "-o"])
            .arg(out_dir.join(format!("{kernel}.ptx")))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{} failed on {source} ({s})", nvcc.display()),
            Err(e) => panic!("the cuda feature needs nvcc to build {source}: running {} failed: {e}", nvcc.display()),
        }
    }
}
