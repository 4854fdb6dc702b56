//! Vendor platforms. Each platform module has the same shape: `config.rs`, `client.rs`, `ecs.rs`.

pub mod threatconnect;
