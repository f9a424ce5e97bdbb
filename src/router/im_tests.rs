//! Issue 11 ("IM beside pub-sub"): unit tests of the router's IM concerns, one section
//! per module: `sessions` (resource binding, RFC 6120 §7), `presence` (RFC 6121 §4),
//! `messages` (RFC 6121 §8.5) and `server_iq` (RFC 6120 §8.2.3, XEP-0030, XEP-0199,
//! XEP-0092). Each drives the sans-IO router over a store in memory and a `FakeEnv`, and
//! reads what lands in the sessions' outboxes.

use std::rc::Rc;

use super::Router;
use crate::config::Config;
use crate::env::FakeEnv;
use crate::jid::Jid;
use crate::outbox::Outbox;
use crate::proto::NS_STANZAS;
use crate::store::{RosterItem, Store, Subscription};
use crate::test_support::{bind, drained};
use crate::xml::Element;

/// Accounts every test world has.
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// A router over a store in memory (inline commits) where `USERS` have accounts, with
/// the default configuration changed by `tune`.
fn world_with(tune: impl FnOnce(&mut Config)) -> (Router, Rc<Store>) {
    let (r, store, _env) = world_env(tune);
    (r, store)
}

/// [`world_with`], and the router's clock (2024-01-01T00:00:00Z at first).
fn world_env(tune: impl FnOnce(&mut Config)) -> (Router, Rc<Store>, Rc<FakeEnv>) {
    let store = Rc::new(Store::open_in_memory().expect("store"));
    for u in USERS {
        store.user_add(u, b"creds").expect("add user");
    }
    let mut config = Config::default();
    tune(&mut config);
    let env = Rc::new(FakeEnv::new(1_704_067_200_000, 7));
    let r = Router::new(Rc::new(config), store.clone(), env.clone()).expect("router");
    (r, store, env)
}

fn world() -> (Router, Rc<Store>) {
    world_with(|_| {})
}

fn outbox() -> Rc<Outbox> {
    Outbox::new(64, 1 << 20)
}

/// Routes `xml` as sent by `from` (the session stamps `from`).
fn send(r: &mut Router, from: &Jid, xml: &str) {
    let mut e = Element::parse(xml).expect("test stanza parses");
    e.set_attr("from", from.as_str());
    r.route(from, e);
}

/// A XEP-0199 ping: `<iq type='get'>` with `id` to `to`.
fn ping(id: &str, to: &str) -> String {
    format!("<iq type='get' id='{id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
}

/// An empty `<message/>` of type `ty` with `id` to `to`.
fn msg(ty: &str, id: &str, to: &str) -> String {
    format!("<message type='{ty}' id='{id}' to='{to}'/>")
}

/// An empty `<presence/>` of type `ty` to `to`.
fn presence_to(ty: &str, to: &str) -> String {
    format!("<presence to='{to}' type='{ty}'/>")
}

/// The defined condition of a stanza error (`""` if there is none).
fn condition(e: &Element) -> String {
    e.elements()
        .find(|c| c.name == "error")
        .and_then(|err| {
            err.elements()
                .find(|c| c.name != "text" && c.ns == NS_STANZAS)
        })
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// The values of the attributes named in `names` (space-separated) of `e`, in order.
fn attrs<'e>(e: &'e Element, names: &str) -> Vec<Option<&'e str>> {
    names.split(' ').map(|n| e.attr(n)).collect()
}

/// Asserts that `out` is exactly one error reply of kind `name` with `condition`, addressed
/// to `to` and from `from`; returns it.
#[track_caller]
fn single_error(out: &[Element], name: &str, cond: &str, to: &Jid, from: &str) -> Element {
    assert_eq!(out.len(), 1, "one error reply expected: {out:?}");
    let e = &out[0];
    assert_eq!(e.name, name, "{e:?}");
    assert_eq!(e.attr("type"), Some("error"), "{e:?}");
    assert_eq!(condition(e), cond, "{e:?}");
    assert_eq!(e.attr("to"), Some(to.as_str()), "{e:?}");
    assert_eq!(e.attr("from"), Some(from), "{e:?}");
    e.clone()
}

/// Routes `xml` from `from` and asserts that `ob` (`from`'s outbox) gets exactly one error
/// reply with `cond`, of the stanza's kind, to `from` and from the stanza's `to`; returns it.
#[track_caller]
fn bounced(r: &mut Router, from: &Jid, ob: &Outbox, xml: &str, cond: &str) -> Element {
    let sent = Element::parse(xml).expect("test stanza parses");
    send(r, from, xml);
    let to = sent.attr("to").unwrap_or_default();
    single_error(&drained(ob), &sent.name, cond, from, to)
}

/// Routes `xml` from `from` and asserts that nothing lands in `ob`.
#[track_caller]
fn unanswered(r: &mut Router, from: &Jid, ob: &Outbox, xml: &str) {
    send(r, from, xml);
    let got = drained(ob);
    assert!(got.is_empty(), "{xml} answered: {got:?}");
}

/// The one stanza queued in `ob` (asserts there is exactly one).
#[track_caller]
fn one(ob: &Outbox) -> Element {
    let got = drained(ob);
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].clone()
}

/// Puts a roster item `user` → `contact` straight into the store (before `user` binds:
/// the router loads the roster at the account's first bind).
fn roster_item(store: &Store, user: &str, contact: &str, subscription: Subscription) {
    let item = RosterItem {
        jid: contact.to_owned(),
        name: None,
        subscription,
        ask_out: false,
        pending_in: false,
        groups: Vec::new(),
        in_roster: true,
    };
    store.roster_put(user, &item).expect("roster put");
}

/// Binds `user/resource`, sends `presence` (initial presence) and clears its outbox.
fn online(
    r: &mut Router,
    user: &str,
    resource: &str,
    conn: u64,
    presence: &str,
) -> (Jid, Rc<Outbox>) {
    let (jid, ob) = bind(r, user, resource, conn);
    send(r, &jid, presence);
    drained(&ob);
    (jid, ob)
}

mod sessions {
    //! RFC 6120 §7 resource binding, and the reachability of bound resources.
    use super::*;
    use crate::outbox::Kick;
    use crate::proto::{Condition, StreamCondition};

    /// §7.6: one account binds two resources; both are addressable and counted.
    #[test]
    fn two_resources_of_one_account() {
        let (mut r, _s) = world();
        let (a1, o1) = bind(&mut r, "alice", "phone", 1);
        let (a2, o2) = bind(&mut r, "alice", "laptop", 2);
        assert_eq!(a1.as_str(), "alice@localhost/phone");
        assert_eq!(a2.as_str(), "alice@localhost/laptop");
        assert_eq!(r.session_count(), 2);
        // Each is reachable by its full JID, and only it.
        send(&mut r, &a1, &ping("p1", "alice@localhost/laptop"));
        let got = one(&o2);
        assert_eq!(
            attrs(&got, "id from"),
            [Some("p1"), Some("alice@localhost/phone")]
        );
        assert!(drained(&o1).is_empty());
        assert!(o1.kicked().is_none() && o2.kicked().is_none());
    }

    /// A resource beyond `limits.max_resources_per_account` is refused with
    /// `resource-constraint` (RFC 6120 §7.6.2.1), and the bound ones stay.
    #[test]
    fn resource_over_the_limit_is_refused() {
        let (mut r, _s) = world_with(|c| c.limits.max_resources_per_account = 2);
        let (_a1, o1) = bind(&mut r, "alice", "one", 1);
        let (a2, o2) = bind(&mut r, "alice", "two", 2);
        let err = r
            .bind("alice", false, Some("three"), 3, outbox())
            .expect_err("a third resource is over the limit");
        assert_eq!(err.condition, Condition::ResourceConstraint);
        assert_eq!(r.session_count(), 2);
        assert!(o1.kicked().is_none() && o2.kicked().is_none());
        // The refused resource is not reachable.
        let p = ping("x", "alice@localhost/three");
        bounced(&mut r, &a2, &o2, &p, "service-unavailable");
        // Another account has its own allowance.
        assert!(r.bind("bob", false, Some("one"), 4, outbox()).is_ok());
    }

    /// §7.7.2.2 (override): binding a resource in use takes it over; the old session is
    /// closed with a `conflict` stream error, stanzas to the full JID reach the new one,
    /// and the old connection's unbind leaves the new session alone. This works at the
    /// resource limit too (the old session's slot is reused).
    #[test]
    fn resource_conflict_replaces_the_old_session() {
        let (mut r, _s) = world_with(|c| c.limits.max_resources_per_account = 2);
        let (bob, ob) = bind(&mut r, "bob", "b", 9);
        let (_other, _oo) = bind(&mut r, "alice", "other", 1);
        let (old, o_old) = bind(&mut r, "alice", "desk", 2);
        let (new, o_new) = bind(&mut r, "alice", "desk", 3);
        assert_eq!(old, new);
        let conflict = Kick::Stream(StreamCondition::Conflict);
        assert_eq!(o_old.kicked(), Some(conflict));
        assert!(o_new.kicked().is_none());
        assert_eq!(r.session_count(), 3);
        send(&mut r, &bob, &ping("q", "alice@localhost/desk"));
        assert_eq!(drained(&o_new).len(), 1);
        assert!(drained(&o_old).is_empty());
        // The replaced connection ends: the new session is kept.
        r.unbind(&old, 2);
        assert_eq!(r.session_count(), 3);
        send(&mut r, &bob, &ping("q2", "alice@localhost/desk"));
        assert_eq!(one(&o_new).attr("id"), Some("q2"));
        assert!(drained(&ob).is_empty());
    }

    /// A replaced session that was available: its contacts hear it go unavailable.
    #[test]
    fn resource_conflict_broadcasts_the_old_sessions_unavailable() {
        let (mut r, store) = world();
        roster_item(&store, "alice", "bob@localhost", Subscription::From);
        roster_item(&store, "bob", "alice@localhost", Subscription::To);
        let (_bob, ob) = online(&mut r, "bob", "b", 9, "<presence/>");
        let (_old, _o_old) = online(&mut r, "alice", "desk", 1, "<presence/>");
        drained(&ob);
        let (_new, _o_new) = bind(&mut r, "alice", "desk", 2);
        let got = one(&ob);
        assert_eq!(got.name, "presence");
        let want = [Some("unavailable"), Some("alice@localhost/desk")];
        assert_eq!(attrs(&got, "type from"), want);
    }

    /// After unbind the resource is gone: an IQ to it gets `service-unavailable`
    /// (RFC 6121 §8.5.3.2.3), and nothing reaches the old outbox.
    #[test]
    fn unbind_makes_the_resource_unreachable() {
        let (mut r, _s) = world();
        let (alice, oa) = bind(&mut r, "alice", "a", 1);
        let (bob, ob) = bind(&mut r, "bob", "b", 2);
        let p = ping("p", "bob@localhost/b");
        send(&mut r, &alice, &p);
        assert_eq!(drained(&ob).len(), 1);
        assert!(drained(&oa).is_empty());
        r.unbind(&bob, 2);
        assert_eq!(r.session_count(), 1);
        let e = bounced(&mut r, &alice, &oa, &p, "service-unavailable");
        assert!(drained(&ob).is_empty());
        assert_eq!(e.attr("id"), Some("p"));
        // Unbinding with the wrong connection id does nothing.
        r.unbind(&alice, 77);
        assert_eq!(r.session_count(), 1);
    }
}

mod presence {
    //! RFC 6121 §4: broadcasts, probes, directed presence, and stanzas the router refuses.
    use super::*;

    /// The world of the presence tests: alice's roster has bob (`from`: bob gets her
    /// presence), carol (`to`: she gets carol's) and dave (`none`); bob, carol and dave
    /// have consistent rosters. Bob, carol and dave are online; alice is bound, not yet
    /// available.
    struct Contacts {
        r: Router,
        alice: Jid,
        oa: Rc<Outbox>,
        ob: Rc<Outbox>,
        oc: Rc<Outbox>,
        od: Rc<Outbox>,
    }

    impl Contacts {
        /// Routes `xml` as sent by alice.
        fn send(&mut self, xml: &str) {
            send(&mut self.r, &self.alice, xml);
        }

        /// Alice becomes available; her and bob's outboxes are cleared.
        fn alice_available(&mut self) {
            self.send("<presence/>");
            drained(&self.oa);
            drained(&self.ob);
        }
    }

    fn contacts() -> Contacts {
        let (mut r, store) = world();
        let alice = "alice@localhost";
        roster_item(&store, "alice", "bob@localhost", Subscription::From);
        roster_item(&store, "alice", "carol@localhost", Subscription::To);
        roster_item(&store, "alice", "dave@localhost", Subscription::None);
        roster_item(&store, "bob", alice, Subscription::To);
        roster_item(&store, "carol", alice, Subscription::From);
        roster_item(&store, "dave", alice, Subscription::None);
        let (alice, oa) = bind(&mut r, "alice", "a", 1);
        let away = "<presence><show>away</show></presence>";
        let (_b, ob) = online(&mut r, "bob", "b", 2, away);
        let here = "<presence><status>carol here</status></presence>";
        let (_c, oc) = online(&mut r, "carol", "c", 3, here);
        let (_d, od) = online(&mut r, "dave", "d", 4, "<presence/>");
        drained(&oa);
        Contacts {
            r,
            alice,
            oa,
            ob,
            oc,
            od,
        }
    }

    /// §4.2.2: the initial presence goes to the contacts with a `from` subscription (bob),
    /// not to `to`-only (carol) or `none` (dave) contacts; §4.2.3/§4.3: the server probes
    /// the `to` contacts and the user gets their presence (carol's), not that of the others.
    #[test]
    fn initial_presence_broadcast_and_probes() {
        let mut w = contacts();
        w.send("<presence><priority>3</priority></presence>");
        let to_bob = one(&w.ob);
        assert_eq!(to_bob.name, "presence");
        let want = [None, Some("alice@localhost/a"), Some("bob@localhost")];
        assert_eq!(attrs(&to_bob, "type from to"), want);
        let to_carol = drained(&w.oc);
        assert!(to_carol.is_empty(), "carol has no `from` subscription");
        assert!(drained(&w.od).is_empty(), "dave has no subscription");
        let to_alice = drained(&w.oa);
        assert_eq!(to_alice.len(), 1, "only carol's presence: {to_alice:?}");
        let p = &to_alice[0];
        assert_eq!(p.name, "presence");
        let want = [Some("carol@localhost/c"), Some("alice@localhost/a")];
        assert_eq!(attrs(p, "from to"), want);
        let status = p.child("status", crate::xml::NS_CLIENT).map(|s| s.text());
        assert_eq!(status.as_deref(), Some("carol here"));
    }

    /// §4.2.2: the account's other available resources get the initial presence too,
    /// and the new resource gets theirs.
    #[test]
    fn initial_presence_reaches_own_resources() {
        let mut w = contacts();
        let (a2, o2) = online(&mut w.r, "alice", "a2", 5, "<presence/>");
        drained(&w.ob);
        w.send("<presence/>");
        assert_eq!(one(&o2).attr("from"), Some("alice@localhost/a"));
        let to_a = drained(&w.oa);
        assert!(
            to_a.iter().any(|p| p.attr("from") == Some(a2.as_str())),
            "a2's presence for the new resource: {to_a:?}"
        );
    }

    /// §4.5.2: unavailable presence goes to the same contacts as the available one, and a
    /// second one (the resource is no longer available) goes nowhere.
    #[test]
    fn unavailable_presence_broadcast() {
        let mut w = contacts();
        w.alice_available();
        w.send("<presence type='unavailable'><status>bye</status></presence>");
        let to_bob = one(&w.ob);
        let want = [Some("unavailable"), Some("alice@localhost/a")];
        assert_eq!(attrs(&to_bob, "type from"), want);
        let status = to_bob.child("status", crate::xml::NS_CLIENT);
        assert_eq!(status.map(|s| s.text()).as_deref(), Some("bye"));
        assert!(drained(&w.oc).is_empty());
        assert!(drained(&w.od).is_empty());
        w.send("<presence type='unavailable'/>");
        assert!(drained(&w.ob).is_empty(), "already unavailable");
    }

    /// §4.5.2: a session that ends while available is announced unavailable.
    #[test]
    fn unbind_broadcasts_unavailable() {
        let mut w = contacts();
        w.send("<presence/>");
        drained(&w.ob);
        w.r.unbind(&w.alice, 1);
        let to_bob = one(&w.ob);
        let want = [Some("unavailable"), Some("alice@localhost/a")];
        assert_eq!(attrs(&to_bob, "type from"), want);
        assert!(drained(&w.oc).is_empty());
    }

    /// §4.6: directed presence to a JID with no subscription reaches it, and (§4.6.3) the
    /// sender's unavailable presence later reaches it too.
    #[test]
    fn directed_presence_to_a_jid_outside_the_roster() {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let (_d, od) = online(&mut r, "dave", "d", 2, "<presence/>");
        let chat = "<presence to='dave@localhost/d'><show>chat</show></presence>";
        send(&mut r, &alice, chat);
        let (a, d) = (Some("alice@localhost/a"), Some("dave@localhost/d"));
        assert_eq!(attrs(&one(&od), "from to type"), [a, d, None]);
        assert!(drained(&oa).is_empty());
        send(&mut r, &alice, "<presence type='unavailable'/>");
        let got = one(&od);
        assert_eq!(attrs(&got, "type from to"), [Some("unavailable"), a, d]);
    }

    /// RFC 6121 §4.7.1 / RFC 6120 §8.3.3.1: a presence of a type RFC 6121 does not define,
    /// directed to a contact, is answered with `bad-request` and not delivered.
    #[test]
    fn unknown_presence_type_gets_bad_request() {
        let mut w = contacts();
        w.alice_available();
        let dance = "<presence type='dance' to='bob@localhost'/>";
        bounced(&mut w.r, &w.alice, &w.oa, dance, "bad-request");
        assert!(drained(&w.ob).is_empty());
    }

    /// A presence to the pub-sub service carries no meaning: ignored, no error, nothing
    /// delivered, even of an unknown type or a subscription request.
    #[test]
    fn presence_to_the_pubsub_service_is_ignored() {
        let mut w = contacts();
        w.alice_available();
        for p in [
            "<presence to='pubsub.localhost'/>",
            "<presence to='pubsub.localhost' type='dance'/>",
            "<presence to='pubsub.localhost' type='subscribe'/>",
            "<presence to='pubsub.localhost' type='probe'/>",
        ] {
            unanswered(&mut w.r, &w.alice, &w.oa, p);
            assert!(drained(&w.ob).is_empty(), "{p}: delivered");
        }
        // The subscription request left no roster item.
        w.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
        let reply = one(&w.oa);
        let q = reply.child("query", "jabber:iq:roster").expect("roster");
        let listed = |i: &Element| i.attr("jid") == Some("pubsub.localhost");
        assert!(!q.elements().any(listed), "{q:?}");
    }

    /// §3.1: a subscription handshake through presence stanzas gives alice a `to`
    /// subscription to bob, and bob's presence reaches her (§3.1.5).
    #[test]
    fn subscription_handshake_then_presence() {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let (bob, ob) = online(&mut r, "bob", "b", 2, "<presence/>");
        // Whether `got` holds a presence of type `ty` from `from`.
        let has = |got: &[Element], ty: Option<&str>, from: &str| {
            got.iter().any(|p| {
                p.name == "presence" && p.attr("type") == ty && p.attr("from") == Some(from)
            })
        };
        let (subscribe, subscribed) = (Some("subscribe"), Some("subscribed"));
        send(&mut r, &alice, &presence_to("subscribe", "bob@localhost"));
        let req = drained(&ob);
        assert!(has(&req, subscribe, "alice@localhost"), "{req:?}");
        drained(&oa);
        send(&mut r, &bob, &presence_to("subscribed", "alice@localhost"));
        let got = drained(&oa);
        assert!(has(&got, subscribed, "bob@localhost"), "{got:?}");
        let after = "bob's presence after the approval";
        assert!(has(&got, None, "bob@localhost/b"), "{after}: {got:?}");
        // Bob now has a `from` subscription: his presence updates reach alice.
        drained(&ob);
        send(&mut r, &bob, "<presence><show>dnd</show></presence>");
        assert_eq!(one(&oa).attr("from"), Some("bob@localhost/b"));
    }
}

mod messages {
    //! RFC 6121 §8.5: local delivery rules for messages.
    use super::*;

    /// Bob with three available resources: `b1` and `b2` at priority 5, `b3` at 1, and
    /// `neg` at -1.
    struct Bob {
        r: Router,
        alice: Jid,
        oa: Rc<Outbox>,
        obs: Vec<Rc<Outbox>>,
    }

    impl Bob {
        /// Routes `xml` as sent by alice.
        fn send(&mut self, xml: &str) {
            send(&mut self.r, &self.alice, xml);
        }

        /// What each of bob's resources got (and takes it out).
        fn got(&self) -> Vec<Vec<Element>> {
            self.obs.iter().map(|o| drained(o)).collect()
        }
    }

    fn bob() -> Bob {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let mut obs = Vec::new();
        let resources = [("b1", 5), ("b2", 5), ("b3", 1), ("neg", -1)];
        for (conn, (res, prio)) in (10..).zip(resources) {
            let p = format!("<presence><priority>{prio}</priority></presence>");
            obs.push(online(&mut r, "bob", res, conn, &p).1);
        }
        for o in &obs {
            drained(o);
        }
        drained(&oa);
        Bob { r, alice, oa, obs }
    }

    /// Alice (available, alone) sends a chat message to `to`, answered with
    /// `service-unavailable`, then a headline to `to`, not answered.
    fn chat_bounced_headline_dropped(to: &str) {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let m = msg("chat", "m", to);
        bounced(&mut r, &alice, &oa, &m, "service-unavailable");
        unanswered(&mut r, &alice, &oa, &msg("headline", "h", to));
    }

    fn ids(out: &[Element]) -> Vec<&str> {
        out.iter().filter_map(|e| e.attr("id")).collect()
    }

    /// §8.5.3.1: a message to a full JID goes to that resource only.
    #[test]
    fn to_a_full_jid_reaches_that_resource_only() {
        let mut w = bob();
        w.send("<message type='chat' id='m1' to='bob@localhost/b3'><body>hi</body></message>");
        let got = w.got();
        assert_eq!(ids(&got[2]), ["m1"]);
        let want = [Some("bob@localhost/b3"), Some("alice@localhost/a")];
        assert_eq!(attrs(&got[2][0], "to from"), want);
        assert!(
            got[0].is_empty() && got[1].is_empty() && got[3].is_empty(),
            "{got:?}"
        );
        // Even a negative-priority resource gets what is addressed to it.
        w.send(&msg("chat", "m2", "bob@localhost/neg"));
        assert_eq!(ids(&drained(&w.obs[3])), ["m2"]);
        assert!(drained(&w.oa).is_empty());
    }

    /// §8.5.2.1.1: chat and normal messages to a bare JID go to the highest-priority
    /// available resources (all of them if several share it), never to a negative one.
    #[test]
    fn to_a_bare_jid_reaches_the_highest_priority_resources() {
        let mut w = bob();
        for (id, ty) in [("c", "chat"), ("n", "normal")] {
            let body = "<body>x</body>";
            w.send(&format!(
                "<message type='{ty}' id='{id}' to='bob@localhost'>{body}</message>"
            ));
            let got = w.got();
            assert_eq!(ids(&got[0]), [id], "{ty}");
            assert_eq!(ids(&got[1]), [id], "{ty}");
            assert!(got[2].is_empty(), "{ty}: lower priority: {:?}", got[2]);
            assert!(got[3].is_empty(), "{ty}: negative priority: {:?}", got[3]);
        }
        assert!(drained(&w.oa).is_empty());
    }

    /// §8.5.2.1.1: a headline to a bare JID goes to every non-negative available resource.
    #[test]
    fn headline_to_a_bare_jid_reaches_all_non_negative_resources() {
        let mut w = bob();
        w.send(&msg("headline", "h", "bob@localhost"));
        let got = w.got();
        let got_ids: Vec<Vec<&str>> = got[..3].iter().map(|g| ids(g)).collect();
        assert_eq!(got_ids, [["h"]; 3]);
        assert!(got[3].is_empty(), "negative priority: {:?}", got[3]);
    }

    /// §8.5.2.1.1 / §4.7.2.3: resources with a negative priority never get messages to the
    /// bare JID; if only such resources are available, the account counts as offline here:
    /// the message is stored (XEP-0160), not delivered to them.
    #[test]
    fn negative_priority_only_counts_as_offline() {
        let (mut r, s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let neg = "<presence><priority>-1</priority></presence>";
        let (_b, ob) = online(&mut r, "bob", "b", 2, neg);
        unanswered(&mut r, &alice, &oa, &msg("chat", "m", "bob@localhost"));
        assert!(drained(&ob).is_empty());
        assert_eq!(s.offline_get("bob").expect("read").len(), 1);
    }

    /// §8.5.2.2: to an account with no available resource (bound but not available, or
    /// not bound): chat and normal (and untyped) messages are stored (XEP-0160) without a
    /// reply, a headline is dropped; nothing reaches the bound resource.
    #[test]
    fn to_an_offline_account() {
        let (mut r, s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let (_c, oc) = bind(&mut r, "carol", "c", 2); // bound, never available
        for to in ["bob@localhost", "carol@localhost"] {
            for (id, ty) in [("c", Some("chat")), ("n", Some("normal")), ("none", None)] {
                let ty = ty.map(|t| format!(" type='{t}'")).unwrap_or_default();
                let m = format!("<message{ty} id='{id}' to='{to}'><body>x</body></message>");
                unanswered(&mut r, &alice, &oa, &m);
            }
            let h = msg("headline", "h", to);
            unanswered(&mut r, &alice, &oa, &h);
        }
        assert!(drained(&oc).is_empty());
        for user in ["bob", "carol"] {
            let stored = s.offline_get(user).expect("read");
            let ids: Vec<Option<String>> = stored
                .iter()
                .map(|m| {
                    Element::parse(&m.stanza)
                        .expect("stanza")
                        .attr("id")
                        .map(str::to_owned)
                })
                .collect();
            let want = ["c", "n", "none"].map(|i| Some(i.to_owned()));
            assert_eq!(ids, want, "{user}");
        }
    }

    /// §8.5.1: a message to an account that does not exist: `service-unavailable`
    /// (headline: nothing).
    #[test]
    fn to_a_nonexistent_account() {
        chat_bounced_headline_dropped("nobody@localhost");
    }

    /// §8.5.3.2.1: a chat message to a full JID whose resource is not bound is treated as
    /// if to the bare JID.
    #[test]
    fn to_a_missing_resource_falls_back_to_the_bare_jid() {
        let mut w = bob();
        w.send(&msg("chat", "m", "bob@localhost/gone"));
        let got = w.got();
        assert_eq!(ids(&got[0]), ["m"]);
        assert_eq!(ids(&got[1]), ["m"]);
        assert!(got[2].is_empty() && got[3].is_empty());
        assert!(drained(&w.oa).is_empty());
    }

    /// §8.5.2.1.1 / §8.5.3.2.1: a groupchat message to a bare JID (or a missing resource)
    /// is bounced with `service-unavailable`, even while the account is online.
    #[test]
    fn groupchat_to_a_bare_jid_is_bounced() {
        let mut w = bob();
        for (id, to) in [("g", "bob@localhost"), ("g2", "bob@localhost/gone")] {
            let m = msg("groupchat", id, to);
            bounced(&mut w.r, &w.alice, &w.oa, &m, "service-unavailable");
        }
        for o in &w.obs {
            assert!(drained(o).is_empty());
        }
    }

    /// No server-to-server support: a message to another domain gets
    /// `remote-server-not-found` (RFC 6120 §10.4.3).
    #[test]
    fn to_a_remote_domain() {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let m = msg("chat", "m", "romeo@example.net/x");
        let e = bounced(&mut r, &alice, &oa, &m, "remote-server-not-found");
        assert_eq!(e.attr("id"), Some("m"));
    }

    /// RFC 6120 §8.3.1: an error stanza is never answered with an error, wherever it goes.
    #[test]
    fn error_messages_are_never_bounced() {
        let (mut r, _s) = world();
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        let error = format!("<error type='cancel'><item-not-found xmlns='{NS_STANZAS}'/></error>");
        for to in [
            "bob@localhost",
            "bob@localhost/gone",
            "nobody@localhost",
            "romeo@example.net",
            "localhost",
            "pubsub.localhost",
        ] {
            let m = format!("<message type='error' id='e' to='{to}'>{error}</message>");
            unanswered(&mut r, &alice, &oa, &m);
        }
    }

    /// §8.5 (to the server's own JID): a chat message gets `service-unavailable`, a
    /// headline nothing.
    #[test]
    fn to_the_domain() {
        chat_bounced_headline_dropped("localhost");
    }
}

mod server_iq {
    //! IQs the server answers itself: RFC 6120 §8.2.3 rules, XEP-0030 disco, XEP-0199 ping,
    //! XEP-0092 version.
    use super::*;
    use crate::proto::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION};

    /// Alice, bound (not available), and her outbox.
    struct Alice {
        r: Router,
        a: Jid,
        oa: Rc<Outbox>,
    }

    impl Alice {
        /// Routes `xml` from alice; the one result to `id`, from the domain to alice.
        #[track_caller]
        fn result(&mut self, xml: &str, id: &str) -> Element {
            send(&mut self.r, &self.a, xml);
            let e = one(&self.oa);
            assert_eq!(e.name, "iq");
            assert_eq!(e.attr("type"), Some("result"), "{e:?}");
            assert_eq!(e.attr("id"), Some(id));
            assert_eq!(e.attr("to"), Some(self.a.as_str()));
            assert_eq!(e.attr("from"), Some("localhost"));
            e
        }

        /// Routes `xml` from alice; the one error reply with `cond` (see `bounced`).
        #[track_caller]
        fn bounced(&mut self, xml: &str, cond: &str) -> Element {
            bounced(&mut self.r, &self.a, &self.oa, xml, cond)
        }

        /// Routes `xml` from alice and asserts nothing comes back.
        #[track_caller]
        fn unanswered(&mut self, xml: &str) {
            unanswered(&mut self.r, &self.a, &self.oa, xml);
        }
    }

    fn alice() -> Alice {
        let (mut r, _s) = world();
        let (a, oa) = bind(&mut r, "alice", "a", 1);
        Alice { r, a, oa }
    }

    /// A get of the query `ns` with `id` to the domain.
    fn query(id: &str, ns: &str) -> String {
        format!("<iq type='get' id='{id}' to='localhost'><query xmlns='{ns}'/></iq>")
    }

    /// XEP-0030 §3.1: disco#info of the domain: the server/im identity and exactly the
    /// features the server answers.
    #[test]
    fn disco_info_lists_identity_and_features() {
        let e = alice().result(&query("i", NS_DISCO_INFO), "i");
        let q = e.child("query", NS_DISCO_INFO).expect("query");
        let identities: Vec<Vec<Option<&str>>> = q
            .elements()
            .filter(|c| c.name == "identity")
            .map(|c| attrs(c, "category type name"))
            .collect();
        assert_eq!(identities, [[Some("server"), Some("im"), Some("Kinglet")]]);
        let mut features: Vec<&str> = q
            .elements()
            .filter(|c| c.name == "feature")
            .filter_map(|c| c.attr("var"))
            .collect();
        features.sort_unstable();
        let mut want = vec![
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_PING,
            NS_VERSION,
            "msgoffline",
        ];
        want.sort_unstable();
        assert_eq!(features, want);
    }

    /// XEP-0030 §4.1: disco#items of the domain lists the pub-sub service.
    #[test]
    fn disco_items_lists_the_pubsub_service() {
        let e = alice().result(&query("d", NS_DISCO_ITEMS), "d");
        let q = e.child("query", NS_DISCO_ITEMS).expect("query");
        let items: Vec<Option<&str>> = q.elements().map(|i| i.attr("jid")).collect();
        assert_eq!(items, [Some("pubsub.localhost")]);
    }

    /// XEP-0199 §4.2: a ping to the server gets an empty result.
    #[test]
    fn ping_answers_result() {
        let e = alice().result(&ping("p", "localhost"), "p");
        assert_eq!(e.elements().count(), 0, "{e:?}");
    }

    /// XEP-0092: the version query names Kinglet and this build's version.
    #[test]
    fn version_names_kinglet() {
        let e = alice().result(&query("v", NS_VERSION), "v");
        let q = e.child("query", NS_VERSION).expect("query");
        let text = |name| q.child(name, NS_VERSION).map(|n| n.text());
        assert_eq!(text("name").as_deref(), Some("Kinglet"));
        assert_eq!(text("version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    /// RFC 6120 §8.4: a request the server does not understand gets
    /// `service-unavailable` (also a `set` of a query it only answers as `get`).
    #[test]
    fn unknown_payload_gets_service_unavailable() {
        let mut w = alice();
        for (id, ty, payload) in [
            ("u1", "get", "<query xmlns='urn:example:nothing'/>"),
            ("u2", "set", "<ping xmlns='urn:xmpp:ping'/>"),
            ("u3", "set", "<query xmlns='jabber:iq:version'/>"),
        ] {
            let iq = format!("<iq type='{ty}' id='{id}' to='localhost'>{payload}</iq>");
            let e = w.bounced(&iq, "service-unavailable");
            assert_eq!(e.attr("id"), Some(id));
        }
    }

    /// RFC 6120 §8.2.3: an IQ needs an `id` and one of the four types; else `bad-request`.
    #[test]
    fn iq_without_id_or_with_unknown_type_gets_bad_request() {
        let mut w = alice();
        let ping = "<ping xmlns='urn:xmpp:ping'/>";
        for (id, head) in [
            (None, "type='get'"),
            (Some("t"), "type='fetch' id='t'"),
            (Some("t2"), "id='t2'"),
        ] {
            let iq = format!("<iq {head} to='localhost'>{ping}</iq>");
            assert_eq!(w.bounced(&iq, "bad-request").attr("id"), id);
        }
    }

    /// RFC 6120 §8.2.3: a get or set carries exactly one payload; two (or none) get
    /// `bad-request`.
    #[test]
    fn iq_get_with_two_children_gets_bad_request() {
        let mut w = alice();
        let two = "<ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/>";
        let iq = format!("<iq type='get' id='two' to='localhost'>{two}</iq>");
        assert_eq!(w.bounced(&iq, "bad-request").attr("id"), Some("two"));
        let iq = "<iq type='get' id='zero' to='localhost'/>";
        assert_eq!(w.bounced(iq, "bad-request").attr("id"), Some("zero"));
    }

    /// RFC 6120 §8.2.3: results and errors are not requests: the server never answers them.
    #[test]
    fn iq_result_or_error_to_the_server_is_not_answered() {
        let mut w = alice();
        w.unanswered("<iq type='result' id='r' to='localhost'/>");
        let version = "<query xmlns='jabber:iq:version'/>";
        w.unanswered(&format!(
            "<iq type='result' id='r2' to='localhost'>{version}</iq>"
        ));
        let fni = format!("<feature-not-implemented xmlns='{NS_STANZAS}'/>");
        let error = format!("<error type='cancel'>{fni}</error>");
        w.unanswered(&format!(
            "<iq type='error' id='e' to='localhost'>{error}</iq>"
        ));
    }

    /// No server-to-server support: a request to another domain gets
    /// `remote-server-not-found`; a result to it is dropped.
    #[test]
    fn iq_to_a_remote_domain() {
        let mut w = alice();
        w.bounced(&ping("x", "example.net"), "remote-server-not-found");
        w.unanswered("<iq type='result' id='y' to='example.net'/>");
    }
}

mod offline {
    //! XEP-0160 offline storage (RFC 6121 §8.5.2.2): what is kept for an account with no
    //! available resource, the bounds, and delivery at its next available presence.
    use super::*;
    use crate::env::FakeEnv;
    use std::time::Duration;

    /// The XEP-0203 delay of `e`: its `from` and `stamp`.
    fn delay(e: &Element) -> (Option<&str>, Option<&str>) {
        let d = e.child("delay", "urn:xmpp:delay").expect("a delay element");
        (d.attr("from"), d.attr("stamp"))
    }

    /// The ids of the stanzas stored for `user`, oldest first.
    fn stored_ids(s: &Store, user: &str) -> Vec<String> {
        s.offline_get(user)
            .expect("read")
            .iter()
            .map(|m| {
                let e = Element::parse(&m.stanza).expect("a stored stanza parses");
                e.attr("id").unwrap_or_default().to_owned()
            })
            .collect()
    }

    /// The text of a stanza error.
    fn error_text(e: &Element) -> String {
        e.child("error", "jabber:client")
            .and_then(|err| err.child("text", NS_STANZAS))
            .map(|t| t.text())
            .unwrap_or_default()
    }

    /// Routes `xml` from `from` and returns its bounce, which must say that the recipient's
    /// offline storage is full (`service-unavailable`).
    #[track_caller]
    fn bounced_full(r: &mut Router, from: &Jid, ob: &Outbox, xml: &str) -> Element {
        let e = bounced(r, from, ob, xml, "service-unavailable");
        assert_eq!(
            error_text(&e),
            "the recipient is offline and its offline storage is full"
        );
        e
    }

    /// Alice online; bob, carol and dave offline.
    fn alice_alone(
        tune: impl FnOnce(&mut Config),
    ) -> (Router, Rc<Store>, Rc<FakeEnv>, Jid, Rc<Outbox>) {
        let (mut r, s, env) = world_env(tune);
        let (alice, oa) = online(&mut r, "alice", "a", 1, "<presence/>");
        (r, s, env, alice, oa)
    }

    /// A chat message to an offline account is stored, not answered.
    #[test]
    fn chat_to_an_offline_account_is_stored() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        let m = "<message type='chat' id='c1' to='bob@localhost'><body>hi</body></message>";
        unanswered(&mut r, &alice, &oa, m);
        let stored = s.offline_get("bob").expect("read");
        assert_eq!(stored.len(), 1);
        let e = Element::parse(&stored[0].stanza).expect("parses");
        assert_eq!(
            attrs(&e, "id type from"),
            [Some("c1"), Some("chat"), Some("alice@localhost/a")]
        );
        assert_eq!(
            e.child("body", "jabber:client").map(|b| b.text()),
            Some("hi".into())
        );
        assert_eq!(stored[0].stamp_ms, 1_704_067_200_000);
    }

    /// A normal message (typed, or without a type) to an offline account is stored.
    #[test]
    fn normal_to_an_offline_account_is_stored() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        unanswered(&mut r, &alice, &oa, &msg("normal", "n1", "bob@localhost"));
        unanswered(
            &mut r,
            &alice,
            &oa,
            "<message id='n2' to='bob@localhost'><body>x</body></message>",
        );
        assert_eq!(stored_ids(&s, "bob"), ["n1", "n2"]);
    }

    /// Headline (RFC 6121 §8.5.2.2: not stored) and error messages are dropped without a
    /// word; groupchat is bounced; none of them is stored.
    #[test]
    fn headline_and_error_dropped_groupchat_bounced_none_stored() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        unanswered(&mut r, &alice, &oa, &msg("headline", "h", "bob@localhost"));
        let error = format!("<error type='cancel'><item-not-found xmlns='{NS_STANZAS}'/></error>");
        let e = format!("<message type='error' id='e' to='bob@localhost'>{error}</message>");
        unanswered(&mut r, &alice, &oa, &e);
        for to in ["bob@localhost", "bob@localhost/gone"] {
            bounced(
                &mut r,
                &alice,
                &oa,
                &msg("groupchat", "g", to),
                "service-unavailable",
            );
        }
        assert!(stored_ids(&s, "bob").is_empty());
    }

    /// §8.5.3.2.1: a chat message to a resource that is not bound is handled as if to the
    /// bare JID: stored when the account is offline.
    #[test]
    fn to_a_gone_resource_is_stored_as_to_the_bare_jid() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        unanswered(&mut r, &alice, &oa, &msg("chat", "m", "bob@localhost/gone"));
        assert_eq!(stored_ids(&s, "bob"), ["m"]);
    }

    /// An anonymous account ends with its sessions: nothing is kept for it (bounced as
    /// before); with `offline_max_per_account = 0` nothing is kept for anyone.
    #[test]
    fn anonymous_accounts_and_storage_off_bounce_as_before() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        let anon = r.new_anonymous_user().expect("name");
        let _ = r.bind(&anon, true, Some("x"), 9, outbox()).expect("bind");
        let to = format!("{anon}@localhost");
        let e = bounced(
            &mut r,
            &alice,
            &oa,
            &msg("chat", "m", &to),
            "service-unavailable",
        );
        assert_eq!(error_text(&e), "the recipient is offline");
        assert!(stored_ids(&s, &anon).is_empty());

        let (mut r, s, _, alice, oa) = alice_alone(|c| c.limits.offline_max_per_account = 0);
        let e = bounced(
            &mut r,
            &alice,
            &oa,
            &msg("chat", "m", "bob@localhost"),
            "service-unavailable",
        );
        assert_eq!(error_text(&e), "the recipient is offline");
        assert!(stored_ids(&s, "bob").is_empty());
    }

    /// A full offline storage (the account's count or bytes, or all accounts' bytes)
    /// bounces the message with `service-unavailable` and a text saying so; what was
    /// stored stays, and nothing more is.
    #[test]
    fn full_storage_bounces_with_service_unavailable() {
        // Per account: at most 2 messages.
        let (mut r, s, _, alice, oa) = alice_alone(|c| c.limits.offline_max_per_account = 2);
        for id in ["1", "2"] {
            unanswered(&mut r, &alice, &oa, &msg("chat", id, "bob@localhost"));
        }
        let e = bounced_full(&mut r, &alice, &oa, &msg("chat", "3", "bob@localhost"));
        assert_eq!(e.attr("id"), Some("3"));
        assert_eq!(stored_ids(&s, "bob"), ["1", "2"]);
        // Another account is not affected.
        unanswered(&mut r, &alice, &oa, &msg("chat", "c", "carol@localhost"));

        // Per account: at most 4096 bytes of stanzas.
        let big = |id: &str, to: &str, n: usize| {
            format!(
                "<message type='chat' id='{id}' to='{to}'><body>{}</body></message>",
                "x".repeat(n)
            )
        };
        let (mut r, s, _, alice, oa) =
            alice_alone(|c| c.limits.offline_max_bytes_per_account = 4096);
        unanswered(&mut r, &alice, &oa, &big("b1", "bob@localhost", 3000));
        bounced_full(&mut r, &alice, &oa, &big("b2", "bob@localhost", 1500));
        unanswered(&mut r, &alice, &oa, &big("b3", "bob@localhost", 500));
        assert_eq!(stored_ids(&s, "bob"), ["b1", "b3"]);

        // All accounts together: at most 65536 bytes.
        let (mut r, s, _, alice, oa) = alice_alone(|c| {
            c.limits.offline_max_bytes = 65536;
            c.limits.offline_max_bytes_per_account = 65536;
        });
        unanswered(&mut r, &alice, &oa, &big("b", "bob@localhost", 40_000));
        bounced_full(&mut r, &alice, &oa, &big("c", "carol@localhost", 30_000));
        assert!(stored_ids(&s, "carol").is_empty());
        // Delivering bob's frees the room.
        let (_b, ob) = online(&mut r, "bob", "b", 2, "<presence/>");
        assert!(
            drained(&ob).is_empty(),
            "delivered before `online` drained it"
        );
        assert!(stored_ids(&s, "bob").is_empty());
        unanswered(&mut r, &alice, &oa, &big("c", "carol@localhost", 30_000));
        assert_eq!(stored_ids(&s, "carol"), ["c"]);
    }

    /// XEP-0160 §3: at its initial presence the account gets its stored messages, in the
    /// order they came, each with an XEP-0203 delay from the domain stamped when it was
    /// stored; they are then deleted, so neither a presence update nor another resource
    /// gets them again.
    #[test]
    fn delivered_in_order_with_delay_on_available_presence() {
        let (mut r, s, env, alice, oa) = alice_alone(|_| {});
        for (i, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
            if i > 0 {
                env.advance(Duration::from_millis(5_250));
            }
            let m = format!(
                "<message type='chat' id='{id}' to='bob@localhost'><body>{id}</body></message>"
            );
            unanswered(&mut r, &alice, &oa, &m);
        }
        let (bob, ob) = bind(&mut r, "bob", "b", 2);
        assert!(
            drained(&ob).is_empty(),
            "nothing before the initial presence"
        );
        send(&mut r, &bob, "<presence/>");
        let got = drained(&ob);
        let ids: Vec<Option<&str>> = got.iter().map(|e| e.attr("id")).collect();
        assert_eq!(ids, [Some("m1"), Some("m2"), Some("m3")], "{got:?}");
        let stamps = [
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:05.250Z",
            "2024-01-01T00:00:10.500Z",
        ];
        for (e, stamp) in got.iter().zip(stamps) {
            assert_eq!(delay(e), (Some("localhost"), Some(stamp)), "{e:?}");
            assert_eq!(
                attrs(e, "from to type"),
                [
                    Some("alice@localhost/a"),
                    Some("bob@localhost"),
                    Some("chat")
                ]
            );
            assert_eq!(
                e.child("body", "jabber:client").map(|b| b.text()),
                e.attr("id").map(str::to_owned)
            );
        }
        assert!(stored_ids(&s, "bob").is_empty(), "deleted once delivered");
        send(&mut r, &bob, "<presence><show>away</show></presence>");
        assert!(
            drained(&ob).is_empty(),
            "a presence update delivers nothing again"
        );
        let (_b2, ob2) = online(&mut r, "bob", "b2", 3, "<presence/>");
        assert!(drained(&ob2).is_empty());
        // Online now: a new message goes straight through, without a delay.
        send(&mut r, &alice, &msg("chat", "live", "bob@localhost"));
        // (b2's presence reached b too.)
        let live: Vec<Element> = drained(&ob)
            .into_iter()
            .filter(|e| e.name == "message")
            .collect();
        assert_eq!(live.len(), 1, "{live:?}");
        assert!(live[0].child("delay", "urn:xmpp:delay").is_none());
    }

    /// RFC 6121 §8.5.2.1 / XEP-0160 §3: an available presence with a negative priority
    /// does not trigger delivery (such a resource gets no messages to the bare JID); a
    /// later update to a non-negative priority does.
    #[test]
    fn negative_priority_does_not_trigger_delivery() {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        unanswered(&mut r, &alice, &oa, &msg("chat", "m", "bob@localhost"));
        let (bob, ob) = bind(&mut r, "bob", "b", 2);
        send(&mut r, &bob, "<presence><priority>-5</priority></presence>");
        assert!(drained(&ob).is_empty());
        send(
            &mut r,
            &bob,
            "<presence><priority>-1</priority><show>dnd</show></presence>",
        );
        assert!(drained(&ob).is_empty());
        assert_eq!(stored_ids(&s, "bob"), ["m"]);
        send(&mut r, &bob, "<presence><priority>0</priority></presence>");
        let got = drained(&ob);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attr("id"), Some("m"));
        assert!(stored_ids(&s, "bob").is_empty());
    }

    /// The interface the XEP-0198 work calls for the unacknowledged messages of a session
    /// that ended: `offline_or_bounce` stores chat and normal, drops headline and error,
    /// and bounces groupchat, saying which.
    #[test]
    fn offline_or_bounce_says_what_it_did() {
        use super::super::offline::OfflineOutcome;
        use crate::stanza::MessageType;
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        let stanza = |id: &str| {
            let mut e = Element::parse(&msg("chat", id, "bob@localhost/gone")).expect("parses");
            e.set_attr("from", alice.as_str());
            e
        };
        let cases = [
            ("c", MessageType::Chat, OfflineOutcome::Stored),
            ("n", MessageType::Normal, OfflineOutcome::Stored),
            ("h", MessageType::Headline, OfflineOutcome::Dropped),
            ("e", MessageType::Error, OfflineOutcome::Dropped),
            ("g", MessageType::Groupchat, OfflineOutcome::Bounced),
        ];
        for (id, ty, want) in cases {
            assert_eq!(r.offline_or_bounce("bob", ty, &stanza(id)), want, "{id}");
        }
        let bounces = drained(&oa);
        assert_eq!(bounces.len(), 1, "{bounces:?}");
        assert_eq!(bounces[0].attr("id"), Some("g"));
        assert_eq!(stored_ids(&s, "bob"), ["c", "n"]);
    }

    const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

    /// Alice creates `node` with `pubsub#notification_type` = `ty` (and, if set,
    /// `pubsub#presence_based_delivery`); bob subscribes his bare JID while online, then
    /// disconnects. Returns the world with alice online.
    fn subscribed_then_gone(
        node: &str,
        ty: &str,
        presence_based: bool,
    ) -> (Router, Rc<Store>, Jid, Rc<Outbox>) {
        let (mut r, s, _, alice, oa) = alice_alone(|_| {});
        let pb = if presence_based {
            "<field var='pubsub#presence_based_delivery'><value>1</value></field>"
        } else {
            ""
        };
        send(
            &mut r,
            &alice,
            &format!(
                "<iq type='set' id='create' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'>\
                 <create node='{node}'/><configure><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>\
                 <field var='pubsub#notification_type'><value>{ty}</value></field>{pb}\
                 </x></configure></pubsub></iq>"
            ),
        );
        assert_eq!(one(&oa).attr("type"), Some("result"), "node created");
        let (bob, ob) = online(&mut r, "bob", "b", 2, "<presence/>");
        send(
            &mut r,
            &bob,
            &format!(
                "<iq type='set' id='sub' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'>\
                 <subscribe node='{node}' jid='bob@localhost'/></pubsub></iq>"
            ),
        );
        let reply = drained(&ob)
            .into_iter()
            .find(|e| e.attr("id") == Some("sub"));
        assert_eq!(
            reply
                .and_then(|e| e.attr("type").map(str::to_owned))
                .as_deref(),
            Some("result")
        );
        r.unbind(&bob, 2);
        (r, s, alice, oa)
    }

    /// Alice publishes item `id` with an alert payload to `node`.
    fn publish(r: &mut Router, alice: &Jid, oa: &Outbox, node: &str, id: &str) {
        send(
            r,
            alice,
            &format!(
                "<iq type='set' id='pub-{id}' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'>\
                 <publish node='{node}'><item id='{id}'><alert xmlns='urn:example:alert'>door \
                 open</alert></item></publish></pubsub></iq>"
            ),
        );
        let reply = drained(oa)
            .into_iter()
            .find(|e| e.attr("id") == Some(&*format!("pub-{id}")));
        assert_eq!(
            reply
                .and_then(|e| e.attr("type").map(str::to_owned))
                .as_deref(),
            Some("result")
        );
    }

    /// The item ids of the pub-sub event in `e`.
    fn event_items(e: &Element) -> Vec<String> {
        e.child("event", "http://jabber.org/protocol/pubsub#event")
            .and_then(|ev| ev.child("items", "http://jabber.org/protocol/pubsub#event"))
            .map(|items| {
                items
                    .elements()
                    .filter_map(|i| i.attr("id").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A notification of a node with `notification_type = normal` to an offline bare-JID
    /// subscriber is stored, and reaches the subscriber at its next available presence,
    /// from the service, as a normal message with a delay stamp.
    #[test]
    fn notification_of_a_normal_node_is_stored_for_an_offline_subscriber() {
        let (mut r, s, alice, oa) = subscribed_then_gone("alerts", "normal", false);
        publish(&mut r, &alice, &oa, "alerts", "i1");
        publish(&mut r, &alice, &oa, "alerts", "i2");
        assert_eq!(s.offline_get("bob").expect("read").len(), 2);
        let (bob, ob) = bind(&mut r, "bob", "b", 3);
        send(&mut r, &bob, "<presence/>");
        let got: Vec<Element> = drained(&ob)
            .into_iter()
            .filter(|e| e.name == "message")
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        for (e, id) in got.iter().zip(["i1", "i2"]) {
            assert_eq!(
                attrs(e, "from to type"),
                [
                    Some("pubsub.localhost"),
                    Some("bob@localhost"),
                    Some("normal")
                ]
            );
            assert_eq!(event_items(e), [id]);
            assert_eq!(delay(e).0, Some("localhost"));
        }
        assert!(s.offline_get("bob").expect("read").is_empty());
    }

    /// Headline notifications are not kept (RFC 6121 §8.5.2.2), nor those of a node that
    /// delivers by presence (`presence_based_delivery`): the offline subscriber misses
    /// them, as before.
    #[test]
    fn notification_of_a_headline_node_is_not_stored() {
        for (ty, presence_based) in [("headline", false), ("normal", true)] {
            let (mut r, s, alice, oa) = subscribed_then_gone("news", ty, presence_based);
            publish(&mut r, &alice, &oa, "news", "i1");
            assert!(
                s.offline_get("bob").expect("read").is_empty(),
                "{ty} {presence_based}"
            );
        }
    }
}
