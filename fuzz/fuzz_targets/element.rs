//! Arbitrary text parsed by `Element::parse` (what the framer uses for every complete
//! top-level element). Round trip: whatever parses serialises (as a stanza of a
//! `jabber:client` stream) to text that parses again to an equal element, and serialising
//! that gives the same text.
#![no_main]

use kinglet::xml::{Element, Node};
use libfuzzer_sys::fuzz_target;

/// Adjacent text nodes (text next to CDATA or a character reference) become one on the
/// wire; empty text nodes vanish.
fn normalise(e: &Element) -> Element {
    let mut out = Element {
        name: e.name.clone(),
        ns: e.ns.clone(),
        attrs: e.attrs.clone(),
        children: Vec::new(),
    };
    for c in &e.children {
        match c {
            Node::Element(c) => out.children.push(Node::Element(normalise(c))),
            Node::Text(t) if t.is_empty() => {}
            Node::Text(t) => {
                if let Some(Node::Text(prev)) = out.children.last_mut() {
                    prev.push_str(t);
                } else {
                    out.children.push(Node::Text(t.clone()));
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = Element::parse(text) else {
        return;
    };
    let _ = el.heap_size();
    let _ = el.text();
    let wire = el.to_string_in_stream();
    let again = match Element::parse(&wire) {
        Ok(e) => e,
        Err(e) => panic!("serialised element does not parse: {e}\ninput: {text:?}\nwire: {wire:?}"),
    };
    assert_eq!(
        normalise(&el),
        normalise(&again),
        "round trip changed the element\ninput: {text:?}\nwire: {wire:?}"
    );
    assert_eq!(wire, again.to_string_in_stream(), "serialisation is not stable");
});
