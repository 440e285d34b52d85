//! Compiles `proto/qpc.proto` with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/qpc.proto");
    let file_descriptors = protox::compile(["proto/qpc.proto"], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(file_descriptors)?;
    Ok(())
}
