//! Compiles the KMS protos in proto/ (and the slice of etcd's API that `census` reads) into Rust
//! at build time with protox, so that building kube-kms needs no external `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/v2/api.proto",
        "proto/v1beta1/api.proto",
        "proto/etcd/rpc.proto",
    ];
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
