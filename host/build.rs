//! Embeds the proxy component (built for wasm32-wasip2 by `make
//! build-component`) into the host binary, so one file is all a user runs.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DNSPROXY_COMPONENT_WASM");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wasm = match std::env::var_os("DNSPROXY_COMPONENT_WASM") {
        Some(p) => PathBuf::from(p),
        // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
        None => target_dir(&out).join("wasm32-wasip2/release/proxy-component.wasm"),
    };
    println!("cargo:rerun-if-changed={}", wasm.display());
    let code = if wasm.is_file() {
        format!(
            "pub const WASM: &[u8] = include_bytes!({:?});\n",
            wasm.display().to_string()
        )
    } else {
        println!(
            "cargo:warning=component not found at {}; the binary will need --component (run `make build-host`)",
            wasm.display()
        );
        "pub const WASM: &[u8] = &[];\n".to_owned()
    };
    std::fs::write(out.join("component.rs"), code).expect("OUT_DIR is writable");
}

/// The cargo target directory: OUT_DIR is `<target>/<profile>/build/<pkg>-<hash>/out`,
/// or `<target>/<triple>/<profile>/build/...` when `--target` is given (the static
/// musl build).
fn target_dir(out: &Path) -> PathBuf {
    let Some(above_profile) = out.ancestors().nth(4) else {
        return PathBuf::from("target");
    };
    let triple = std::env::var("TARGET").unwrap_or_default();
    match above_profile.parent() {
        Some(parent)
            if above_profile
                .file_name()
                .is_some_and(|n| n == triple.as_str()) =>
        {
            parent.to_path_buf()
        }
        _ => above_profile.to_path_buf(),
    }
}
