//! The output unit's config: read, shown redacted, opened.

use std::sync::Arc;

use serde_json::{Value, json};

use super::UnitError;
use crate::policy::{self, OutputConfig};
use crate::sink::AnySink;

/// What the output unit asks for: a validated output block (`{type: otlp, endpoint, ssl?}`;
/// `ndjson` to a file also works, for tests and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputSpec(pub OutputConfig);

impl OutputSpec {
    /// Reads an output unit's `config.source`; the error names every bad field.
    pub fn parse(source: &Value) -> Result<Self, UnitError> {
        let config = policy::output_from_value(source).map_err(UnitError::Invalid)?;
        if let OutputConfig::Ndjson { path } = &config
            && path.as_os_str() == "-"
        {
            return Err(UnitError::StdoutOutput);
        }
        Ok(Self(config))
    }

    /// The spec as shown in diagnostics, secrets (`ssl.key`, endpoint credentials) redacted.
    pub fn redacted_json(&self) -> Value {
        match &self.0 {
            OutputConfig::Ndjson { path } => json!({"type": "ndjson", "path": path}),
            OutputConfig::Otlp { endpoint, ssl, .. } => {
                let shown = url::Url::parse(endpoint)
                    .map(|u| crate::config::fields::redact_url(&u))
                    .unwrap_or_else(|_| endpoint.clone());
                let mut v = json!({"type": "otlp", "endpoint": shown});
                if let Some(ssl) = ssl {
                    v["ssl"] = crate::config::fields::ssl_to_json(ssl);
                }
                v
            }
        }
    }

    /// Opens the sink every input unit writes to.
    pub async fn open(&self) -> Result<AnySink, UnitError> {
        crate::sink::open(&self.0)
            .await
            .map_err(|e| UnitError::OutputUnusable(Arc::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_configs_are_read_and_refused_by_field() {
        let kafka = OutputSpec::parse(&json!({"type": "kafka"})).expect_err("kafka");
        assert!(kafka.to_string().starts_with("type:"), "{kafka}");
        let stdout = OutputSpec::parse(&json!({"type": "ndjson", "path": "-"})).expect_err("-");
        assert!(matches!(stdout, UnitError::StdoutOutput));
        let otlp = OutputSpec::parse(&json!({"type": "otlp", "endpoint": "127.0.0.1:4317"}))
            .expect("otlp");
        assert_eq!(otlp.redacted_json()["endpoint"], "127.0.0.1:4317");
        let missing = OutputSpec::parse(&json!({"type": "otlp"})).expect_err("no endpoint");
        assert!(missing.to_string().contains("endpoint"), "{missing}");
    }

    #[test]
    fn batches_in_flight_are_the_exporters_sending_queue_consumers() {
        let otlp = |extra: Value| {
            let mut config = json!({"type": "otlp", "endpoint": "127.0.0.1:4317"});
            config
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            OutputSpec::parse(&config)
        };
        let in_flight = |spec: OutputSpec| match spec.0 {
            OutputConfig::Otlp {
                batches_in_flight, ..
            } => batches_in_flight,
            OutputConfig::Ndjson { .. } => unreachable!(),
        };
        assert_eq!(
            in_flight(otlp(json!({})).unwrap()),
            policy::default_otlp_batches_in_flight()
        );
        let eight = json!({"sending_queue": {"num_consumers": 8}});
        assert_eq!(in_flight(otlp(eight).unwrap()), 8);
        for bad in [json!(0), json!(65), json!("4")] {
            let e = otlp(json!({"sending_queue": {"num_consumers": bad}})).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("sending_queue.num_consumers"), "{e}");
            assert!(e.contains(&bad.to_string()), "{e}");
        }
        let typo = otlp(json!({"sending_queue": {"consumers": 8}})).unwrap_err();
        assert!(
            typo.to_string().contains("sending_queue.consumers"),
            "{typo}"
        );
    }
}
