//! `kinglet sub` across cuts against scripted servers (`client::script`): resumption
//! delivers each item once, and a reconnect without it catches up in publish order without
//! printing an item twice.

use argh::FromArgs;

use std::time::{Duration, Instant};

use crate::cli::SubArgs;
use crate::proto::NS_PING;
use crate::pubsub::{NS_PUBSUB, NS_RSM};
use crate::xml::Element;

use super::super::ClientError;
use super::super::pubsub::Format;
use super::super::script::{BIND, BIND_SM, Listener, NS_SM, Peer, Server};
use super::{keepalive, run_sub};

const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

fn args(extra: &[&str]) -> SubArgs {
    let mut a = vec!["--node", "n"];
    a.extend_from_slice(extra);
    SubArgs::from_args(&["sub"], &a).expect("sub arguments")
}

/// The event notification of item `i`.
fn event(i: u32) -> String {
    format!(
        "<message from='pubsub.localhost' id='e{i}'><event xmlns='{EVENT}'><items node='n'>\
         <item id='i{i}'><v xmlns='urn:x'>{i}</v></item></items></event></message>"
    )
}

/// An items result with items `ids` (and an RSM `<set/>` from index `first`, if given).
fn items(ids: &[u32], first: Option<usize>) -> String {
    let mut s = format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'>");
    for i in ids {
        s.push_str(&format!("<item id='i{i}'><v xmlns='urn:x'>{i}</v></item>"));
    }
    s.push_str("</items>");
    if let Some(index) = first {
        s.push_str(&format!("<set xmlns='{NS_RSM}'>"));
        if let (Some(f), Some(l)) = (ids.first(), ids.last()) {
            s.push_str(&format!(
                "<first index='{index}'>i{f}</first><last>i{l}</last>"
            ));
        }
        s.push_str(&format!("<count>{}</count></set>", index + ids.len()));
    }
    s.push_str("</pubsub>");
    s
}

/// Expects the subscription request for node `n` and accepts it.
fn subscribed(p: &mut Peer) {
    let iq = p.expect_iq();
    let sub = iq
        .child("pubsub", NS_PUBSUB)
        .and_then(|s| s.child("subscribe", NS_PUBSUB))
        .expect("a subscription request");
    assert_eq!(sub.attr("node"), Some("n"));
    p.result(&iq, "");
}

/// Expects an items request and returns it with its `<items/>`.
fn items_request(p: &mut Peer) -> (Element, Element) {
    let iq = p.expect_iq();
    let it = iq
        .child("pubsub", NS_PUBSUB)
        .and_then(|s| s.child("items", NS_PUBSUB))
        .cloned()
        .expect("an items request");
    assert_eq!(it.attr("node"), Some("n"));
    (iq, it)
}

/// Expects the unsubscription at the end, then the close.
fn unsubscribed(p: &mut Peer) {
    let iq = p.expect_iq();
    assert!(
        iq.child("pubsub", NS_PUBSUB)
            .and_then(|s| s.child("unsubscribe", NS_PUBSUB))
            .is_some(),
        "{iq:?}"
    );
    p.result(&iq, "");
    p.expect_close();
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `kinglet sub --node n` with `extra` arguments (XML output) against a server playing
/// `script`, and returns the lines it printed once the script has ended.
fn sub(extra: &[&str], script: impl FnOnce(&mut Listener) + Send + 'static) -> Vec<String> {
    let server = Server::run(script);
    let mut out = Vec::new();
    run_sub(&args(extra), server.settings(), Format::Xml, &mut out).expect("sub");
    server.join();
    lines(&out)
}

fn values(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range
        .map(|i| format!("<v xmlns=\"urn:x\">{i}</v>"))
        .collect()
}

/// Without XEP-0198: after the cut, `sub` subscribes again and pages back from the newest
/// item to the last one it printed; an event that raced with that request is not printed
/// twice, and the live events go on after the caught-up items.
#[test]
fn sub_catches_up_after_a_cut_without_duplicates() {
    let printed = sub(&["--count", "4"], |l| {
        let mut p = l.accept_bound(BIND);
        subscribed(&mut p);
        let (iq, it) = items_request(&mut p);
        assert_eq!(it.attr("max_items"), Some("1"), "the newest item is noted");
        p.result(&iq, &items(&[1], None));
        p.send(&event(2));
        p.cut();

        let mut p = l.accept_bound(BIND);
        subscribed(&mut p);
        let (iq, _) = items_request(&mut p);
        let set = iq
            .child("pubsub", NS_PUBSUB)
            .and_then(|s| s.child("set", NS_RSM))
            .expect("an RSM request");
        assert_eq!(
            set.child("before", NS_RSM).map(Element::text).as_deref(),
            Some(""),
            "paging back from the newest"
        );
        // Item 4 is published while the request is on its way: its event comes first.
        p.send(&event(4));
        p.result(&iq, &items(&[1, 2, 3, 4], Some(0)));
        p.send(&event(5));
        unsubscribed(&mut p);
    });
    assert_eq!(printed, values(2..=5));
}

/// `--no-catch-up`: the items published during the cut are not fetched (and the newest
/// item is not noted at the start).
#[test]
fn sub_no_catch_up_fetches_nothing() {
    let printed = sub(&["--count", "2", "--no-catch-up"], |l| {
        let mut p = l.accept_bound(BIND);
        subscribed(&mut p);
        p.send(&event(1));
        p.cut();

        let mut p = l.accept_bound(BIND);
        subscribed(&mut p);
        p.send(&event(4));
        unsubscribed(&mut p);
    });
    assert_eq!(
        printed,
        ["<v xmlns=\"urn:x\">1</v>", "<v xmlns=\"urn:x\">4</v>"]
    );
}

/// With XEP-0198: the session is resumed (no new subscription, no catch-up); the events
/// the server had not seen acknowledged come again and each is printed once.
#[test]
fn sub_resumes_and_prints_each_item_once() {
    let printed = sub(&["--count", "5"], |l| {
        let mut p =
            l.accept_enabled("<enabled xmlns='urn:xmpp:sm:3' id='sm-9' resume='true' max='60'/>");
        subscribed(&mut p);
        let (iq, _) = items_request(&mut p);
        p.result(&iq, &items(&[], None));
        p.send(&event(1));
        p.send(&event(2));
        p.send("<r xmlns='urn:xmpp:sm:3'/>");
        // Subscription result, items result, two events.
        assert_eq!(p.expect("a", NS_SM).attr("h"), Some("4"));
        p.send(&event(3));
        // Event 4 is cut in the middle.
        p.send(&event(4)[..40]);
        p.cut();

        let mut p = l.accept_login(BIND_SM);
        p.resumed("sm-9", "5", 2);
        // What the client had not acknowledged: only event 4 (h was 5).
        p.send(&event(4));
        p.send(&event(5));
        // The next request is the unsubscription: no subscription, no catch-up.
        unsubscribed(&mut p);
    });
    assert_eq!(printed, values(1..=5));
}

/// `--last` items are not printed again when their event raced with the request, and a
/// refused resumption is followed by a catch-up anchored on them.
#[test]
fn sub_last_then_failed_resume_catches_up() {
    let printed = sub(&["--last", "2", "--count", "3"], |l| {
        let mut p = l.accept_enabled("<enabled xmlns='urn:xmpp:sm:3' id='sm-10' resume='true'/>");
        subscribed(&mut p);
        let (iq, it) = items_request(&mut p);
        assert_eq!(it.attr("max_items"), Some("2"));
        p.send(&event(2));
        p.result(&iq, &items(&[1, 2], None));
        p.cut();

        let mut p = l.accept_login(BIND_SM);
        p.expect("resume", NS_SM);
        p.send(
            "<failed xmlns='urn:xmpp:sm:3'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
        );
        p.bind("anon@localhost/r");
        p.enable("<enabled xmlns='urn:xmpp:sm:3'/>");
        subscribed(&mut p);
        let (iq, _) = items_request(&mut p);
        p.result(&iq, &items(&[1, 2, 3], Some(0)));
        unsubscribed(&mut p);
    });
    assert_eq!(printed, values(1..=3));
}

/// `--keepalive 1`: a quiet stream is pinged after about a second (not the default 60 s),
/// so a dead link is noticed within the keepalive and `--timeout`; values outside 1 to 3600
/// are refused.
#[test]
fn sub_keepalive_pings_a_quiet_server_after_the_given_time() {
    for bad in ["0", "3601"] {
        assert!(
            matches!(
                keepalive(&args(&["--keepalive", bad])),
                Err(ClientError::Usage(_))
            ),
            "--keepalive {bad}"
        );
    }
    assert_eq!(
        keepalive(&args(&[])).expect("default"),
        Duration::from_secs(60)
    );
    let server = Server::run(|l| {
        let mut p = l.accept();
        p.login(BIND);
        p.bind("anon@localhost/r");
        subscribed(&mut p);
        let (iq, _) = items_request(&mut p);
        p.result(&iq, &items(&[], None));
        let quiet = Instant::now();
        let ping = p.expect_iq();
        let waited = quiet.elapsed();
        assert!(ping.child("ping", NS_PING).is_some(), "{ping:?}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "pinged after {waited:?}"
        );
        p.result(&ping, "");
        p.send(&event(1));
        unsubscribed(&mut p);
    });
    let mut out = Vec::new();
    let a = args(&["--count", "1", "--keepalive", "1"]);
    run_sub(&a, server.settings(), Format::Xml, &mut out).expect("sub");
    assert_eq!(lines(&out), values(1..=1));
    server.join();
}
