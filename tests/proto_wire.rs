//! Wire-level checks of our `.proto` against the spec (agent-protocol.md §3, §5, §13): messages
//! shaped like the Agent's survive a bytes round trip, and the known traps (skipped field
//! numbers, swapped `DataStream` numbers, `uint32` sizes, repeated enums holding 0) encode as
//! the Agent expects.

use prost::Message as _;
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use ti_sidecar::proto::{
    AgentInfo, AgentManagedMode, CheckinExpected, CheckinObserved, CheckinObservedVersionInfo,
    Component, ComponentLimits, ConnInfoServices, ConnectionSupports, DataStream, Features,
    FqdnFeature, Meta, Package, StartUpInfo, State, Stream, UnitExpected, UnitExpectedConfig,
    UnitLogLevel, UnitObserved, UnitType,
};

fn s(text: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    }
}

fn obj(fields: Vec<(&str, Value)>) -> Struct {
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn captured_expected() -> CheckinExpected {
    let stream_source = obj(vec![
        ("id", s("tc-1-indicators")),
        ("interval", s("5m")),
        ("secret_key", s("hmac")),
        (
            "data_stream",
            Value {
                kind: Some(Kind::StructValue(obj(vec![
                    ("dataset", s("ti_threatconnect.indicator")),
                    ("type", s("logs")),
                ]))),
            },
        ),
    ]);
    let input_source = obj(vec![
        ("id", s("tc-1")),
        ("type", s("ti_threatconnect")),
        (
            "streams",
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![Value {
                        kind: Some(Kind::StructValue(stream_source.clone())),
                    }],
                })),
            },
        ),
        (
            "policy",
            Value {
                kind: Some(Kind::StructValue(obj(vec![(
                    "revision",
                    Value {
                        kind: Some(Kind::NumberValue(2.0)),
                    },
                )]))),
            },
        ),
    ]);
    CheckinExpected {
        units: vec![
            UnitExpected {
                id: "ti_threatconnect-default-tc-1".into(),
                r#type: UnitType::Input as i32,
                state: State::Healthy as i32,
                config_state_idx: 1,
                config: Some(UnitExpectedConfig {
                    source: Some(input_source),
                    id: "tc-1".into(),
                    r#type: "ti_threatconnect".into(),
                    name: "threatconnect-1".into(),
                    revision: 2,
                    meta: Some(Meta {
                        source: None,
                        package: Some(Package {
                            source: None,
                            name: "ti_threatconnect".into(),
                            version: "1.2.3".into(),
                        }),
                    }),
                    data_stream: Some(DataStream {
                        namespace: "default".into(),
                        ..Default::default()
                    }),
                    streams: vec![Stream {
                        source: Some(stream_source),
                        id: "tc-1-indicators".into(),
                        data_stream: Some(DataStream {
                            source: None,
                            dataset: "ti_threatconnect.indicator".into(),
                            r#type: "logs".into(),
                            namespace: String::new(),
                        }),
                    }],
                }),
                log_level: UnitLogLevel::Info as i32,
            },
            UnitExpected {
                id: "ti_threatconnect-default".into(),
                r#type: UnitType::Output as i32,
                state: State::Healthy as i32,
                config_state_idx: 1,
                config: Some(UnitExpectedConfig {
                    source: Some(obj(vec![
                        ("type", s("otlp")),
                        ("endpoint", s("127.0.0.1:4317")),
                    ])),
                    r#type: "otlp".into(),
                    ..Default::default()
                }),
                log_level: UnitLogLevel::Debug as i32,
            },
        ],
        agent_info: Some(AgentInfo {
            id: "agent-id".into(),
            version: "9.1.0".into(),
            snapshot: false,
            mode: AgentManagedMode::Standalone as i32,
            unprivileged: true,
        }),
        features: Some(Features {
            source: Some(obj(vec![])),
            fqdn: Some(FqdnFeature { enabled: true }),
        }),
        features_idx: 2,
        component: Some(Component {
            limits: Some(ComponentLimits {
                source: None,
                go_max_procs: 4,
            }),
            apm_config: None,
        }),
        component_idx: 2,
        units_timestamp: None,
    }
}

#[test]
fn checkin_expected_round_trips() {
    let expected = captured_expected();
    let bytes = expected.encode_to_vec();
    let back = CheckinExpected::decode(bytes.as_slice()).expect("decode");
    assert_eq!(back, expected);
    assert_eq!(back.features_idx, 2);
    assert_eq!(back.component_idx, 2);
    let unit = &back.units[0];
    assert_eq!(unit.config_state_idx, 1);
    let config = unit.config.as_ref().expect("config");
    assert_eq!(
        config.streams[0].data_stream.as_ref().unwrap().dataset,
        "ti_threatconnect.indicator"
    );
    // A field the Agent leaves at its default decodes as the meaningful 0 value (INPUT, ERROR).
    let minimal = UnitExpected::decode(&[0x0a, 0x01, b'u'][..]).expect("decode");
    assert_eq!(minimal.r#type(), UnitType::Input);
    assert_eq!(minimal.log_level(), UnitLogLevel::Error);
    assert_eq!(minimal.state(), State::Starting);
}

#[test]
fn start_up_info_round_trips_and_max_message_size_is_varint_field_9() {
    let info = StartUpInfo {
        addr: "localhost:6789".into(),
        server_name: "0123456789abcdef0123456789abcdef".into(),
        token: "6d9a5c1c-2b0e-4b8f-9c1e-6f2f7c3a1d55".into(),
        ca_cert: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        peer_cert: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        peer_key: b"-----BEGIN RSA PRIVATE KEY-----\n".to_vec(),
        services: vec![ConnInfoServices::CheckinV2 as i32],
        supports: vec![ConnectionSupports::CheckinChunking as i32],
        max_message_size: 104_857_600,
        agent_info: Some(AgentInfo {
            id: "a".into(),
            version: "8.13.0".into(),
            ..Default::default()
        }),
    };
    let bytes = info.encode_to_vec();
    assert_eq!(StartUpInfo::decode(bytes.as_slice()).expect("decode"), info);

    let only_size = StartUpInfo {
        max_message_size: 104_857_600,
        ..Default::default()
    };
    // Tag (9 << 3) | 0 = 0x48: field 9, wire type varint. 104857600 = 0x6400000.
    assert_eq!(
        only_size.encode_to_vec(),
        vec![0x48, 0x80, 0x80, 0x80, 0x32]
    );

    // supports = [CheckinChunking] still encodes the 0 element (packed: tag 0x42, len 1, 0).
    let only_supports = StartUpInfo {
        supports: vec![ConnectionSupports::CheckinChunking as i32],
        ..Default::default()
    };
    assert_eq!(only_supports.encode_to_vec(), vec![0x42, 0x01, 0x00]);
}

#[test]
fn checkin_observed_skips_field_4() {
    let observed = CheckinObserved {
        token: "t".into(),
        features_idx: 2,
        component_idx: 3,
        ..Default::default()
    };
    // token = field 1 (0x0a), features_idx = field 5 varint (0x28), component_idx = field 6 (0x30).
    assert_eq!(
        observed.encode_to_vec(),
        vec![0x0a, 0x01, b't', 0x28, 0x02, 0x30, 0x03]
    );

    let first = CheckinObserved {
        version_info: Some(CheckinObservedVersionInfo {
            name: "ti-sidecar".into(),
            meta: Default::default(),
            build_hash: "abc".into(),
        }),
        supports: vec![ConnectionSupports::CheckinChunking as i32],
        pid: 7,
        ..Default::default()
    };
    let bytes = first.encode_to_vec();
    // version_info: field 3, length-delimited (0x1a); inside it name is 1 and build_hash is 4.
    assert_eq!(bytes[0], 0x1a);
    let inner_len = bytes[1] as usize;
    let inner = &bytes[2..2 + inner_len];
    assert_eq!(inner[0], 0x0a);
    assert_eq!(&inner[inner.len() - 5..], &[0x22, 0x03, b'a', b'b', b'c']);
    // supports: field 8 packed with a single 0 element, then pid: field 9 varint.
    assert_eq!(&bytes[2 + inner_len..], &[0x42, 0x01, 0x00, 0x48, 0x07]);
    // An observed unit: state is field 4, config_state_idx field 3.
    let unit = UnitObserved {
        id: "u".into(),
        r#type: UnitType::Output as i32,
        config_state_idx: 5,
        state: State::Healthy as i32,
        message: String::new(),
        payload: None,
    };
    assert_eq!(
        unit.encode_to_vec(),
        vec![0x0a, 0x01, b'u', 0x10, 0x01, 0x18, 0x05, 0x20, 0x02]
    );
}

#[test]
fn data_stream_has_dataset_2_and_type_3() {
    let ds = DataStream {
        source: None,
        dataset: "d".into(),
        r#type: "t".into(),
        namespace: "n".into(),
    };
    assert_eq!(
        ds.encode_to_vec(),
        vec![0x12, 0x01, b'd', 0x1a, 0x01, b't', 0x22, 0x01, b'n']
    );
}

#[test]
fn chunk_timestamp_is_field_7() {
    let chunk = CheckinExpected {
        units_timestamp: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(chunk.encode_to_vec(), vec![0x3a, 0x02, 0x08, 0x01]);
}
