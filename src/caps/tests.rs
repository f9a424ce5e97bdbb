//! Unit tests of XEP-0115 caps (`crate::caps`): parsing, verification, the cache and interests.

use super::*;

/// [`super::parse_caps`] with the default `limits.caps_max_attr_bytes`.
fn parse_caps(presence: &Element) -> PresenceCaps {
    super::parse_caps(presence, Limits::default().caps_max_attr_bytes)
}

/// [`super::notify_nodes`] with the default `limits.caps_max_interests`.
fn notify_nodes(disco: &Element) -> Vec<&str> {
    super::notify_nodes(disco, Limits::default().caps_max_interests)
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).expect("test jid")
}

fn el(s: &str) -> Element {
    Element::parse(s).expect("test xml")
}

const SIMPLE: &str = "<iq type='result' from='romeo@montague.lit/orchard' id='disco1'>\
    <query xmlns='http://jabber.org/protocol/disco#info' \
           node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
    <identity category='client' name='Exodus 0.9.1' type='pc'/>\
    <feature var='http://jabber.org/protocol/caps'/>\
    <feature var='http://jabber.org/protocol/disco#info'/>\
    <feature var='http://jabber.org/protocol/disco#items'/>\
    <feature var='http://jabber.org/protocol/muc'/>\
    </query></iq>";

const COMPLEX: &str = "<iq type='result' from='benvolio@capulet.lit/241b' id='disco1'>\
    <query xmlns='http://jabber.org/protocol/disco#info' \
           node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
    <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
    <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
    <feature var='http://jabber.org/protocol/caps'/>\
    <feature var='http://jabber.org/protocol/disco#info'/>\
    <feature var='http://jabber.org/protocol/disco#items'/>\
    <feature var='http://jabber.org/protocol/muc'/>\
    <x xmlns='jabber:x:data' type='result'>\
      <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
      <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
      <field var='os'><value>Mac</value></field>\
      <field var='os_version'><value>10.5.1</value></field>\
      <field var='software'><value>Psi</value></field>\
      <field var='software_version'><value>0.11</value></field>\
    </x></query></iq>";

#[test]
fn xep0115_5_2_simple_generation_example() {
    let iq = el(SIMPLE);
    assert_eq!(
        verification_string(&iq).expect("well-formed"),
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<\
         http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
         http://jabber.org/protocol/muc<"
    );
    assert_eq!(
        ver_sha1(&iq).expect("well-formed"),
        "QgayPKawpkPSDYmwT/WM94uAlu0="
    );
}

#[test]
fn xep0115_5_3_complex_generation_example() {
    let iq = el(COMPLEX);
    assert_eq!(
        verification_string(&iq).expect("well-formed"),
        "client/pc/el/\u{3a8} 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
         http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
         http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<\
         ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<\
         software_version<0.11<"
    );
    assert_eq!(
        ver_sha1(&iq).expect("well-formed"),
        "q07IKJEyjvHSyhy//CH0CxmKi8w="
    );
}

#[test]
fn xep0115_5_1_order_of_input_does_not_matter() {
    // The complex example with features, fields and values shuffled.
    let iq = el("<query xmlns='http://jabber.org/protocol/disco#info'>\
        <feature var='http://jabber.org/protocol/muc'/>\
        <x xmlns='jabber:x:data' type='result'>\
          <field var='software_version'><value>0.11</value></field>\
          <field var='ip_version'><value>ipv6</value><value>ipv4</value></field>\
          <field var='os'><value>Mac</value></field>\
          <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
          <field var='software'><value>Psi</value></field>\
          <field var='os_version'><value>10.5.1</value></field>\
        </x>\
        <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        </query>");
    assert_eq!(
        ver_sha1(&iq).expect("well-formed"),
        "q07IKJEyjvHSyhy//CH0CxmKi8w="
    );
}

#[test]
fn xep0115_5_4_duplicates_are_ill_formed() {
    let q = |body: &str| el(&format!("<query xmlns='{NS_DISCO_INFO}'>{body}</query>"));
    assert_eq!(
        verification_string(&q("<identity category='client' type='pc' name='A'/>\
                                <identity category='client' type='pc' name='A'/>")),
        Err(CapsError::DuplicateIdentity)
    );
    // Same category/type but different names: fine.
    assert!(
        verification_string(&q("<identity category='client' type='pc' name='A'/>\
                                 <identity category='client' type='pc' name='B'/>"))
        .is_ok()
    );
    assert_eq!(
        verification_string(&q("<feature var='a'/><feature var='b'/><feature var='a'/>")),
        Err(CapsError::DuplicateFeature)
    );
    let form = |ft: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
             <value>{ft}</value></field></x>"
        )
    };
    assert_eq!(
        verification_string(&q(&format!("{}{}", form("urn:a"), form("urn:a")))),
        Err(CapsError::DuplicateFormType)
    );
    assert!(verification_string(&q(&format!("{}{}", form("urn:a"), form("urn:b")))).is_ok());
    assert_eq!(
        verification_string(&q("<x xmlns='jabber:x:data' type='result'>\
            <field var='FORM_TYPE' type='hidden'><value>urn:a</value><value>urn:b</value></field>\
            </x>")),
        Err(CapsError::FormTypeConflict)
    );
    assert_eq!(
        verification_string(&q("<identity type='pc'/>")),
        Err(CapsError::IdentityIncomplete)
    );
    assert_eq!(
        verification_string(&q("<feature/>")),
        Err(CapsError::FeatureIncomplete)
    );
    assert_eq!(
        verification_string(&el("<iq type='result'/>")),
        Err(CapsError::NoQuery)
    );
}

#[test]
fn xep0115_5_4_form_type_not_hidden_is_ignored() {
    let with = el(&format!(
        "<query xmlns='{NS_DISCO_INFO}'><feature var='f'/>\
         <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>\
         <value>urn:a</value></field><field var='x'><value>1</value></field></x>\
         <x xmlns='jabber:x:data' type='result'><field var='y'><value>2</value></field></x>\
         </query>"
    ));
    assert_eq!(verification_string(&with).expect("well-formed"), "f<");
}

#[test]
fn xep0163_4_2_notify_features_become_interests() {
    let iq = el(&format!(
        "<iq type='result'><query xmlns='{NS_DISCO_INFO}'>\
         <feature var='urn:xmpp:avatar:metadata+notify'/>\
         <feature var='http://jabber.org/protocol/tune+notify'/>\
         <feature var='http://jabber.org/protocol/tune'/>\
         <feature var='+notify'/>\
         <feature var='urn:xmpp:bookmarks:1+notify'/></query></iq>"
    ));
    assert_eq!(
        notify_nodes(&iq),
        [
            "http://jabber.org/protocol/tune",
            "urn:xmpp:avatar:metadata",
            "urn:xmpp:bookmarks:1"
        ]
    );
}

#[test]
fn interests_are_bounded() {
    let max_interests = Limits::default().caps_max_interests;
    let many: Vec<String> = (0..max_interests + 10)
        .map(|i| format!("n{i:03}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (q, _) = client("Big", &many);
    let nodes = notify_nodes(&q);
    assert_eq!(nodes.len(), max_interests);
    assert_eq!(nodes[0], "n000");
    assert_eq!(
        nodes[max_interests - 1],
        format!("n{:03}", max_interests - 1)
    );
}

#[test]
fn xep0115_4_parse_caps_variants() {
    let p = |c: &str| el(&format!("<presence>{c}</presence>"));
    assert_eq!(parse_caps(&p("")), PresenceCaps::Absent);
    assert_eq!(
        parse_caps(&p(&format!(
            "<c xmlns='{NS_CAPS}' node='http://x' ver='1.0' ext='a b'/>"
        ))),
        PresenceCaps::Legacy
    );
    assert_eq!(
        parse_caps(&p(&format!("<c xmlns='{NS_CAPS}' hash='sha-1' node='n'/>"))),
        PresenceCaps::Absent
    );
    let long = "v".repeat(Limits::default().caps_max_attr_bytes + 1);
    assert_eq!(
        parse_caps(&p(&format!(
            "<c xmlns='{NS_CAPS}' hash='sha-1' node='n' ver='{long}'/>"
        ))),
        PresenceCaps::Absent
    );
    assert_eq!(
        parse_caps(&p(&format!(
            "<c xmlns='{NS_CAPS}' hash='sha-1' node='http://x' ver='abc='/>"
        ))),
        PresenceCaps::Hashed(Caps {
            hash: "sha-1".into(),
            node: "http://x".into(),
            ver: "abc=".into()
        })
    );
}

/// A disco#info result advertising `notify` (node names) and its correct `ver`.
fn client(name: &str, notify: &[&str]) -> (Element, String) {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "pc")
            .with_attr("name", name),
    );
    for n in notify {
        q.push_child(
            Element::new("feature", NS_DISCO_INFO).with_attr("var", format!("{n}+notify")),
        );
    }
    let ver = ver_sha1(&q).expect("well-formed");
    (q, ver)
}

fn presence(ver: &str) -> Element {
    Element::new("presence", NS_CLIENT).with_child(
        Element::new("c", NS_CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", "http://client")
            .with_attr("ver", ver),
    )
}

/// `t` takes `from`'s disco#info result `q` to `query`.
fn answer(
    t: &mut CapsTable,
    from: &Jid,
    query: &DiscoQuery,
    q: &Element,
    now_ms: u64,
) -> Option<CapsEvents> {
    t.on_disco_result(from, &query.id, &result_from(query, q), now_ms)
}

fn result_from(to: &DiscoQuery, q: &Element) -> Element {
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "result")
        .with_attr("from", to.to.as_str())
        .with_attr("id", to.id.as_str())
        .with_child(q.clone())
}

fn names(i: &[Rc<str>]) -> Vec<&str> {
    i.iter().map(|n| &**n).collect()
}

#[test]
fn xep0115_6_2_one_query_per_unknown_ver_then_cache() {
    let mut t = CapsTable::new(CapsLimits::default());
    let (q, ver) = client("A", &["urn:xmpp:avatar:metadata", "urn:xmpp:nick"]);
    let a = jid("alice@x/phone");
    let b = jid("bob@x/laptop");
    let ev = t.on_presence(&a, &presence(&ver), true, 0);
    assert_eq!(ev.queries.len(), 1);
    let query = ev.queries[0].clone();
    assert_eq!(query.to, a);
    assert_eq!(query.node, format!("http://client#{ver}"));
    let xml = query.to_element(&jid("x")).to_string_in_stream();
    assert!(
        xml.contains("type=\"get\"") && xml.contains(&query.id),
        "{xml}"
    );
    // Same ver from another resource: no second query.
    let ev = t.on_presence(&b, &presence(&ver), true, 1);
    assert!(ev.queries.is_empty() && ev.updates.is_empty());
    assert_eq!(t.pending(), 1);
    // A result from someone else with that id is not ours.
    assert!(answer(&mut t, &b, &query, &q, 2).is_none());
    let ev = answer(&mut t, &a, &query, &q, 2).expect("ours");
    assert_eq!(ev.updates.len(), 2);
    for u in &ev.updates {
        assert_eq!(
            names(&u.added),
            ["urn:xmpp:avatar:metadata", "urn:xmpp:nick"]
        );
    }
    assert!(t.wants(&a, "urn:xmpp:nick") && t.wants(&b, "urn:xmpp:avatar:metadata"));
    assert!(!t.wants(&a, "urn:xmpp:mood"));
    assert_eq!((t.cached(), t.pending()), (1, 0));
    // A third resource with a cached ver: interests at once, no query.
    let c = jid("carol@x/r");
    let ev = t.on_presence(&c, &presence(&ver), true, 3);
    assert!(ev.queries.is_empty());
    assert_eq!(ev.updates.len(), 1);
    assert_eq!(ev.updates[0].added.len(), 2);
}

#[test]
fn xep0163_4_3_4_presence_update_sends_nothing_new() {
    let mut t = CapsTable::new(CapsLimits::default());
    let (q, ver) = client("A", &["n1", "n2"]);
    let a = jid("alice@x/phone");
    let query = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
    answer(&mut t, &a, &query, &q, 1);
    // Same caps again (a status change): no update, so no last items re-sent.
    let ev = t.on_presence(&a, &presence(&ver), true, 2);
    assert_eq!(ev, CapsEvents::default());
    // Presence without caps keeps the interests.
    let ev = t.on_presence(&a, &Element::new("presence", NS_CLIENT), true, 3);
    assert_eq!(ev, CapsEvents::default());
    assert!(t.wants(&a, "n1"));
    // Caps change: only the new node is `added`.
    let (q2, ver2) = client("A2", &["n2", "n3"]);
    let query = t.on_presence(&a, &presence(&ver2), true, 4).queries[0].clone();
    let ev = answer(&mut t, &a, &query, &q2, 5).expect("ours");
    assert_eq!(names(&ev.updates[0].added), ["n3"]);
    assert!(!t.wants(&a, "n1") && t.wants(&a, "n3"));
    // Unavailable forgets the resource; the next initial presence gets everything again.
    t.on_presence(&a, &Element::new("presence", NS_CLIENT), false, 6);
    assert_eq!(t.tracked(), 0);
    let ev = t.on_presence(&a, &presence(&ver2), true, 7);
    assert_eq!(names(&ev.updates[0].added), ["n2", "n3"]);
}

#[test]
fn xep0115_5_4_mismatching_result_is_not_cached_and_next_waiter_is_asked() {
    let mut t = CapsTable::new(CapsLimits::default());
    let (_, ver) = client("Real", &["n1"]);
    let (liar, _) = client("Liar", &["evil"]);
    let (honest, _) = client("Real", &["n1"]);
    let a = jid("mallory@x/r");
    let b = jid("bob@x/r");
    let qa = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
    t.on_presence(&b, &presence(&ver), true, 0);
    let ev = answer(&mut t, &a, &qa, &liar, 1).expect("ours");
    // The liar gets what it declared for itself; bob is asked directly.
    assert_eq!(ev.updates.len(), 1);
    assert_eq!(ev.updates[0].jid, a);
    assert_eq!(ev.queries.len(), 1);
    let qb = ev.queries[0].clone();
    assert_eq!(qb.to, b);
    assert_eq!(t.cached(), 0);
    assert!(!t.wants(&b, "evil"));
    let ev = answer(&mut t, &b, &qb, &honest, 2).expect("ours");
    assert_eq!(ev.updates.len(), 1);
    assert!(t.wants(&b, "n1"));
    assert_eq!(t.cached(), 1);
}

#[test]
fn xep0115_5_4_error_result_and_timeout_ask_the_next_waiter() {
    let mut t = CapsTable::new(CapsLimits::default());
    let (q, ver) = client("A", &["n1"]);
    let (a, b, c) = (jid("a@x/r"), jid("b@x/r"), jid("c@x/r"));
    let qa = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
    t.on_presence(&b, &presence(&ver), true, 0);
    t.on_presence(&c, &presence(&ver), true, 0);
    let err = Element::new("iq", NS_CLIENT).with_attr("type", "error");
    let ev = t.on_disco_result(&a, &qa.id, &err, 1).expect("ours");
    assert!(ev.updates.is_empty());
    let qb = ev.queries[0].clone();
    assert_eq!(qb.to, b);
    // b never answers.
    assert!(t.expire(QUERY_TIMEOUT_MS).queries.is_empty());
    let ev = t.expire(1 + QUERY_TIMEOUT_MS);
    let qc = ev.queries[0].clone();
    assert_eq!(qc.to, c);
    // A late answer to the expired query is no longer ours.
    assert!(answer(&mut t, &b, &qb, &q, 2).is_none());
    let ev = answer(&mut t, &c, &qc, &q, 3).expect("ours");
    // c was the only waiter left (a failed, b timed out and was dropped).
    assert_eq!(ev.updates.len(), 1);
    assert!(t.wants(&c, "n1") && !t.wants(&b, "n1") && !t.wants(&a, "n1"));
    // b timed out, so its next presence (same caps) is retried: the ver is cached now.
    let ev = t.on_presence(&b, &presence(&ver), true, 5);
    assert!(ev.queries.is_empty() && t.wants(&b, "n1"));
    assert_eq!(names(&ev.updates[0].added), ["n1"]);
    // a answered with an error: the same caps again sends no new query (it would not
    // help), but it is still not interested.
    let ev = t.on_presence(&a, &presence(&ver), true, 6);
    assert_eq!(ev, CapsEvents::default());
    assert!(!t.wants(&a, "n1"));
}

#[test]
fn xep0115_5_4_3_unsupported_hash_applies_to_the_resource_only() {
    let mut t = CapsTable::new(CapsLimits::default());
    let (q, _) = client("A", &["n1"]);
    let p = Element::new("presence", NS_CLIENT).with_child(
        Element::new("c", NS_CAPS)
            .with_attr("hash", "sha-256")
            .with_attr("node", "http://client")
            .with_attr("ver", "whatever"),
    );
    let (a, b) = (jid("a@x/r"), jid("b@x/r"));
    let qa = t.on_presence(&a, &p, true, 0).queries[0].clone();
    // Not cacheable, so not shared: b is asked too.
    let qb = t.on_presence(&b, &p, true, 0).queries[0].clone();
    assert_ne!(qa.id, qb.id);
    answer(&mut t, &a, &qa, &q, 1);
    assert!(t.wants(&a, "n1") && !t.wants(&b, "n1"));
    assert_eq!(t.cached(), 0);
}

#[test]
fn legacy_caps_are_ignored() {
    let mut t = CapsTable::new(CapsLimits::default());
    let p = el(&format!(
        "<presence><c xmlns='{NS_CAPS}' node='http://x' ver='1.0'/></presence>"
    ));
    let ev = t.on_presence(&jid("a@x/r"), &p, true, 0);
    assert_eq!(ev, CapsEvents::default());
    assert_eq!(t.pending(), 0);
}

#[test]
fn bounds_cache_lru_pending_and_jids() {
    let limits = CapsLimits {
        cache_entries: 2,
        max_jids: 3,
        max_pending: 2,
        ..CapsLimits::default()
    };
    let mut t = CapsTable::new(limits);
    let clients: Vec<(Element, String)> = (0..3)
        .map(|i| client(&format!("C{i}"), &[&format!("node{i}")]))
        .collect();
    let learn = |t: &mut CapsTable, who: &Jid, i: usize, now: u64| {
        let ev = t.on_presence(who, &presence(&clients[i].1), true, now);
        if let Some(q) = ev.queries.first() {
            t.on_disco_result(who, &q.id, &result_from(q, &clients[i].0), now);
        }
    };
    let (a, b, c, d) = (jid("a@x/r"), jid("b@x/r"), jid("c@x/r"), jid("d@x/r"));
    learn(&mut t, &a, 0, 0);
    learn(&mut t, &b, 1, 1);
    // Touch ver 0 so ver 1 is the least recently used.
    t.remove(&a);
    learn(&mut t, &a, 0, 2);
    learn(&mut t, &c, 2, 3);
    assert_eq!(t.cached(), 2);
    // ver 1 was evicted, bob keeps his interests (shared Rc), ver 0 is still cached.
    assert!(t.wants(&b, "node1"));
    t.remove(&b);
    let ev = t.on_presence(&b, &presence(&clients[1].1), true, 4);
    assert_eq!(ev.queries.len(), 1, "ver 1 evicted: asked again");
    t.remove(&b);
    let ev = t.on_presence(&b, &presence(&clients[0].1), true, 5);
    assert!(ev.queries.is_empty(), "ver 0 still cached");
    // max_jids = 3: a, b, c tracked; d is refused.
    let ev = t.on_presence(&d, &presence(&clients[0].1), true, 6);
    assert!(ev.overloaded && !t.wants(&d, "node0"));
    // max_pending = 2.
    let mut t = CapsTable::new(limits);
    for (i, who) in [&a, &b].into_iter().enumerate() {
        assert_eq!(
            t.on_presence(who, &presence(&clients[i].1), true, 0)
                .queries
                .len(),
            1
        );
    }
    let ev = t.on_presence(&c, &presence(&clients[2].1), true, 0);
    assert!(ev.overloaded && ev.queries.is_empty());
    // Once a query finishes, c's next presence (same caps) is asked.
    let qa = t.on_presence(&a, &presence(&clients[0].1), true, 0);
    assert!(qa.queries.is_empty(), "a is waiting already");
    t.remove(&a);
    assert_eq!(
        t.pending(),
        2,
        "an orphan query stays until answered or expired"
    );
    t.expire(QUERY_TIMEOUT_MS);
    assert_eq!(t.pending(), 0);
    let ev = t.on_presence(&c, &presence(&clients[2].1), true, QUERY_TIMEOUT_MS);
    assert_eq!(ev.queries.len(), 1);
}

#[test]
fn interned_names_are_shared_and_pruned() {
    let mut t = CapsTable::new(CapsLimits {
        cache_entries: 1,
        ..CapsLimits::default()
    });
    let (q0, v0) = client("C0", &["shared", "only0"]);
    let (q1, v1) = client("C1", &["shared", "only1"]);
    let (a, b) = (jid("a@x/r"), jid("b@x/r"));
    let qa = t.on_presence(&a, &presence(&v0), true, 0).queries[0].clone();
    answer(&mut t, &a, &qa, &q0, 0);
    let qb = t.on_presence(&b, &presence(&v1), true, 0).queries[0].clone();
    answer(&mut t, &b, &qb, &q1, 0);
    assert_eq!(t.names.len(), 3);
    assert!(
        Rc::ptr_eq(&t.interests(&a)[1], &t.interests(&b)[1]),
        "one `shared`"
    );
    // ver 0 was evicted; once alice leaves, `only0` has no holder left.
    t.remove(&a);
    assert_eq!(t.names.len(), 2);
    assert!(!t.names.contains("only0"));
}

/// 256 client versions with 12 interests each (`unique` of them unique to the version),
/// one resource each: the heap estimate in bytes.
fn figure(unique: usize) -> usize {
    let mut t = CapsTable::new(CapsLimits::default());
    for i in 0..256 {
        let own = (0..unique).map(|k| format!("urn:example:own:{i}:{k}"));
        let common = (unique..12).map(|k| format!("urn:xmpp:common:{k}"));
        let all: Vec<String> = own.chain(common).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (q, ver) = client(&format!("C{i}"), &all);
        let who = jid(&format!("u{i}@example.org/res"));
        let qy = t.on_presence(&who, &presence(&ver), true, 0).queries[0].clone();
        answer(&mut t, &who, &qy, &q, 0);
    }
    assert_eq!(t.cached(), 256);
    assert_eq!(t.names.len(), 12 + 256 * unique - unique);
    t.heap_estimate()
}

#[test]
fn memory_figure() {
    let shared = figure(0);
    let half = figure(6);
    println!(
        "caps table, 256 vers x 12 interests + 256 resources: {} KiB with shared node \
         names, {} KiB with 6 unique names per ver",
        shared / 1024,
        half / 1024
    );
    assert!(
        half > shared + 256 * 6 * 20,
        "unique names cost their bytes"
    );
}
