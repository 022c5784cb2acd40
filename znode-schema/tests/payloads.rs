//! Round trips for every payload and decoding errors that name the path and field.

use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;
use znode_schema::codec::DecodeErrorKind;
use znode_schema::*;

fn artifact() -> Artifact {
    Artifact {
        url: "https://example.test/api-1.4.0.tar.gz".into(),
        sha256: "ab".repeat(32),
        size: 12345,
        format: ArtifactFormat::TarGz,
        signature: None,
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let bytes = encode(&value);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("{\"schema\":1,"), "{text}");
    let back: T = decode("/dc/x", &bytes).unwrap();
    assert_eq!(back, value);
}

#[test]
fn every_payload_round_trips() {
    round_trip(Current {
        host: "web-01".into(),
        service: "api".into(),
        version: "1.4.0".into(),
        state: "online".into(),
        pid: Some(4242),
        since: "2026-11-22T10:00:00Z".into(),
        sidecar: "0.1.0".into(),
        last_error: Some("download failed".into()),
        report: Some(HostReport {
            version: "1.5.0".into(),
            activity: Activity::Downloading,
            since: "t".into(),
            bytes: Some(10),
            size: Some(100),
            position: None,
            waiting_for: None,
            error: None,
        }),
    });
    round_trip(Staging {
        service: "api".into(),
        version: "1.4.0".into(),
        artifact: artifact(),
        policy: Policy {
            quorum: Quorum::Percent(60),
            max_parallel: 2,
            bake: HumanDuration::millis(500),
            health_deadline: HumanDuration::secs(30),
            max_failures: 1,
            canary: 2,
            auto_promote: Some(HumanDuration::secs(60)),
            on_failure: znode_schema::OnFailure::Rollback,
            on_halt: znode_schema::OnHalt::Rollback,
            progress_deadline: Some(HumanDuration::secs(600)),
        },
        staged_at: "2026-11-22T10:00:00Z".into(),
        staged_by: "ops@laptop".into(),
    });
    round_trip(Release {
        service: "api".into(),
        version: "1.4.0".into(),
        artifact: Artifact { format: ArtifactFormat::File, ..artifact() },
        staged_at: "t".into(),
        staged_by: "u@h".into(),
        policy: Some(Policy::default()),
    });
    round_trip(Ticket { host: "web-01".into(), version: "1.4.0".into(), at: "t".into() });
    for state in [DeployState::Active, DeployState::Paused, DeployState::Halted] {
        round_trip(DeployEntry {
            service: "api".into(),
            version: "1.4.0".into(),
            state,
            reason: Some("why".into()),
            failures: 2,
            failed_hosts: vec!["web-02".into()],
            canaries: vec!["web-01".into(), "web-02".into()],
            canaries_done: vec!["web-02".into()],
            canary_paused_at: Some("t".into()),
            promoted_by: Some("ops@laptop".into()),
            rolling_back_to: Some("1.3.0".into()),
            created_at: "t".into(),
            created_by: "u@h".into(),
        });
    }
    round_trip(Upgrading {
        host: "web-01".into(),
        service: Some("api".into()),
        from: Some("1.3.0".into()),
        to: "1.4.0".into(),
        since: "t".into(),
    });
    round_trip(Upgrading { host: "web-01".into(), service: None, from: None, to: "1.4.0".into(), since: "t".into() });
    round_trip(HistoryEvent {
        at: "t".into(),
        event: EventKind::HostFailed,
        service: "api".into(),
        version: Some("1.4.0".into()),
        host: Some("web-01".into()),
        detail: Some("health check failed".into()),
        by: None,
        count: None,
    });
}

#[test]
fn spec_examples_decode() {
    let staging = r#"{"schema":1,"service":"api","version":"1.4.0","artifact":{"url":"https://x/api-1.4.0.tar.gz","sha256":"00","size":12345,"format":"tar.gz"},"policy":{"quorum":"2","max_parallel":1,"bake":"10s","health_deadline":"60s","max_failures":0},"staged_at":"t","staged_by":"u","extra":"ignored"}"#;
    let s: Staging = decode("/dc/staging/api", staging.as_bytes()).unwrap();
    assert_eq!(s.policy.quorum, Quorum::Count(2));
    assert_eq!(s.policy.bake, HumanDuration::secs(10));
    let entry = r#"{"schema":1,"service":"api","version":"1.4.0","state":"active","reason":null,"failures":0,"created_at":"t","created_by":"u"}"#;
    let e: DeployEntry = decode("/dc/deploy/deploy-0000000001", entry.as_bytes()).unwrap();
    assert_eq!(e.state, DeployState::Active);
}

fn kind<T: DeserializeOwned + Debug>(json: &str) -> DecodeErrorKind {
    let err = decode::<T>("/dc/staging/api", json.as_bytes()).unwrap_err();
    assert_eq!(err.path, "/dc/staging/api");
    assert!(err.to_string().starts_with("invalid payload at /dc/staging/api: "), "{err}");
    err.kind
}

#[test]
fn malformed_json_names_the_position() {
    match kind::<Ticket>("{\"schema\":1,\n\"host\": ") {
        DecodeErrorKind::Malformed { line, .. } => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(kind::<Ticket>("[1,2]"), DecodeErrorKind::NotAnObject);
    assert_eq!(kind::<Ticket>(""), kind::<Ticket>(""));
    assert_eq!(decode::<Ticket>("/p", b"\xff\xfe").unwrap_err().kind, DecodeErrorKind::NotUtf8);
}

#[test]
fn missing_fields_are_named_with_their_path() {
    assert_eq!(
        kind::<Ticket>(r#"{"schema":1,"host":"h","at":"t"}"#),
        DecodeErrorKind::MissingField { field: "version".into() }
    );
    let no_sha = r#"{"schema":1,"service":"api","version":"1","artifact":{"url":"u","size":1,"format":"file"},"staged_at":"t","staged_by":"u"}"#;
    assert_eq!(kind::<Staging>(no_sha), DecodeErrorKind::MissingField { field: "artifact.sha256".into() });
    assert_eq!(
        kind::<Ticket>(r#"{"host":"h","version":"1","at":"t"}"#),
        DecodeErrorKind::MissingField { field: "schema".into() }
    );
}

#[test]
fn wrong_types_are_named_with_their_path() {
    match kind::<Ticket>(r#"{"schema":1,"host":7,"version":"1","at":"t"}"#) {
        DecodeErrorKind::WrongType { field, message } => {
            assert_eq!(field, "host");
            assert!(message.contains("expected a string"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad_size = r#"{"schema":1,"service":"api","version":"1","artifact":{"url":"u","sha256":"x","size":"big","format":"file"},"staged_at":"t","staged_by":"u"}"#;
    assert!(matches!(kind::<Staging>(bad_size), DecodeErrorKind::WrongType { field, .. } if field == "artifact.size"));
    assert!(matches!(
        kind::<Ticket>(r#"{"schema":"1","host":"h","version":"1","at":"t"}"#),
        DecodeErrorKind::WrongType { field, .. } if field == "schema"
    ));
}

#[test]
fn invalid_values_are_named() {
    let bad_state =
        r#"{"schema":1,"service":"api","version":"1","state":"sleeping","created_at":"t","created_by":"u"}"#;
    assert!(matches!(kind::<DeployEntry>(bad_state), DecodeErrorKind::Invalid { field, .. } if field == "state"));
    let bad_quorum = r#"{"schema":1,"service":"api","version":"1","artifact":{"url":"u","sha256":"x","size":1,"format":"file"},"policy":{"quorum":"most"},"staged_at":"t","staged_by":"u"}"#;
    match kind::<Staging>(bad_quorum) {
        DecodeErrorKind::Invalid { field, message } => {
            assert_eq!(field, "policy.quorum");
            assert!(message.contains("invalid quorum"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_schema_is_refused() {
    assert_eq!(
        kind::<Ticket>(r#"{"schema":2,"host":"h","version":"1","at":"t"}"#),
        DecodeErrorKind::UnknownSchema { found: "2".into() }
    );
}

proptest! {
    /// Whatever another client writes, decoding returns an error instead of panicking.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Staging>("/p", &bytes);
        let _ = decode::<DeployEntry>("/p", &bytes);
    }

    #[test]
    fn decoding_arbitrary_json_objects_never_panics(s in r#"\{"schema":1(,"[a-z]{1,8}":("[a-z%0-9]{0,4}"|[0-9]{1,3}|null|\{\}))*\}"#) {
        let _ = decode::<Staging>("/p", s.as_bytes());
        let _ = decode::<Current>("/p", s.as_bytes());
        let _ = decode::<Upgrading>("/p", s.as_bytes());
    }
}
