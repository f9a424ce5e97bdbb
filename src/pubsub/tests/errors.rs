//! Errors: conditions and application conditions, error types as in the XEP-0060
//! examples, and unknown payloads and IQ types.

use super::*;

#[test]
fn xep0060_errors_map_to_stanza_and_app_conditions() {
    let cases = [
        (
            PubSubError::PayloadTooBig,
            "not-acceptable",
            Some("payload-too-big"),
        ),
        (PubSubError::ClosedNode, "not-allowed", Some("closed-node")),
        (
            PubSubError::Unsupported("x"),
            "feature-not-implemented",
            Some("unsupported"),
        ),
        (PubSubError::NodeExists, "conflict", None),
        (PubSubError::Internal, "internal-server-error", None),
    ];
    for (e, cond, app) in cases {
        let s = e.to_stanza_error();
        assert_eq!(s.condition.as_str(), cond);
        assert_eq!(s.app.as_ref().map(|a| a.name.as_str()), app);
        assert!(s.text.is_some());
    }
}

#[test]
fn unknown_payloads_and_iq_types_are_refused_or_ignored() {
    let mut w = World::new();
    let out = w.iq(ALICE, "get", "<query xmlns='urn:nothing'/>");
    assert_eq!(out.len(), 1);
    assert!(format!("{:?}", out[0].1).contains("service-unavailable"));
    assert!(w.iq(ALICE, "result", "").is_empty());
    let (c, _) = w.err(ALICE, "get", &format!("<pubsub xmlns='{NS_PUBSUB}'/>"));
    assert_eq!(c, "bad-request");
}

#[test]
fn xep0060_error_types_follow_the_examples() {
    use crate::proto::ErrorType;
    assert_eq!(
        PubSubError::NotSubscribed.to_stanza_error().kind,
        ErrorType::Cancel
    );
    assert_eq!(
        PubSubError::Forbidden("x").to_stanza_error().kind,
        ErrorType::Auth
    );
    assert_eq!(
        PubSubError::InvalidJid.to_stanza_error().kind,
        ErrorType::Modify
    );
    assert_eq!(
        PubSubError::NodeFull.to_stanza_error().kind,
        ErrorType::Cancel
    );
    assert_eq!(
        PubSubError::TooManySubscriptions.to_stanza_error().kind,
        ErrorType::Wait
    );
}
