//! XEP-0198 client state, sans IO: numbers, counting with wrap, acks, enable, resume.

use super::*;

fn el(xml: &str) -> Element {
    Element::parse(xml).expect("test XML parses")
}

fn sm_at(handled: u32, sent: u32, acked: u32) -> StreamMgmt {
    StreamMgmt {
        handled,
        sent,
        acked,
        enabled: true,
        resume: Some(Resumable {
            id: "s1".to_owned(),
            max: None,
        }),
    }
}

#[test]
fn numbers_are_unsigned_ints_or_refused() {
    for (text, want) in [
        ("0", Some(0)),
        ("007", Some(7)),
        ("+5", Some(5)),
        (" 42\n", Some(42)),
        ("4294967295", Some(u32::MAX)),
        ("4294967296", None),
        ("99999999999999999999", None),
        ("", None),
        (" ", None),
        ("-1", None),
        ("-0", None),
        ("1.0", None),
        ("1e3", None),
        ("0x10", None),
        ("1 2", None),
        ("++1", None),
        ("١", None),
    ] {
        assert_eq!(parse_u32(text), want, "{text:?}");
    }
}

/// §3: `<enable/>` with and without `resume`; `<enabled/>` decides resumability and `max`.
#[test]
fn xep0198_3_enable_and_enabled() {
    let e = el(&enable_request(true));
    assert!(e.is("enable", NS_SM));
    assert_eq!(e.attr("resume"), Some("true"));
    assert_eq!(el(&enable_request(false)).attr("resume"), None);

    let features = el(
        "<features xmlns='http://etherx.jabber.org/streams'><sm xmlns='urn:xmpp:sm:3'/></features>",
    );
    assert!(offered(&features));
    assert!(!offered(&el(
        "<features xmlns='http://etherx.jabber.org/streams'><sm xmlns='urn:xmpp:sm:2'/></features>"
    )));

    let mut s = StreamMgmt::new();
    assert!(!s.is_enabled());
    s.on_enabled(&el(
        "<enabled xmlns='urn:xmpp:sm:3' id='a&amp;b' resume='true' max='300'/>",
    ))
    .expect("enabled");
    assert!(s.is_enabled());
    assert_eq!(
        s.resumable(),
        Some(&Resumable {
            id: "a&b".to_owned(),
            max: Some(Duration::from_secs(300)),
        })
    );
    for not_resumable in [
        "<enabled xmlns='urn:xmpp:sm:3'/>",
        "<enabled xmlns='urn:xmpp:sm:3' id='x'/>",
        "<enabled xmlns='urn:xmpp:sm:3' id='x' resume='false'/>",
        "<enabled xmlns='urn:xmpp:sm:3' resume='true'/>",
        "<enabled xmlns='urn:xmpp:sm:3' id='' resume='1'/>",
    ] {
        let mut s = StreamMgmt::new();
        s.on_enabled(&el(not_resumable)).expect(not_resumable);
        assert!(s.is_enabled() && s.resumable().is_none(), "{not_resumable}");
    }
    let mut s = StreamMgmt::new();
    s.on_enabled(&el("<enabled xmlns='urn:xmpp:sm:3' id='x' resume='1'/>"))
        .expect("resume=1");
    assert_eq!(s.resumable().map(|r| r.max), Some(None));
    let long = "i".repeat(MAX_SM_ID_BYTES + 1);
    let mut s = StreamMgmt::new();
    s.on_enabled(&el(&format!(
        "<enabled xmlns='urn:xmpp:sm:3' id='{long}' resume='true'/>"
    )))
    .expect("long id");
    assert!(s.resumable().is_none(), "an over-long id is not kept");
    for bad_max in ["-1", "4294967296", "", "ten"] {
        let mut s = StreamMgmt::new();
        let r = s.on_enabled(&el(&format!(
            "<enabled xmlns='urn:xmpp:sm:3' id='x' resume='true' max='{bad_max}'/>"
        )));
        assert!(matches!(r, Err(SmError::BadNumber(_))), "{bad_max}: {r:?}");
    }
    let failed = el("<failed xmlns='urn:xmpp:sm:3'><unexpected-request \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
    assert_eq!(failed_condition(&failed), "unexpected-request");
    assert_eq!(
        failed_condition(&el("<failed xmlns='urn:xmpp:sm:3'/>")),
        "undefined-condition"
    );
}

/// §4: `h` counts handled stanzas and wraps to 0 after 2^32 - 1.
#[test]
fn xep0198_4_h_counts_and_wraps() {
    let mut s = StreamMgmt::new();
    for _ in 0..3 {
        s.count_received();
    }
    assert_eq!(s.handled(), 3);
    let a = el(&s.ack());
    assert!(a.is("a", NS_SM));
    assert_eq!(a.attr("h"), Some("3"));

    let mut s = sm_at(u32::MAX - 1, 0, 0);
    s.count_received();
    assert_eq!(el(&s.ack()).attr("h"), Some("4294967295"));
    s.count_received();
    assert_eq!(s.handled(), 0);
    assert_eq!(el(&s.ack()).attr("h"), Some("0"));
    s.count_received();
    assert_eq!(el(&s.ack()).attr("h"), Some("1"));

    let mut s = sm_at(0, u32::MAX, 0);
    s.count_sent();
    assert_eq!(s.sent(), 0);
}

/// §4: stanzas received between `<enable/>` and `<enabled/>` were sent before the server's
/// count started, so `h` starts again at `<enabled/>`; the count of stanzas sent does not.
#[test]
fn xep0198_4_h_starts_at_enabled() {
    let mut s = StreamMgmt::new();
    s.count_sent();
    s.count_received();
    s.count_received();
    s.on_enabled(&el("<enabled xmlns='urn:xmpp:sm:3' id='x' resume='true'/>"))
        .expect("enabled");
    assert_eq!((s.handled(), s.sent()), (0, 1));
    s.count_received();
    assert_eq!(el(&s.ack()).attr("h"), Some("1"));
    assert_eq!(
        el(&s.resume_request().expect("resumable")).attr("h"),
        Some("1")
    );
}

/// §4 and §6: the server's `h` is checked before use: malformed or missing is refused, and
/// more than was sent is `handled-count-too-high`, across the wrap too.
#[test]
fn xep0198_4_acks_are_checked_wrap_aware() {
    let a = |h: &str| el(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"));
    let mut s = sm_at(0, 5, 0);
    s.on_ack(&a("3")).expect("3 of 5");
    assert_eq!(s.acked(), 3);
    s.on_ack(&a("3")).expect("the same h again");
    s.on_ack(&a("5")).expect("all");
    assert_eq!(
        s.on_ack(&a("6")),
        Err(SmError::HandledTooHigh { h: 6, sent: 5 })
    );
    assert_eq!(s.acked(), 5, "a refused h is not recorded");
    // An h below the last one would acknowledge 2^32 - 1 stanzas: too high.
    assert!(matches!(
        s.on_ack(&a("4")),
        Err(SmError::HandledTooHigh { .. })
    ));
    for bad in ["", "-1", "x", "4294967296", "1.5"] {
        assert!(
            matches!(s.on_ack(&a(bad)), Err(SmError::BadNumber(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        s.on_ack(&el("<a xmlns='urn:xmpp:sm:3'/>")),
        Err(SmError::BadNumber(_))
    ));

    // Across the wrap: acked 2^32 - 2, then 4 sent (the count wrapped to 2).
    let mut s = sm_at(0, 2, u32::MAX - 1);
    s.on_ack(&a("4294967295")).expect("one more");
    s.on_ack(&a("2")).expect("past the wrap");
    assert_eq!(s.acked(), 2);
    assert_eq!(
        s.on_ack(&a("3")),
        Err(SmError::HandledTooHigh { h: 3, sent: 2 })
    );
}

/// §6: the stream error the client sends for a count too high.
#[test]
fn xep0198_6_handled_count_too_high_stream_error() {
    let e = SmError::HandledTooHigh { h: 10, sent: 8 }.stream_error();
    assert!(e.starts_with("<stream:error><undefined-condition"), "{e}");
    assert!(e.ends_with("</stream:error></stream:stream>"), "{e}");
    let inner = e
        .trim_start_matches("<stream:error>")
        .trim_end_matches("</stream:error></stream:stream>");
    let wrapped = el(&format!("<x>{inner}</x>"));
    let c = wrapped
        .child("handled-count-too-high", NS_SM)
        .expect("the application condition");
    assert_eq!((c.attr("h"), c.attr("send-count")), (Some("10"), Some("8")));
    assert!(
        wrapped
            .child("undefined-condition", crate::proto::NS_STREAMS)
            .is_some()
    );
}

/// §5: `<resume previd h/>`, and `<resumed/>` / `<failed/>` checked; stanzas the server did
/// not see are forgotten, so later acks stay in step.
#[test]
fn xep0198_5_resume_resumed_failed() {
    let mut s = sm_at(7, 4, 1);
    let r = el(&s.resume_request().expect("resumable"));
    assert!(r.is("resume", NS_SM));
    assert_eq!((r.attr("previd"), r.attr("h")), (Some("s1"), Some("7")));
    assert_eq!(StreamMgmt::new().resume_request(), None);

    let resumed = |attrs: &str| el(&format!("<resumed xmlns='urn:xmpp:sm:3' {attrs}/>"));
    assert!(matches!(
        s.clone().on_resumed(&resumed("previd='other' h='2'")),
        Err(SmError::BadNumber(_))
    ));
    assert!(matches!(
        s.clone().on_resumed(&resumed("previd='s1'")),
        Err(SmError::BadNumber(_))
    ));
    assert_eq!(
        s.clone().on_resumed(&resumed("previd='s1' h='5'")),
        Err(SmError::HandledTooHigh { h: 5, sent: 4 })
    );
    s.on_resumed(&resumed("previd='s1' h='2'"))
        .expect("resumed");
    assert_eq!((s.acked(), s.sent(), s.handled()), (2, 2, 7));
    s.count_sent();
    s.on_ack(&el("<a xmlns='urn:xmpp:sm:3' h='3'/>"))
        .expect("counts in step after the resumption");

    let mut s = sm_at(7, 4, 1);
    s.on_resume_failed(&el("<failed xmlns='urn:xmpp:sm:3'/>"))
        .expect("no h");
    s.on_resume_failed(&el("<failed xmlns='urn:xmpp:sm:3' h='4'/>"))
        .expect("h in range");
    assert!(
        s.on_resume_failed(&el("<failed xmlns='urn:xmpp:sm:3' h='9'/>"))
            .is_err()
    );
}
