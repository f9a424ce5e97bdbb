//! Small serialisation helpers: payloads, `<item/>` elements,
//! notification bodies and boolean attributes.

use super::*;

/// Serialises a payload so that it carries its own namespace declaration wherever it is
/// embedded (the sentinel parent namespace forces `xmlns` on the top element).
pub(super) fn serialise_payload(p: &Element) -> String {
    let mut s = String::with_capacity(128);
    p.write_to(&mut s, "\u{1}");
    s
}

/// `<item id='…' publisher='…'>payload</item>` (or without payload; without the
/// publisher when `itemreply` is `none`).
pub(super) fn item_xml(it: &CachedItem, with_payload: bool, with_publisher: bool) -> String {
    let mut s = String::with_capacity(48 + it.id.len() + it.payload.len());
    write_item(&mut Writer::new(&mut s), it, with_payload, with_publisher);
    s
}

/// [`item_xml`] into a writer. The payload was serialised once, at publish time.
pub(super) fn write_item(
    w: &mut Writer,
    it: &CachedItem,
    with_payload: bool,
    with_publisher: bool,
) {
    w.start("item").attr("id", &it.id);
    if with_publisher {
        w.attr("publisher", &it.publisher);
    }
    if with_payload && !it.payload.is_empty() {
        w.raw(Raw(&it.payload));
    }
    w.end();
}

/// The `<body/>` text of an item notification (`pubsub#include_body`): node, item id,
/// publisher and the payload's text content, cut at 512 bytes.
pub(super) fn body_text(node: &str, it: &CachedItem) -> String {
    let mut s = format!("{node}: item {} from {}", it.id, it.publisher);
    let mut txt = String::new();
    if let Ok(e) = Element::parse(&it.payload) {
        deep_text(&e, &mut txt);
    }
    let txt = txt.split_whitespace().collect::<Vec<_>>().join(" ");
    if !txt.is_empty() {
        s.push_str(": ");
        s.push_str(&txt);
    }
    if s.len() > 512 {
        let mut cut = 509;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The text of `e` and its descendants, at most about 1 KiB.
fn deep_text(e: &Element, out: &mut String) {
    if out.len() > 1024 {
        return;
    }
    out.push_str(&e.text());
    out.push(' ');
    for c in e.elements() {
        deep_text(c, out);
    }
}

pub(super) fn flag(e: &Element, name: &str) -> Option<bool> {
    e.attr(name).map(|v| v == "1" || v == "true")
}
