//! The one writer for outgoing XML that is not an [`Element`](super::Element) tree: a small
//! streaming writer into a caller's `String`.
//!
//! * Attribute values and text are always escaped ([`escape_attr`], [`escape_text`]); both
//!   take `&str` or, through the `_fmt` variants, any `Display` (escaped as it is formatted,
//!   with no temporary `String`).
//! * Attribute values are quoted with `'` (the stanzas Kinglet has always sent; the
//!   [`Element`](super::Element) serialiser uses `"`).
//! * Already-serialised XML goes in only as [`Raw`]: the shared payload of a notification
//!   (serialised once, shared between outboxes) and fragments this writer produced.
//! * No allocation beyond the output: the open element names are kept in a fixed array
//!   ([`MAX_DEPTH`] deep, far more than any stanza Kinglet writes).
//!
//! ```
//! # use kinglet::xml::{Raw, Writer};
//! let mut s = String::new();
//! let mut w = Writer::new(&mut s);
//! w.start("iq").attr("type", "result").attr("id", "a<b").attr_opt("to", None);
//! w.start("query").ns("urn:x").text_elem("n", "1 & 2").end();
//! w.raw(Raw("<p/>")).end();
//! assert_eq!(s, "<iq type='result' id='a&lt;b'><query xmlns='urn:x'><n>1 &amp; 2</n></query><p/></iq>");
//! ```

use std::fmt::{self, Display, Write as _};

use super::{escape_attr, escape_text};

/// Already-serialised, well-formed XML inserted as is by [`Writer::raw`]. Only for the
/// shared serialised payload (item payloads serialised once and shared between outboxes)
/// and fragments produced by a [`Writer`]; never for text from a peer.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a>(pub &'a str);

/// How many elements a [`Writer`] can hold open at once.
pub const MAX_DEPTH: usize = 16;

/// A streaming XML writer appending to a `String`; see the module docs.
pub struct Writer<'o, 'n> {
    out: &'o mut String,
    /// Names of the open elements, innermost last.
    stack: [&'n str; MAX_DEPTH],
    depth: usize,
    /// Whether the innermost start tag still lacks its `>` (attributes may follow).
    in_tag: bool,
}

/// A `fmt::Write` that escapes what is written into it.
struct Escaper<'a> {
    out: &'a mut String,
    attr: bool,
}

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.attr {
            escape_attr(s, self.out);
        } else {
            escape_text(s, self.out);
        }
        Ok(())
    }
}

impl<'o, 'n> Writer<'o, 'n> {
    /// A writer appending to `out`.
    pub fn new(out: &'o mut String) -> Writer<'o, 'n> {
        Writer {
            out,
            stack: [""; MAX_DEPTH],
            depth: 0,
            in_tag: false,
        }
    }

    /// Finish a pending start tag with `>`.
    fn close_tag(&mut self) {
        if self.in_tag {
            self.out.push('>');
            self.in_tag = false;
        }
    }

    /// Open element `name` (attributes may follow until content is written).
    ///
    /// # Panics
    /// If more than [`MAX_DEPTH`] elements are open: a bug in the caller's fixed structure.
    pub fn start(&mut self, name: &'n str) -> &mut Self {
        self.close_tag();
        assert!(
            self.depth < MAX_DEPTH,
            "xml::Writer: nesting deeper than {MAX_DEPTH}"
        );
        self.out.push('<');
        self.out.push_str(name);
        self.stack[self.depth] = name;
        self.depth += 1;
        self.in_tag = true;
        self
    }

    /// Attribute `name='value'` on the element just opened (value escaped).
    pub fn attr(&mut self, name: &str, value: &str) -> &mut Self {
        debug_assert!(self.in_tag, "xml::Writer: attribute {name} after content");
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("='");
        escape_attr(value, self.out);
        self.out.push('\'');
        self
    }

    /// Attribute `name='value'` whose value is already escaped for an attribute (for a
    /// value written into many stanzas, escaped once: the pub-sub service's JID).
    pub fn attr_raw(&mut self, name: &str, value: Raw<'_>) -> &mut Self {
        debug_assert!(self.in_tag, "xml::Writer: attribute {name} after content");
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("='");
        self.out.push_str(value.0);
        self.out.push('\'');
        self
    }

    /// Attribute `name='value'` with any `Display` value (escaped while formatted).
    pub fn attr_fmt(&mut self, name: &str, value: impl Display) -> &mut Self {
        debug_assert!(self.in_tag, "xml::Writer: attribute {name} after content");
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("='");
        let _ = write!(
            Escaper {
                out: self.out,
                attr: true
            },
            "{value}"
        );
        self.out.push('\'');
        self
    }

    /// Attribute `name` if `value` is `Some`.
    pub fn attr_opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.attr(name, v);
        }
        self
    }

    /// The namespace declaration `xmlns='uri'` of the element just opened.
    pub fn ns(&mut self, uri: &str) -> &mut Self {
        self.attr("xmlns", uri)
    }

    /// Escaped character data.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.close_tag();
        escape_text(text, self.out);
        self
    }

    /// Escaped character data from any `Display`.
    pub fn text_fmt(&mut self, text: impl Display) -> &mut Self {
        self.close_tag();
        let _ = write!(
            Escaper {
                out: self.out,
                attr: false
            },
            "{text}"
        );
        self
    }

    /// `<name>text</name>` (escaped).
    pub fn text_elem(&mut self, name: &'n str, text: &str) -> &mut Self {
        self.start(name).text(text).end()
    }

    /// Already-serialised XML, inserted as is.
    pub fn raw(&mut self, xml: Raw<'_>) -> &mut Self {
        self.close_tag();
        self.out.push_str(xml.0);
        self
    }

    /// An [`Element`](super::Element) tree, serialised (and escaped) by its own writer;
    /// `parent_ns` is the namespace in scope, as for `Element::write_to`.
    pub fn element(&mut self, e: &super::Element, parent_ns: &str) -> &mut Self {
        self.close_tag();
        e.write_to(self.out, parent_ns);
        self
    }

    /// Close the innermost open element: `/>` if it has no content, else `</name>`.
    ///
    /// # Panics
    /// If no element is open.
    pub fn end(&mut self) -> &mut Self {
        assert!(self.depth > 0, "xml::Writer: end() without an open element");
        self.depth -= 1;
        if self.in_tag {
            self.out.push_str("/>");
            self.in_tag = false;
        } else {
            self.out.push_str("</");
            self.out.push_str(self.stack[self.depth]);
            self.out.push('>');
        }
        self
    }

    /// Close every open element.
    pub fn end_all(&mut self) -> &mut Self {
        while self.depth > 0 {
            self.end();
        }
        self
    }

    /// Leave the open elements open (their start tags finished with `>`): the first part of
    /// a stanza whose end is written separately, e.g. around a shared payload.
    pub fn leave_open(&mut self) {
        self.close_tag();
        self.depth = 0;
    }

    /// `</name>` for an element opened by another writer (the end of a stanza whose
    /// start was written with [`Writer::leave_open`]).
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.close_tag();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }
}

/// The end of a stream: `</stream:stream>`.
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// Starts a client stream's header (RFC 6120 §4.2): appends the XML declaration and
/// `<stream:stream xmlns='jabber:client' xmlns:stream='…' version='1.0'`, and returns the
/// writer for the remaining attributes; finish with [`Writer::leave_open`].
pub fn stream_header(out: &mut String) -> Writer<'_, 'static> {
    out.push_str("<?xml version='1.0'?>");
    let mut w = Writer::new(out);
    w.start("stream:stream")
        .ns(super::NS_CLIENT)
        .attr("xmlns:stream", super::NS_STREAM)
        .attr("version", "1.0");
    w
}

/// Starts a XEP-0114 component stream header (`jabber:component:accept`, `to` the
/// component's JID) after the XML declaration; the caller leaves it open
/// ([`Writer::leave_open`]).
pub fn component_stream_header<'o>(out: &'o mut String, to: &str) -> Writer<'o, 'static> {
    out.push_str("<?xml version='1.0'?>");
    let mut w = Writer::new(out);
    w.start("stream:stream")
        .ns(super::NS_COMPONENT_ACCEPT)
        .attr("xmlns:stream", super::NS_STREAM)
        .attr("to", to);
    w
}

/// A fresh `String` holding what `f` writes: for replies and fragments built in one go.
pub fn build<'n>(f: impl for<'o> FnOnce(&mut Writer<'o, 'n>)) -> String {
    let mut s = String::with_capacity(128);
    f(&mut Writer::new(&mut s));
    s
}

/// The end of a pub-sub notification after its shared `<event/>` content (a constant, so
/// that the per-recipient tail allocates nothing).
pub const EVENT_MESSAGE_CLOSE: &str = "</event></message>";
