//! XEP-0160 offline messages end to end: a message to an account that is offline is
//! stored, survives a `kill -9` and restart of the broker, and reaches the account at its
//! next initial presence with an XEP-0203 delay stamp; then it is gone.

use kinglet::xml::Element;

use super::client::Client;
use super::{Daemon, Options, PING, get};

const DISCO_INFO: &str = "<query xmlns='http://jabber.org/protocol/disco#info'/>";
const DELAY: &str = "urn:xmpp:delay";

/// Sends `xml`, an IQ with `id`, and returns every stanza received before its result
/// (asserted to be a result), in order.
fn until_result(c: &mut Client, id: &str, xml: &str) -> Vec<Element> {
    c.send(xml);
    let mut before = Vec::new();
    loop {
        let e = c.next();
        if e.name == "iq" && e.attr("id") == Some(id) {
            assert_eq!(e.attr("type"), Some("result"), "{e:?}");
            return before;
        }
        before.push(e);
    }
}

/// Sends the initial presence, then a ping `id`, and returns every stanza received before
/// the ping's result: stored messages come with the initial presence, so before it.
fn initial_presence(c: &mut Client, id: &str) -> Vec<Element> {
    c.send("<presence/>");
    until_result(
        c,
        id,
        &format!("<iq type='get' id='{id}' to='localhost'>{PING}</iq>"),
    )
}

/// A roster set: its result is sent only once its group commit is on disk, and commits
/// are taken in order, so everything staged before it (an offline message) is on disk too.
fn durable_barrier(c: &mut Client, id: &str) -> Vec<Element> {
    until_result(
        c,
        id,
        &format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>\
             <item jid='carol@localhost' name='{id}'/></query></iq>"
        ),
    )
}

#[test]
fn offline_message_survives_restart_and_arrives_with_delay() {
    let mut d = Daemon::start(Options::default());
    let ca = d.cert.clone().expect("cert");
    {
        let mut alice = Client::login(d.port, &ca, "alice", "alice-pw", "desk");
        alice.send("<presence/>");
        // XEP-0160 §5: the server says it stores messages.
        let info = get(&mut alice, "d1", "localhost", DISCO_INFO);
        let q = info
            .child("query", "http://jabber.org/protocol/disco#info")
            .expect("query");
        assert!(
            q.elements().any(|f| f.attr("var") == Some("msgoffline")),
            "{info:?}"
        );
        alice.send(
            "<message type='chat' id='m1' to='bob@localhost'><body>while you were out</body></message>",
        );
        alice.send(
            "<message type='headline' id='h1' to='bob@localhost'><body>gone</body></message>",
        );
        let before = durable_barrier(&mut alice, "r1");
        assert!(
            !before.iter().any(|e| e.attr("type") == Some("error")),
            "stored, not bounced: {before:?}"
        );
    }
    // kill -9 and start again on the same data.
    d.restart("stderr2.log");
    {
        let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
        let got = initial_presence(&mut bob, "p1");
        let msgs: Vec<&Element> = got.iter().filter(|e| e.name == "message").collect();
        assert_eq!(
            msgs.len(),
            1,
            "the chat message only, not the headline: {got:?}"
        );
        let m = msgs[0];
        assert_eq!(m.attr("id"), Some("m1"));
        assert_eq!(m.attr("from"), Some("alice@localhost/desk"));
        let body = m.child("body", "jabber:client").expect("a body");
        assert_eq!(body.text(), "while you were out");
        let delay = m.child("delay", DELAY).expect("an XEP-0203 delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
        let stamp = delay.attr("stamp").expect("stamp");
        let ms = kinglet::pubsub::parse_xep0082(stamp).expect("an XEP-0082 date-time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        assert!(
            ms <= now && now - ms < 600_000,
            "stamped when stored: {stamp}"
        );
        // Its deletion is committed like the storage was.
        durable_barrier(&mut bob, "r2");
    }
    d.restart("stderr3.log");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "tablet");
    let got = initial_presence(&mut bob, "p2");
    assert!(
        !got.iter().any(|e| e.name == "message"),
        "delivered once only: {got:?}"
    );
}
