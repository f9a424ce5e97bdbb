//! The pub-sub engine fed a sequence of well-formed requests from several accounts,
//! generated from the input bytes: create (with and without a configure form), configure,
//! publish (with publish-options), retract, subscribe/unsubscribe, items with RSM, disco
//! items/info with RSM, affiliations, subscriptions, delete, purge; plus clock ticks (item
//! expiry) and engine reloads from the store (a daemon restart). Numbers are drawn from
//! edge values (0, 1, -1, u32/u64/i64 edges, u64::MAX + 1, huge and empty strings).
//!
//! Each iteration gets a fresh in-memory store (`Store::open_in_memory`), so that a crash
//! reproduces from its input alone.
#![no_main]


use kinglet::config::Config;
use kinglet::jid::Jid;
use kinglet::pubsub::{Directory, Engine};
use kinglet::store::Store;
use kinglet::xml::Element;
use libfuzzer_sys::fuzz_target;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const RSM: &str = "http://jabber.org/protocol/rsm";
const ACCOUNTS: [&str; 4] = [
    "alice@localhost/a",
    "bob@localhost/b",
    "carol@localhost/c",
    "eve@elsewhere/e",
];
const NODES: [&str; 4] = ["n", "princely", "coll", "x/y"];
const ITEMS: [&str; 4] = ["i1", "i2", "current", ""];
const NUMBERS: [&str; 20] = [
    "0",
    "1",
    "2",
    "-1",
    "",
    "max",
    "7",
    "255",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    " 3 ",
    "+5",
    "1e3",
    "0x10",
];
const FIELDS: [&str; 12] = [
    "pubsub#max_items",
    "pubsub#item_expire",
    "pubsub#max_payload_size",
    "pubsub#children_max",
    "pubsub#persist_items",
    "pubsub#access_model",
    "pubsub#publish_model",
    "pubsub#node_type",
    "pubsub#collection",
    "pubsub#send_last_published_item",
    "pubsub#notify_retract",
    "pubsub#publish_node_full",
];
const WORDS: [&str; 12] = [
    "open",
    "presence",
    "roster",
    "whitelist",
    "authorize",
    "publishers",
    "subscribers",
    "collection",
    "leaf",
    "on_sub_and_presence",
    "true",
    "coll",
];

/// Byte reader: every draw succeeds (0 once the input is exhausted).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.byte()) % from.len()]
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    /// A number-ish string: an edge value, a huge string, or a small count.
    fn number(&mut self) -> String {
        match self.byte() % 8 {
            0 => "9".repeat(usize::from(self.byte()) * 8),
            1 => self.byte().to_string(),
            _ => self.pick(&NUMBERS).to_owned(),
        }
    }
}

/// Everyone is online, alice has bob in her roster (group "g"), nobody wants +notify.
struct Dir;

impl Directory for Dir {
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)> {
        (owner.as_str() == "alice@localhost" && contact.bare().as_str() == "bob@localhost")
            .then(|| (true, vec!["g".to_owned()]))
    }
    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        ACCOUNTS
            .iter()
            .filter_map(|a| Jid::parse(a).ok())
            .filter(|j| j.bare().as_str() == bare.as_str())
            .map(|j| (j, "online".to_owned()))
            .collect()
    }
}

fn form(b: &mut Bytes, form_type: &str) -> String {
    let mut s = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    );
    for _ in 0..b.byte() % 4 {
        let var = b.pick(&FIELDS);
        let value = if b.byte() % 2 == 0 {
            b.number()
        } else {
            b.pick(&WORDS).to_owned()
        };
        s.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    s.push_str("</x>");
    s
}

fn rsm(b: &mut Bytes) -> String {
    let flags = b.byte();
    if flags & 1 == 0 {
        return String::new();
    }
    let mut s = format!("<set xmlns='{RSM}'>");
    if flags & 2 != 0 {
        s.push_str(&format!("<max>{}</max>", b.number()));
    }
    if flags & 4 != 0 {
        s.push_str(&format!("<index>{}</index>", b.number()));
    }
    if flags & 8 != 0 {
        let v = if flags & 64 != 0 { b.pick(&ITEMS).to_owned() } else { b.number() };
        s.push_str(&format!("<after>{v}</after>"));
    }
    if flags & 16 != 0 {
        let v = if flags & 64 != 0 { b.pick(&ITEMS).to_owned() } else { b.number() };
        s.push_str(&format!("<before>{v}</before>"));
    }
    if flags & 32 != 0 {
        s.push_str("<before/>");
    }
    s.push_str("</set>");
    s
}

/// One request: (type, child of the iq).
fn request(b: &mut Bytes) -> (&'static str, String) {
    let node = b.pick(&NODES);
    let item = b.pick(&ITEMS);
    match b.byte() % 16 {
        0 => ("set", format!("<pubsub xmlns='{PS}'><create node='{node}'/></pubsub>")),
        1 => {
            let f = form(b, "http://jabber.org/protocol/pubsub#node_config");
            ("set", format!("<pubsub xmlns='{PS}'><create node='{node}'/><configure>{f}</configure></pubsub>"))
        }
        2 => {
            let f = form(b, "http://jabber.org/protocol/pubsub#node_config");
            ("set", format!("<pubsub xmlns='{OWNER}'><configure node='{node}'>{f}</configure></pubsub>"))
        }
        3 | 4 => {
            let size = usize::from(b.byte()) * usize::from(b.byte() % 8);
            let payload = format!("<t xmlns='urn:t'>{}</t>", "p".repeat(size));
            let id = if item.is_empty() { String::new() } else { format!(" id='{item}'") };
            let opts = if b.byte() % 4 == 0 {
                format!("<publish-options>{}</publish-options>", form(b, "http://jabber.org/protocol/pubsub#publish-options"))
            } else {
                String::new()
            };
            ("set", format!("<pubsub xmlns='{PS}'><publish node='{node}'><item{id}>{payload}</item></publish>{opts}</pubsub>"))
        }
        5 => {
            let notify = if b.byte() % 2 == 0 { " notify='true'" } else { "" };
            ("set", format!("<pubsub xmlns='{PS}'><retract node='{node}'{notify}><item id='{item}'/></retract></pubsub>"))
        }
        6 => {
            let jid = b.pick(&ACCOUNTS);
            ("set", format!("<pubsub xmlns='{PS}'><subscribe node='{node}' jid='{jid}'/></pubsub>"))
        }
        7 => {
            let jid = b.pick(&ACCOUNTS);
            ("set", format!("<pubsub xmlns='{PS}'><unsubscribe node='{node}' jid='{jid}'/></pubsub>"))
        }
        8 | 9 => {
            let max = if b.byte() % 3 == 0 { format!(" max_items='{}'", b.number()) } else { String::new() };
            let r = rsm(b);
            ("get", format!("<pubsub xmlns='{PS}'><items node='{node}'{max}/>{r}</pubsub>"))
        }
        10 => {
            let r = rsm(b);
            let at = if b.byte() % 2 == 0 { format!(" node='{node}'") } else { String::new() };
            ("get", format!("<query xmlns='http://jabber.org/protocol/disco#items'{at}>{r}</query>"))
        }
        11 => {
            let at = if b.byte() % 2 == 0 { format!(" node='{node}'") } else { String::new() };
            ("get", format!("<query xmlns='http://jabber.org/protocol/disco#info'{at}/>"))
        }
        12 => ("set", format!("<pubsub xmlns='{OWNER}'><delete node='{node}'/></pubsub>")),
        13 => ("set", format!("<pubsub xmlns='{OWNER}'><purge node='{node}'/></pubsub>")),
        14 => {
            let jid = b.pick(&ACCOUNTS);
            let aff = b.pick(&["owner", "publisher", "member", "outcast", "none", "publish-only"]);
            ("set", format!("<pubsub xmlns='{OWNER}'><affiliations node='{node}'><affiliation jid='{jid}' affiliation='{aff}'/></affiliations></pubsub>"))
        }
        _ => match b.byte() % 4 {
            0 => ("get", format!("<pubsub xmlns='{PS}'><subscriptions/></pubsub>")),
            1 => ("get", format!("<pubsub xmlns='{PS}'><affiliations/></pubsub>")),
            2 => ("get", format!("<pubsub xmlns='{OWNER}'><configure node='{node}'/></pubsub>")),
            _ => ("get", format!("<pubsub xmlns='{OWNER}'><subscriptions node='{node}'/></pubsub>")),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let config = Config::default();
    let store = Store::open_in_memory().expect("store");
    let mut engine = Engine::load(&config, &store).expect("engine");
    let mut now: u64 = 1_700_000_000_000;
    let mut n = 0u32;
    while !b.done() && n < 64 {
        n += 1;
        now += u64::from(b.byte()) * 1000;
        match b.byte() % 32 {
            0 => {
                // Clock ticks: expiry of items with item_expire.
                now = now.saturating_add(u64::from(b.byte()) * 3_600_000);
                let _ = engine.on_tick(&Dir, &store, now);
                let _ = engine.next_deadline();
                continue;
            }
            1 => {
                // Daemon restart: everything persisted must load again.
                engine = Engine::load(&config, &store).expect("reload of what the engine stored");
                continue;
            }
            _ => {}
        }
        let from = b.pick(&ACCOUNTS);
        let (ty, body) = request(&mut b);
        let xml = format!("<iq type='{ty}' id='q{n}' from='{from}' to='pubsub.localhost'>{body}</iq>");
        let iq = Element::parse(&xml).expect("generated stanza parses");
        let from = Jid::parse(from).expect("jid");
        for d in engine.handle_iq(&Dir, &store, &from, &iq, now) {
            let text = d.stanza.to_text();
            if let Err(e) = Element::parse(&text) {
                panic!("engine output does not parse: {e}: {text}");
            }
        }
    }
});
