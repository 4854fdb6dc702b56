//! Compiles our own `.proto` files with protox (pure Rust), so a build never needs `protoc`.
//!
//! The well-known types (`google.protobuf.Struct`, `Timestamp`) are not generated: prost maps
//! `.google.protobuf` to `::prost_types` by default (protox ships their descriptors). Messages
//! that carry secrets (the component token, TLS key, policy sources with API keys) get no derived
//! `Debug`: `src/proto.rs` implements a redacting one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/elastic_agent_client.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(false)
        .skip_debug([
            ".proto.StartUpInfo",
            ".proto.CheckinObserved",
            ".proto.ActionResponse",
            ".proto.UnitExpectedConfig",
            ".proto.Stream",
            ".proto.ElasticAPM",
        ])
        .compile_fds(fds)?;
    Ok(())
}
