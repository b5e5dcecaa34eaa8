//! Compiles goim's .proto files and Starling's IM schema with protox (pure Rust: no `protoc`
//! on the build machine), and the IM schema's canonical proto3 JSON mapping with pbjson.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/goim/protocol.proto",
        "proto/goim/comet.proto",
        "proto/goim/logic.proto",
    ];
    let im = [
        "proto/starling/im/v1/im.proto",
        "proto/starling/im/v1/admin.proto",
    ];
    for f in files.iter().chain(&im) {
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

    // The IM bodies: prost types plus serde impls in the proto3 JSON mapping (lowerCamel
    // names, enums by name, 64-bit integers as strings), so pb and JSON come from one schema.
    let im_fds = protox::compile(im, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("starling_im_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&im_fds))?;
    // admin.proto's `Admin` service: its server for logic, its client for backends and tests.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(im_fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        // Every field on output, defaults included: a JSON reply always carries `code`, also
        // when it is 0 (reference im.md 13.4), and browsers need no defaulting of their own.
        .emit_fields()
        // A newer client's extra fields are ignored, as protobuf ignores unknown fields: an
        // older server must not refuse it.
        .ignore_unknown_fields()
        .build(&[".starling.im.v1"])?;
    Ok(())
}
