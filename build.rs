//! Link-time setup for libtorch (only with the `torch` feature):
//! - an rpath to libtorch's lib folder, so `target/*/muxmed` runs without LD_LIBRARY_PATH;
//! - on CUDA builds, keep `libtorch_cuda.so` linked even though no symbol of it is referenced
//!   directly (the linker's --as-needed would drop it and CUDA would silently be unavailable;
//!   tch-rs issues #980 and #907);
//! - the libtorch folder in use, for `muxmed doctor`;
//! - `muxmed` (the front end) linked with `--exclude-libs ALL`, so that the linker drops the
//!   model code it never calls and, with it, libtorch (src/cli/mod.rs);
//! - MUXMED_SOURCE_ID, a hash of the sources, which `muxmed-torch` checks against the
//!   `muxmed` that hands it a command (src/cli/handoff.rs).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    source_id();
    // tch's C++ glue defines inline libtorch functions and vtables with default visibility;
    // in an executable the linker keeps such symbols alive (libtorch might interpose them),
    // and they pull libtorch in. Hidden, they are dropped with the rest of the unused code.
    // (An ELF linker option: GNU ld and lld both have it.)
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        println!("cargo:rustc-link-arg-bin=muxmed=-Wl,--exclude-libs,ALL");
    }
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        println!("cargo:rustc-env=MUXMED_LIBTORCH_LIB=");
        println!("cargo:rustc-env=MUXMED_LIBTORCH_VERSION=");
        return;
    }
    let Some(lib) = libtorch_lib_dir() else {
        // torch-sys reports the missing libtorch itself, with its own message.
        println!("cargo:rustc-env=MUXMED_LIBTORCH_LIB=");
        println!("cargo:rustc-env=MUXMED_LIBTORCH_VERSION=");
        return;
    };
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
    println!("cargo:rustc-env=MUXMED_LIBTORCH_LIB={}", lib.display());
    // headeronly/version.h: `#define TORCH_VERSION_MAJOR 2` and so on.
    let header = std::fs::read_to_string(lib.join("../include/torch/headeronly/version.h"))
        .unwrap_or_default();
    let part = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define TORCH_VERSION_{name} ")))
            .map(|v| v.trim().to_string())
    };
    let version = match (part("MAJOR"), part("MINOR"), part("PATCH")) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => "unknown".into(),
    };
    println!("cargo:rustc-env=MUXMED_LIBTORCH_VERSION={version}");
}

fn libtorch_lib_dir() -> Option<PathBuf> {
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok_and(|v| v == "1" || v == "true") {
        let py = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
        let out = Command::new(py)
            .args([
                "-c",
                "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?;
        return Some(PathBuf::from(s.trim()));
    }
    let root = PathBuf::from(std::env::var_os("LIBTORCH")?);
    let root = if root.is_relative() {
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?).join(root)
    } else {
        root
    };
    Some(root.join("lib"))
}

/// MUXMED_SOURCE_ID: FNV-1a (64 bit) over the path and bytes of every file under src/, and
/// of Cargo.toml, Cargo.lock and build.rs, in path order.
fn source_id() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = vec![
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        root.join("build.rs"),
    ];
    collect_files(&root.join("src"), &mut files);
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let bytes = std::fs::read(f).unwrap_or_default();
        for b in rel.to_string_lossy().bytes().chain([0]).chain(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    for dep in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={dep}");
    }
    println!("cargo:rustc-env=MUXMED_SOURCE_ID={h:016x}");
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
