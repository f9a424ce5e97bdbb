//! The client's XEP-0198 on a real socket against scripted servers (`client::script`):
//! enabling, answering `<r/>` with the count of handled stanzas, checking `<a/>`, resuming
//! and falling back to binding.

use std::time::{Duration, Instant};

use crate::xml::Element;

use super::super::ClientError;
use super::super::script::{BIND, BIND_SM, NS_SM, Server};
use super::*;

fn message(n: u32) -> String {
    format!("<message from='pubsub.localhost' id='m{n}'><body>{n}</body></message>")
}

/// The next stanza within 5 s.
fn next(conn: &mut Conn) -> Result<Element, ClientError> {
    conn.next_stanza(Instant::now() + Duration::from_secs(5))?
        .ok_or_else(|| ClientError::Timeout("test".to_owned()))
}

/// The first connection to `server`, with stream management wanted and nothing to resume:
/// the settings (for reconnecting), the connection and how it started.
fn connect_new(server: &Server) -> (Settings, Conn, Start) {
    let mut settings = server.settings();
    let mut previous = None;
    let (conn, start) = Conn::connect_managed(&mut settings, true, &mut previous).expect("up");
    (settings, conn, start)
}

/// XEP-0198 §3 and §4: `<enable resume='true'/>` after binding; `<r/>` answered with the
/// stanzas handled since `<enable/>` (not the bind result before it); the client's answer to
/// a ping counts as sent, so an `<a/>` acknowledging it is accepted, and one acknowledging
/// more is `handled-count-too-high` (§6).
#[test]
fn xep0198_enable_count_answer_r_and_check_a() {
    let server = Server::run(|l| {
        let mut p = l.accept_bound(BIND_SM);
        let enable = p.enable("<enabled xmlns='urn:xmpp:sm:3' id='sm-1' resume='true' max='60'/>");
        assert_eq!(enable.attr("resume"), Some("true"));
        for n in 1..=3 {
            p.send(&message(n));
        }
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        let a = p.expect("a", NS_SM);
        assert_eq!(a.attr("h"), Some("3"));
        p.send("<iq type='get' id='ping1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
        let pong = p.expect("iq", crate::xml::NS_CLIENT);
        assert_eq!(
            (pong.attr("type"), pong.attr("id")),
            (Some("result"), Some("ping1"))
        );
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(p.expect("a", NS_SM).attr("h"), Some("4"));
        p.send("<a xmlns='urn:xmpp:sm:3' h='1'/>");
        p.send(&message(4));
        p.send("<a xmlns='urn:xmpp:sm:3' h='2'/>");
        let err = p.expect("error", crate::xml::NS_STREAM);
        let too_high = err
            .child("handled-count-too-high", NS_SM)
            .expect("the XEP-0198 condition");
        assert_eq!(
            (too_high.attr("h"), too_high.attr("send-count")),
            (Some("2"), Some("1"))
        );
        assert!(
            err.child("undefined-condition", crate::proto::NS_STREAMS)
                .is_some()
        );
        p.cut();
    });
    let (_, mut conn, start) = connect_new(&server);
    assert_eq!(
        start,
        Start::New {
            resume_failed: None,
            sm: SmStatus::Enabled { resumable: true }
        }
    );
    let mut bodies = Vec::new();
    let err = loop {
        match next(&mut conn) {
            Ok(m) => bodies.push(m.child("body", crate::xml::NS_CLIENT).map(Element::text)),
            Err(e) => break e,
        }
    };
    assert_eq!(
        bodies,
        ["1", "2", "3", "4"].map(|b| Some(b.to_owned())).to_vec()
    );
    assert!(
        matches!(&err, ClientError::Protocol(m) if m.contains("handled-count-too-high")),
        "{err}"
    );
    server.join();
}

/// §4: the server counts what it sends from `<enabled/>` on, so a stanza that crossed the
/// client's `<enable/>` on the wire (here a notification for a full JID that was subscribed
/// before it bound, as after a failed resumption) arrives before `<enabled/>`, is handled,
/// and is not counted: `h` stays in step and the server's `<a/>` for its own count is not
/// answered with `handled-count-too-high` later (found by the chaos test, `kill -9` run).
#[test]
fn xep0198_a_stanza_before_enabled_is_not_counted() {
    let server = Server::run(|l| {
        let mut p = l.accept();
        p.login(BIND_SM);
        p.bind("anon@localhost/r");
        p.expect("enable", NS_SM);
        p.send(&message(1));
        p.send("<enabled xmlns='urn:xmpp:sm:3' id='sm-5' resume='true'/>");
        p.send(&message(2));
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(p.expect("a", NS_SM).attr("h"), Some("1"));
        p.cut();

        let mut p = l.accept();
        p.login(BIND_SM);
        let resume = p.expect("resume", NS_SM);
        assert_eq!(
            (resume.attr("previd"), resume.attr("h")),
            (Some("sm-5"), Some("1"))
        );
        p.send("<resumed xmlns='urn:xmpp:sm:3' previd='sm-5' h='0'/>");
        p.expect_close();
    });
    let mut settings = server.settings();
    let mut previous = None;
    let (mut conn, _) = Conn::connect_managed(&mut settings, true, &mut previous).expect("up");
    assert_eq!(next(&mut conn).expect("m1").attr("id"), Some("m1"));
    assert_eq!(next(&mut conn).expect("m2").attr("id"), Some("m2"));
    let cut = next(&mut conn).expect_err("cut");
    assert!(cut.is_transient(), "{cut}");
    let mut previous = conn.into_lost().session;
    let (conn, start) = Conn::connect_managed(&mut settings, true, &mut previous).expect("resumed");
    assert_eq!(start, Start::Resumed);
    conn.close();
    server.join();
}

/// §5: after a cut, the session is resumed with the handled count (a stanza cut in the
/// middle is not counted); the server's `<resumed h/>` is checked, the bound JID kept, and
/// the stanza it sends again arrives once.
#[test]
fn xep0198_resume_after_a_cut() {
    let server = Server::run(|l| {
        let mut p = l.accept_enabled("<enabled xmlns='urn:xmpp:sm:3' id='sm-2' resume='true'/>");
        p.send(&message(1));
        p.send(&message(2));
        // Half of message 3, then the link dies.
        p.send("<message from='pubsub.localhost' id='m3'><bo");
        p.cut();

        let mut p = l.accept_login(BIND_SM);
        p.resumed("sm-2", "2", 0);
        p.send(&message(3));
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(p.expect("a", NS_SM).attr("h"), Some("3"));
        p.expect_close();
    });
    let (mut settings, mut conn, _) = connect_new(&server);
    assert_eq!(next(&mut conn).expect("m1").attr("id"), Some("m1"));
    assert_eq!(next(&mut conn).expect("m2").attr("id"), Some("m2"));
    let cut = next(&mut conn).expect_err("cut");
    assert!(cut.is_transient(), "{cut}");
    let lost = conn.into_lost();
    assert!(lost.queued.is_empty());
    let mut previous = lost.session;
    assert_eq!(
        previous.as_ref().map(Detached::jid),
        Some("anon@localhost/r")
    );
    let (mut conn, start) =
        Conn::connect_managed(&mut settings, true, &mut previous).expect("resumed");
    assert_eq!(start, Start::Resumed);
    assert!(previous.is_none());
    assert_eq!(conn.jid(), "anon@localhost/r");
    assert_eq!(next(&mut conn).expect("m3").attr("id"), Some("m3"));
    // Wait for the server's <r/> to be answered, then close.
    let quiet = conn.next_stanza(Instant::now() + Duration::from_millis(500));
    assert!(matches!(quiet, Ok(None)), "{quiet:?}");
    conn.close();
    server.join();
}

/// §5: a refused resumption falls back to binding and enabling again; a server that
/// answers `<enable/>` with `<failed/>` leaves the stream without stream management.
#[test]
fn xep0198_failed_resume_binds_again() {
    let server = Server::run(|l| {
        let mut p =
            l.accept_enabled("<enabled xmlns='urn:xmpp:sm:3' id='sm-3' resume='1' max='600'/>");
        p.send(&message(1));
        p.cut();

        let mut p = l.accept_login(BIND_SM);
        let resume = p.expect("resume", NS_SM);
        assert_eq!(resume.attr("h"), Some("1"));
        p.send(
            "<failed xmlns='urn:xmpp:sm:3' h='0'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
        );
        p.bind("anon@localhost/r2");
        p.enable(
            "<failed xmlns='urn:xmpp:sm:3'><unexpected-request \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
        );
        // Without stream management, <r/> is not answered: the next thing is the close.
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        p.expect_close();
    });
    let (mut settings, mut conn, _) = connect_new(&server);
    next(&mut conn).expect("m1");
    next(&mut conn).expect_err("cut");
    let mut previous = conn.into_lost().session;
    assert!(previous.is_some());
    let (mut conn, start) =
        Conn::connect_managed(&mut settings, true, &mut previous).expect("bound");
    assert!(previous.is_none());
    let Start::New { resume_failed, sm } = start else {
        panic!("not resumed")
    };
    assert!(
        resume_failed
            .as_deref()
            .is_some_and(|w| w.contains("item-not-found")),
        "{resume_failed:?}"
    );
    assert_eq!(sm, SmStatus::Failed("unexpected-request".to_owned()));
    assert_eq!(conn.jid(), "anon@localhost/r2");
    assert!(conn.stream_management().is_none());
    // The <r/> is handed out as it is (no stream management to answer it).
    let r = next(&mut conn).expect("r");
    assert!(r.is("r", NS_SM));
    conn.close();
    server.join();
}

/// Without the feature, or with `enable` false (`--no-resume`), no `<enable/>` is sent; a
/// session lost before the server answered the resumption stays resumable.
#[test]
fn xep0198_not_offered_or_not_wanted() {
    let server = Server::run(|l| {
        for features in [BIND, BIND_SM] {
            let mut p = l.accept_bound(features);
            // The first element after binding is the client's own request, not <enable/>.
            let iq = p.expect_iq();
            p.result(&iq, "");
            p.expect_close();
        }
        // A connection that dies during the login.
        let mut p = l.accept();
        p.cut();
    });
    let mut settings = server.settings();
    let mut previous = None;
    for (enable, want) in [(true, SmStatus::NotOffered), (false, SmStatus::Off)] {
        let (mut conn, start) =
            Conn::connect_managed(&mut settings, enable, &mut previous).expect("up");
        assert_eq!(
            start,
            Start::New {
                resume_failed: None,
                sm: want
            }
        );
        conn.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>", "ping")
            .expect("reply");
        conn.close();
    }
    let mut previous = Some(Detached {
        sm: StreamMgmt::new(),
        jid: "anon@localhost/r".to_owned(),
        since: Instant::now(),
    });
    let e = Conn::connect_managed(&mut settings, true, &mut previous).expect_err("cut");
    assert!(e.is_transient(), "{e}");
    assert!(previous.is_some(), "kept for the next attempt");
    server.join();
}

/// §5 and §6: a `<resumed/>` acknowledging stanzas never sent ends the stream with a
/// protocol error, after telling the server why.
#[test]
fn xep0198_resumed_with_h_too_high_is_a_protocol_error() {
    let server = Server::run(|l| {
        let mut p = l.accept_login(BIND_SM);
        p.expect("resume", NS_SM);
        p.send("<resumed xmlns='urn:xmpp:sm:3' previd='sm-4' h='3'/>");
        let err = p.expect("error", crate::xml::NS_STREAM);
        assert!(err.child("handled-count-too-high", NS_SM).is_some());
        p.cut();
    });
    let mut settings = server.settings();
    let mut sm = StreamMgmt::new();
    sm.on_enabled(
        &Element::parse("<enabled xmlns='urn:xmpp:sm:3' id='sm-4' resume='true'/>")
            .expect("enabled"),
    )
    .expect("enabled");
    let mut previous = Some(Detached {
        sm,
        jid: "anon@localhost/r".to_owned(),
        since: Instant::now(),
    });
    let e = Conn::connect_managed(&mut settings, true, &mut previous).expect_err("too high");
    assert!(
        matches!(&e, ClientError::Protocol(m) if m.contains("handled-count-too-high")),
        "{e}"
    );
    server.join();
}
