//! Messages and gRPC stubs of the Elastic Agent V2 component protocol, generated from
//! `proto/elastic_agent_client.proto` (our own description of the wire contract).
//!
//! Messages that carry secrets have no derived `Debug` (see `build.rs`); the impls below show
//! their shape but never the component token, the TLS private key, an APM key, or a policy
//! `source` (which holds API keys and secret keys).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("proto");

use std::fmt;

use crate::redact::REDACTED;

/// `Some("[REDACTED]")` when a secret field is set, `None` when it is empty.
fn mask(set: bool) -> Option<&'static str> {
    set.then_some(REDACTED)
}

impl fmt::Debug for StartUpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartUpInfo")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("token", &mask(!self.token.is_empty()))
            .field("ca_cert_len", &self.ca_cert.len())
            .field("peer_cert_len", &self.peer_cert.len())
            .field("peer_key", &mask(!self.peer_key.is_empty()))
            .field("services", &self.services)
            .field("supports", &self.supports)
            .field("max_message_size", &self.max_message_size)
            .field("agent_info", &self.agent_info)
            .finish()
    }
}

impl fmt::Debug for CheckinObserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckinObserved")
            .field("token", &mask(!self.token.is_empty()))
            .field("units", &self.units)
            .field("version_info", &self.version_info)
            .field("features_idx", &self.features_idx)
            .field("component_idx", &self.component_idx)
            .field("units_timestamp", &self.units_timestamp)
            .field("supports", &self.supports)
            .field("pid", &self.pid)
            .finish()
    }
}

impl fmt::Debug for ActionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionResponse")
            .field("token", &mask(!self.token.is_empty()))
            .field("id", &self.id)
            .field("status", &self.status)
            .field("result_len", &self.result.len())
            .field("diagnostic", &self.diagnostic)
            .finish()
    }
}

impl fmt::Debug for UnitExpectedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitExpectedConfig")
            .field("source", &mask(self.source.is_some()))
            .field("id", &self.id)
            .field("type", &self.r#type)
            .field("name", &self.name)
            .field("revision", &self.revision)
            .field("meta", &self.meta)
            .field("data_stream", &self.data_stream)
            .field("streams", &self.streams)
            .finish()
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("source", &mask(self.source.is_some()))
            .field("id", &self.id)
            .field("data_stream", &self.data_stream)
            .finish()
    }
}

impl fmt::Debug for ElasticApm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticApm")
            .field("tls", &self.tls)
            .field("environment", &self.environment)
            .field("api_key", &mask(!self.api_key.is_empty()))
            .field("secret_token", &mask(!self.secret_token.is_empty()))
            .field("hosts", &self.hosts)
            .field("global_labels", &self.global_labels)
            .field("sampling_rate", &self.sampling_rate)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let info = StartUpInfo {
            token: "tok-SECRET".into(),
            peer_key: b"KEY-SECRET".to_vec(),
            ..Default::default()
        };
        let obs = CheckinObserved {
            token: "tok-SECRET".into(),
            ..Default::default()
        };
        let resp = ActionResponse {
            token: "tok-SECRET".into(),
            ..Default::default()
        };
        let text = format!("{info:?} {obs:?} {resp:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
}
