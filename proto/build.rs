//! Compiles goim's .proto files with protox (pure Rust: no `protoc` on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/goim/protocol.proto",
        "proto/goim/comet.proto",
        "proto/goim/logic.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // goim's Logic.Connect would clash with the generated `connect` constructor;
        // clients are built from a `Channel` instead.
        .build_transport(false)
        // Every protobuf `bytes` field is a `bytes::Bytes`: a push body is shared, not
        // copied, from the HTTP request to the comet's encode-once queue.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
