//! A small owned XML tree: what one complete top-level element of the stream is parsed into,
//! and its namespace-correct serialiser.
//!
//! # Representation
//!
//! * `name` is the local name, `ns` the resolved namespace URI (`""` = no namespace). Prefixes
//!   are not kept: the serialiser always writes unprefixed names and emits `xmlns="…"` where the
//!   namespace changes, so a parse → write → parse round trip yields an equal tree.
//! * Namespace declarations (`xmlns`, `xmlns:p`) are consumed by the parser and never stored
//!   in `attrs`.
//! * Attribute names in `attrs` take one of three forms:
//!   - `local` for an unprefixed attribute (which, per XML Namespaces, has no namespace);
//!   - `xml:local` for the predefined `xml` prefix (e.g. `xml:lang`);
//!   - `{uri}local` (Clark notation) for any other prefixed attribute. On output the serialiser
//!     declares a generated prefix (`ns0`, `ns1`, …) on the element for each such URI.
//!
//!   Attribute names set by code must use one of these forms too.
//! * Adjacent text is merged into one [`Node::Text`] and empty text is never stored, so CDATA
//!   sections and character references disappear into plain text.
//!
//! # Parsing
//!
//! The crate-internal `parse_element` runs quick-xml over one *complete* element (the framer
//! guarantees completeness and the RFC 6120 §11.1 restrictions) and resolves namespaces itself,
//! starting from the bindings of the stream header.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::framer::{XmlError, XmlLimits, check_chars};
use super::{NS_CLIENT, NS_STREAM, NS_XML, NS_XMLNS, escape_attr, escape_text, is_xml_char};

/// An XML element with its resolved namespace, attributes and children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Local name (no prefix).
    pub name: String,
    /// Resolved namespace URI; `""` means no namespace.
    pub ns: String,
    /// Attributes in document order; see the module docs for the name forms.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub children: Vec<Node>,
}

/// One child of an [`Element`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entities decoded, CDATA unwrapped, line ends normalised).
    Text(String),
}

impl Element {
    /// A new empty element `name` in namespace `ns`.
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: set attribute `name` (replacing an existing one) and return the element.
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element and return the element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.push_child(child);
        self
    }

    /// Builder: append text (merged with a preceding text node) and return the element.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.push_text(text);
        self
    }

    /// Value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set attribute `name`: replace its value if present, else append it.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    /// Remove attribute `name`, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let idx = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(idx).1)
    }

    /// Append a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Append text; merged into the last child if that is text. Empty text is ignored.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(prev)) => prev.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// First child element `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// First child element `name` in namespace `ns`, mutably.
    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// The element children, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The direct child elements named `name` in namespace `ns`, in document order.
    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(name, ns))
    }

    /// Concatenation of the direct text children.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serialize into `out`; emits `xmlns="…"` only where the element's ns differs from
    /// `parent_ns` (the default namespace in scope where the element is written).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        self.write_impl(out, parent_ns, None);
    }

    /// Serialize as a top-level stanza inside a `jabber:client` stream whose header binds the
    /// `stream` prefix (what every XMPP stream header does). Elements in [`NS_STREAM`] are
    /// written as `<stream:name>`; all others as with `write_to(out, NS_CLIENT)`.
    pub fn to_string_in_stream(&self) -> String {
        let mut out = String::with_capacity(64);
        if self.ns == NS_STREAM {
            self.write_impl(&mut out, NS_CLIENT, Some("stream"));
        } else {
            self.write_impl(&mut out, NS_CLIENT, None);
        }
        out
    }

    /// Approximate heap bytes owned by this tree (capacities of all strings and vectors).
    pub fn heap_size(&self) -> usize {
        let mut n = self.name.capacity()
            + self.ns.capacity()
            + self.attrs.capacity() * std::mem::size_of::<(String, String)>()
            + self.children.capacity() * std::mem::size_of::<Node>();
        for (k, v) in &self.attrs {
            n += k.capacity() + v.capacity();
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.heap_size(),
                Node::Text(t) => t.capacity(),
            };
        }
        n
    }

    /// Parse one standalone element (surrounding whitespace allowed) as if it were a
    /// top-level element of a `jabber:client` stream: the default namespace is
    /// [`NS_CLIENT`] and the `stream` prefix is bound to [`NS_STREAM`]. Applies the default
    /// [`XmlLimits`] depth and attribute limits and the same RFC 6120 restrictions as the
    /// framer (no comments, PIs, DTDs, undeclared entities).
    pub fn parse(xml: &str) -> Result<Element, XmlError> {
        let limits = XmlLimits::default();
        Element::parse_within(xml, limits.max_depth, limits.max_attrs)
    }

    /// [`Element::parse`] with other depth and attribute limits (`max_depth` at most
    /// [`super::framer::MAX_DEPTH_CAP`]): for text this server serialised itself under the
    /// configured limits, such as a stored offline message.
    pub fn parse_within(
        xml: &str,
        max_depth: usize,
        max_attrs: usize,
    ) -> Result<Element, XmlError> {
        check_chars(xml)?;
        let base = [
            (String::new(), NS_CLIENT.to_owned()),
            ("stream".to_owned(), NS_STREAM.to_owned()),
        ];
        let max_depth = max_depth.min(super::framer::MAX_DEPTH_CAP);
        parse_element(xml.as_bytes(), &base, max_depth, max_attrs)
    }

    /// Serialiser shared by `write_to` and `to_string_in_stream`. With `prefix`, the element
    /// name is written prefixed (the prefix must be bound to `self.ns` by the context) and
    /// the default namespace for the children stays `parent_ns`.
    fn write_impl(&self, out: &mut String, parent_ns: &str, prefix: Option<&str>) {
        // An element in the XML namespace (`<xml:x/>`) keeps its permanently bound prefix:
        // that namespace can never be the default one (`xmlns="…XML/1998/namespace"` is
        // not well-formed), so the receiver would drop the stream.
        let prefix = match prefix {
            None if self.ns == NS_XML => Some("xml"),
            p => p,
        };
        out.push('<');
        if let Some(p) = prefix {
            out.push_str(p);
            out.push(':');
        }
        out.push_str(&self.name);
        let child_ns = match prefix {
            Some(_) => parent_ns,
            None => {
                if self.ns != parent_ns {
                    out.push_str(" xmlns=\"");
                    escape_attr(&self.ns, out);
                    out.push('"');
                }
                self.ns.as_str()
            }
        };
        let mut declared: Vec<&str> = Vec::new();
        for (k, v) in &self.attrs {
            out.push(' ');
            match split_clark(k) {
                Some((uri, local)) if uri == NS_XML => {
                    out.push_str("xml:");
                    out.push_str(local);
                }
                Some(("", local)) => out.push_str(local),
                Some((uri, local)) => {
                    let idx = match declared.iter().position(|d| *d == uri) {
                        Some(i) => i,
                        None => {
                            declared.push(uri);
                            let i = declared.len() - 1;
                            push_prefix(out, "xmlns:ns", i);
                            out.push_str("=\"");
                            escape_attr(uri, out);
                            out.push_str("\" ");
                            i
                        }
                    };
                    push_prefix(out, "ns", idx);
                    out.push(':');
                    out.push_str(local);
                }
                None => out.push_str(k),
            }
            out.push_str("=\"");
            escape_attr(v, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write_impl(out, child_ns, None),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        if let Some(p) = prefix {
            out.push_str(p);
            out.push(':');
        }
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Write `head` followed by the decimal `n` (generated namespace prefixes).
fn push_prefix(out: &mut String, head: &str, n: usize) {
    use std::fmt::Write as _;
    out.push_str(head);
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
}

/// Split a Clark-notation name `{uri}local` into `(uri, local)`.
fn split_clark(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix('{')?;
    // A namespace URI may contain `}`; a local name (an XML NCName) cannot.
    let close = rest.rfind('}')?;
    Some((&rest[..close], &rest[close + 1..]))
}

/// Namespace bindings in scope while parsing one element: the stream header's bindings
/// (`base`) plus those declared inside the element (`local`, a stack).
struct Scope<'a> {
    /// Bindings inherited from the stream header; `""` is the default namespace.
    base: &'a [(String, String)],
    /// Bindings declared by open elements, innermost last.
    local: Vec<(String, String)>,
}

impl Scope<'_> {
    /// URI bound to `prefix` (`""` = default namespace), innermost binding first.
    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(NS_XML);
        }
        self.local
            .iter()
            .rev()
            .chain(self.base.iter().rev())
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }
}

/// Map any quick-xml error to `not-well-formed`.
fn nw(e: impl std::fmt::Display) -> XmlError {
    XmlError::NotWellFormed(e.to_string())
}

/// Bytes → `&str`; the framer has already validated UTF-8, this is the cheap safety net.
fn utf8(b: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(b).map_err(|_| XmlError::NotWellFormed("invalid UTF-8".to_owned()))
}

/// Parse one complete element from `bytes` (which must hold exactly one element, optionally
/// surrounded by whitespace) with `base` as the namespace bindings in scope. Enforces
/// `max_depth` (root = depth 1) and `max_attrs` (namespace declarations included).
pub(crate) fn parse_element(
    bytes: &[u8],
    base: &[(String, String)],
    max_depth: usize,
    max_attrs: usize,
) -> Result<Element, XmlError> {
    let mut reader = Reader::from_reader(bytes);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
    }
    let mut scope = Scope {
        base,
        local: Vec::new(),
    };
    // Open elements with the length of `scope.local` before each one's declarations.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        match reader.read_event().map_err(nw)? {
            Event::Start(e) => {
                let opened = open_nested(&e, &mut scope, stack.len(), max_depth, max_attrs)?;
                stack.push(opened);
            }
            Event::Empty(e) => {
                let (el, mark) = open_nested(&e, &mut scope, stack.len(), max_depth, max_attrs)?;
                scope.local.truncate(mark);
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                // quick-xml checks that the end tag matches the open start tag.
                let (el, mark) = stack
                    .pop()
                    .ok_or_else(|| XmlError::NotWellFormed("unexpected close tag".to_owned()))?;
                scope.local.truncate(mark);
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let raw: &[u8] = &t;
                match stack.last_mut() {
                    Some((parent, _)) => {
                        if contains_cdata_end(raw) {
                            return Err(XmlError::NotWellFormed(
                                "']]>' in character data".to_owned(),
                            ));
                        }
                        parent.push_text(decode(raw, false)?);
                    }
                    None => {
                        if !raw.iter().all(|b| is_ws(*b)) {
                            return Err(XmlError::NotWellFormed(
                                "text outside the element".to_owned(),
                            ));
                        }
                    }
                }
            }
            Event::CData(c) => {
                let raw = c.into_inner();
                let text = normalize_line_ends(utf8(&raw)?);
                match stack.last_mut() {
                    Some((parent, _)) => parent.push_text(text),
                    None => {
                        return Err(XmlError::NotWellFormed(
                            "CDATA outside the element".to_owned(),
                        ));
                    }
                }
            }
            Event::Comment(_) => {
                return Err(XmlError::RestrictedXml(
                    "comments are not allowed".to_owned(),
                ));
            }
            Event::PI(_) | Event::Decl(_) => {
                return Err(XmlError::RestrictedXml(
                    "processing instructions are not allowed".to_owned(),
                ));
            }
            Event::DocType(_) => {
                return Err(XmlError::RestrictedXml("DTDs are not allowed".to_owned()));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::NotWellFormed("unclosed element".to_owned()));
    }
    root.ok_or_else(|| XmlError::NotWellFormed("no element".to_owned()))
}

/// Attach a finished element to its parent, or make it the root.
fn attach(
    stack: &mut [(Element, usize)],
    root: &mut Option<Element>,
    el: Element,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some((parent, _)) => {
            parent.children.push(Node::Element(el));
            Ok(())
        }
        None if root.is_none() => {
            *root = Some(el);
            Ok(())
        }
        None => Err(XmlError::NotWellFormed(
            "more than one top-level element".to_owned(),
        )),
    }
}

/// [`open_element`] for a tag inside `depth` open elements (refused past `max_depth`), with
/// the length of `scope.local` before its declarations.
fn open_nested(
    e: &BytesStart<'_>,
    scope: &mut Scope<'_>,
    depth: usize,
    max_depth: usize,
    max_attrs: usize,
) -> Result<(Element, usize), XmlError> {
    if depth >= max_depth {
        return Err(XmlError::PolicyViolation(format!(
            "element nesting deeper than {max_depth}"
        )));
    }
    let mark = scope.local.len();
    Ok((open_element(e, scope, max_attrs)?, mark))
}

/// Build the element for a start (or empty) tag: process its namespace declarations into
/// `scope`, resolve its name and attributes.
fn open_element(
    e: &BytesStart<'_>,
    scope: &mut Scope<'_>,
    max_attrs: usize,
) -> Result<Element, XmlError> {
    let qname = utf8(e.name().into_inner())?;
    check_qname(qname)?;
    // Pass 1: count attributes, apply namespace declarations.
    let mut count = 0usize;
    for a in e.attributes() {
        let a = a.map_err(nw)?;
        count += 1;
        if count > max_attrs {
            return Err(XmlError::PolicyViolation(format!(
                "more than {max_attrs} attributes on <{qname}>"
            )));
        }
        let key = utf8(a.key.into_inner())?;
        check_qname(key)?;
        if key == "xmlns" {
            let uri = decode(&a.value, true)?;
            if uri == NS_XML || uri == NS_XMLNS {
                return Err(XmlError::NotWellFormed(format!(
                    "reserved namespace {uri} as default"
                )));
            }
            scope.local.push((String::new(), uri));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            let uri = decode(&a.value, true)?;
            if p == "xml" {
                if uri != NS_XML {
                    return Err(XmlError::NotWellFormed(
                        "prefix xml bound to a wrong namespace".to_owned(),
                    ));
                }
                continue;
            }
            if p == "xmlns" || uri.is_empty() || uri == NS_XML || uri == NS_XMLNS {
                return Err(XmlError::NotWellFormed(format!(
                    "illegal namespace declaration xmlns:{p}"
                )));
            }
            scope.local.push((p.to_owned(), uri));
        }
    }
    // Resolve the element name.
    let (prefix, local) = split_qname(qname);
    let ns = match prefix {
        None => scope.lookup("").unwrap_or(""),
        Some("xmlns") => {
            return Err(XmlError::NotWellFormed(
                "element with the xmlns prefix".to_owned(),
            ));
        }
        Some(p) => scope
            .lookup(p)
            .ok_or_else(|| XmlError::NotWellFormed(format!("unbound prefix {p}")))?,
    };
    let mut el = Element::new(local, ns);
    // Pass 2: regular attributes.
    for a in e.attributes() {
        let a = a.map_err(nw)?;
        let key = utf8(a.key.into_inner())?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let name = match split_qname(key) {
            (None, l) => l.to_owned(),
            (Some("xml"), l) => format!("xml:{l}"),
            (Some(p), l) => {
                let uri = scope
                    .lookup(p)
                    .ok_or_else(|| XmlError::NotWellFormed(format!("unbound prefix {p}")))?;
                format!("{{{uri}}}{l}")
            }
        };
        if el.attrs.iter().any(|(k, _)| *k == name) {
            return Err(XmlError::NotWellFormed(format!(
                "duplicate attribute {name}"
            )));
        }
        let value = decode(&a.value, true)?;
        el.attrs.push((name, value));
    }
    Ok(el)
}

/// Split `p:local` into `(Some(p), local)`; an unprefixed name gives `(None, name)`.
fn split_qname(q: &str) -> (Option<&str>, &str) {
    match q.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, q),
    }
}

/// Lenient XML name check: non-empty, at most one `:` with non-empty sides, no ASCII
/// punctuation other than `-._`, and no part starting with a digit, `-` or `.`.
fn check_qname(q: &str) -> Result<(), XmlError> {
    let bad = || XmlError::NotWellFormed(format!("invalid name {q:?}"));
    let (prefix, local) = split_qname(q);
    for part in prefix.into_iter().chain(std::iter::once(local)) {
        let first = part.bytes().next().ok_or_else(bad)?;
        if first.is_ascii_digit() || first == b'-' || first == b'.' {
            return Err(bad());
        }
        if !part
            .bytes()
            .all(|b| b >= 0x80 || b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// XML whitespace (`S` production).
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether raw character data contains the forbidden literal `]]>`.
fn contains_cdata_end(raw: &[u8]) -> bool {
    raw.windows(3).any(|w| w == b"]]>")
}

/// Normalise `\r\n` and lone `\r` to `\n` (XML 1.0 §2.11).
fn normalize_line_ends(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_owned();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Decode raw character data or an attribute value: line ends normalised, the five predefined
/// entities and character references expanded, and (for attributes) whitespace normalised to
/// spaces. Any other entity reference is `restricted-xml`.
pub(crate) fn decode(raw: &[u8], attr: bool) -> Result<String, XmlError> {
    let s = utf8(raw)?;
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'&' => {
                out.push_str(&s[last..i]);
                let semi = b[i + 1..]
                    .iter()
                    .position(|&c| c == b';')
                    .ok_or_else(|| XmlError::NotWellFormed("unterminated reference".to_owned()))?;
                let name = &s[i + 1..i + 1 + semi];
                out.push(resolve_reference(name)?);
                i += semi + 2;
                last = i;
            }
            b'\r' => {
                out.push_str(&s[last..i]);
                out.push(if attr { ' ' } else { '\n' });
                i += if b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                last = i;
            }
            b'\n' | b'\t' if attr => {
                out.push_str(&s[last..i]);
                out.push(' ');
                i += 1;
                last = i;
            }
            b'<' if attr => {
                return Err(XmlError::NotWellFormed("'<' in attribute value".to_owned()));
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// Expand the reference `&name;` (name without `&` and `;`).
fn resolve_reference(name: &str) -> Result<char, XmlError> {
    match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => {}
    }
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix('x') {
            Some(h) => (h, 16),
            None => (num, 10),
        };
        let bad = || XmlError::NotWellFormed(format!("invalid character reference &{name};"));
        if digits.is_empty() || !digits.bytes().all(|c| (c as char).is_digit(radix)) {
            return Err(bad());
        }
        let code = u32::from_str_radix(digits, radix).map_err(|_| bad())?;
        let c = char::from_u32(code).ok_or_else(bad)?;
        if !is_xml_char(c) {
            return Err(bad());
        }
        return Ok(c);
    }
    if check_qname(name).is_ok() {
        Err(XmlError::RestrictedXml(format!(
            "entity reference &{name}; is not allowed"
        )))
    } else {
        Err(XmlError::NotWellFormed(format!(
            "malformed reference &{name};"
        )))
    }
}
