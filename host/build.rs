//! Embeds the proxy component (built for wasm32-wasip2 by `make
//! build-component`) into the host binary, so one file is all a user runs,
//! with its SHA-256 digest: the name of its precompiled artefact comes from
//! the digest, and hashing the component at every start would read all of
//! it (12 MB of the binary resident for nothing, `engine::artefact_name`).

use std::path::{Path, PathBuf};

use sha2::Digest as _;

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
        let bytes = std::fs::read(&wasm).expect("the component is readable");
        format!(
            "pub const WASM: &[u8] = include_bytes!({:?});\npub const WASM_SHA256: [u8; 32] = {:?};\n",
            wasm.display().to_string(),
            <[u8; 32]>::from(sha2::Sha256::digest(&bytes)),
        )
    } else {
        println!(
            "cargo:warning=component not found at {}; the binary will need --component (run `make build-host`)",
            wasm.display()
        );
        "pub const WASM: &[u8] = &[];\npub const WASM_SHA256: [u8; 32] = [0; 32];\n".to_owned()
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
