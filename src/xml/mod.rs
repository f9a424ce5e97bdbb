//! The sans-IO XML layer of the XMPP stream: it owns framing, parsing and serialisation.
//!
//! * [`framer`] cuts the raw byte stream of one connection into the XML declaration (checked,
//!   not emitted), the stream header, complete top-level elements and the stream close. It
//!   enforces RFC 6120 §11.1 (no comments, PIs, DTDs or undeclared entities), UTF-8 and
//!   XML 1.0 character validity, and the size/depth/attribute limits *before* anything is
//!   parsed. It never touches a socket: the caller pushes bytes and pulls frames.
//! * [`element`] is the small owned tree ([`Element`], [`Node`]) each complete top-level element
//!   is parsed into (with quick-xml, on a complete slice only), and its namespace-correct
//!   serialiser.
//! * [`writer`] is the one streaming [`Writer`] for replies and notifications built without a
//!   tree: it always escapes, and takes already-serialised XML only as [`Raw`].
//!
//! See `docs/style.md` §3.1 for why quick-xml is never fed from a socket directly.

pub mod element;
pub mod framer;
pub mod writer;

#[cfg(test)]
mod tests;

pub use element::{Element, Node};
pub use framer::{Frame, Framer, StreamHeader, XmlError, XmlLimits};
pub use writer::{Raw, STREAM_CLOSE, Writer, build, component_stream_header, stream_header};

/// Namespace of the stream wrapper (`<stream:stream>`, `<stream:features>`, `<stream:error>`).
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Default content namespace of a client-to-server stream.
pub const NS_CLIENT: &str = "jabber:client";
/// The default namespace of a XEP-0114 external component stream.
pub const NS_COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// Namespace permanently bound to the `xml` prefix (XML Namespaces 1.0 §3).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Namespace permanently bound to the `xmlns` prefix; it can never be declared.
pub const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// Parses `text` (one or more elements, maybe with text around them) inside a wrapper
/// element that undeclares the default namespace, and returns the wrapper: an element in
/// `text` without `xmlns` gets no namespace instead of the stream's.
pub fn parse_unqualified(text: &str) -> Result<Element, XmlError> {
    let mut wrapped = String::with_capacity(text.len() + 16);
    wrapped.push_str("<w xmlns=''>");
    wrapped.push_str(text);
    wrapped.push_str("</w>");
    Element::parse(&wrapped)
}

/// Append `s` to `out` escaped for character data.
///
/// Escapes `&`, `<` and `>`; additionally writes `\r` as `&#13;` so that a carriage return
/// survives the line-end normalisation of the receiving parser.
pub fn escape_text(s: &str, out: &mut String) {
    escape_into(s, out, false);
}

/// Append `s` to `out` escaped for a quoted attribute value (either quote kind).
///
/// Escapes `&`, `<`, `>`, `"` and `'`; additionally writes `\t`, `\n` and `\r` as character
/// references so that they survive attribute-value normalisation on the receiving side.
pub fn escape_attr(s: &str, out: &mut String) {
    escape_into(s, out, true);
}

/// Shared escaping loop: copies runs of plain bytes, replaces the special ASCII bytes.
fn escape_into(s: &str, out: &mut String, attr: bool) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'"' if attr => "&quot;",
            b'\'' if attr => "&apos;",
            b'\n' if attr => "&#10;",
            b'\t' if attr => "&#9;",
            _ => continue,
        };
        // All replaced bytes are ASCII, so `last..i` lies on char boundaries.
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// Whether `c` is a character allowed by XML 1.0 §2.2 (`Char` production).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}
