//! Compiles the KMS protos in proto/ (and the slice of etcd's API that `census` reads) into Rust
//! at build time with protox, so that building kube-kms needs no external `protoc`. One message,
//! `v2.EncryptResponse`, is written by hand instead (src/proto/encrypt_response.rs).

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
        // Written by hand (src/proto/encrypt_response.rs): the same message on the wire, with
        // the key_id and annotations shared between responses instead of copied into each.
        .extern_path(
            ".v2.EncryptResponse",
            "crate::proto::encrypt_response::EncryptResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
