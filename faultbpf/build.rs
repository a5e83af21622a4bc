//! Builds the kernel programs (faultbpf-ebpf) for the BPF target with
//! aya-build, so `include_bytes_aligned!` in `loader.rs` finds the object in
//! OUT_DIR.
//!
//! The BPF target needs `-Z build-std=core`, hence a compiler that has the
//! library source: rustup has none here, so the eBPF crate is built by
//! Debian's rustc (`rustc-web` + `rust-web-src`, under /usr), with
//! RUSTC_BOOTSTRAP=1 to allow `-Z`. `cargo xtask setup` installs all of it.

fn main() -> anyhow::Result<()> {
    // SAFETY: a build script is single-threaded at this point; the variable
    // is meant for the child cargo that aya-build spawns.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf = aya_build::Package {
        name: "faultbpf-ebpf",
        root_dir: "../faultbpf-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom("/usr"))
}
