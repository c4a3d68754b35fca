//! Compiles the Secrets Store CSI driver's provider proto in proto/ into Rust at build time with
//! protox, so that building the provider needs no external `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/v1alpha1/service.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
