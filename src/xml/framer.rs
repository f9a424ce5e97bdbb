//! Sans-IO framing of an XMPP byte stream: owns the bounded input buffer of one connection.
//!
//! The caller pushes whatever the socket returned ([`Framer::push`]) and then drains
//! [`Framer::next_frame`] until it returns `Ok(None)`. The framer
//!
//! * validates UTF-8 and XML 1.0 characters incrementally as bytes arrive (a multi-byte
//!   character may be split across pushes);
//! * scans bytes once, keeping its state between pushes: inside a tag, inside a quoted
//!   attribute value, inside CDATA, element depth; it never re-scans the buffer;
//! * refuses comments, processing instructions (other than a leading XML declaration), DTDs
//!   and undeclared entities (RFC 6120 §11.1) before any parsing;
//! * enforces [`XmlLimits`] while buffering, so a peer can never make it hold more than
//!   `max_stanza_bytes` of incomplete data plus one push chunk;
//! * hands each complete top-level element to quick-xml as a finished slice
//!   (see [`super::element`]) and owns the namespace bindings of the stream header.
//!
//! Depth counting: the stream element is depth 0, a top-level stanza is depth 1.
//! Attribute counting includes namespace declarations.

use std::fmt;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::element::{Element, decode, is_ws, parse_element};
use super::{NS_CLIENT, NS_COMPONENT_ACCEPT, NS_STREAM, NS_XML, is_xml_char};

/// Compile-time cap on [`XmlLimits::max_depth`] (bounds the recursion of tree walks).
pub const MAX_DEPTH_CAP: usize = 128;
/// Buffer capacity above which a drained buffer is released.
const RELEASE_CAPACITY: usize = 512;

/// Limits enforced by the [`Framer`] on peer input.
#[derive(Clone, Debug)]
pub struct XmlLimits {
    /// Largest top-level element, from its `<` to the end of its close tag (default 65536).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting, top-level element = 1 (default 32, clamped to
    /// [`MAX_DEPTH_CAP`]).
    pub max_depth: usize,
    /// Most attributes on one element, namespace declarations included (default 32).
    pub max_attrs: usize,
    /// Largest stream header (and XML declaration), in bytes (default 4096).
    pub max_header_bytes: usize,
}

impl Default for XmlLimits {
    /// The XML bounds of the default `[limits]` ([`crate::limits::Limits::xml_limits`]).
    fn default() -> Self {
        crate::limits::Limits::default().xml_limits()
    }
}

/// Attributes of the peer's `<stream:stream>` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// `to` attribute.
    pub to: Option<String>,
    /// `from` attribute.
    pub from: Option<String>,
    /// `version` attribute.
    pub version: Option<String>,
    /// `xml:lang` attribute.
    pub lang: Option<String>,
    /// `id` attribute.
    pub id: Option<String>,
}

/// One unit of the stream produced by [`Framer::next_frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The stream header was received (after an optional XML declaration).
    Header(StreamHeader),
    /// A complete top-level element (stanza, nonza, or stream-namespace element).
    Stanza(Element),
    /// The closing `</stream:stream>` tag.
    Close,
}

/// Stream-level XML errors; every one is terminal for the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed XML (syntax, UTF-8, characters, names, namespaces well-formedness).
    NotWellFormed(String),
    /// XML that RFC 6120 §11.1 forbids: comments, PIs, DTDs, undeclared entities.
    RestrictedXml(String),
    /// A configured limit was exceeded.
    PolicyViolation(String),
    /// Wrong stream namespace or content namespace on the stream header.
    InvalidNamespace(String),
    /// An XML declaration with an encoding other than UTF-8.
    UnsupportedEncoding,
    /// Well-formed but unacceptable stream structure.
    BadFormat(String),
    /// Invalid XML (kept for completeness; the framer does not validate).
    InvalidXml(String),
}

impl XmlError {
    /// RFC 6120 §4.9.3 stream error condition name, e.g. `"not-well-formed"`.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::RestrictedXml(_) => "restricted-xml",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
            XmlError::UnsupportedEncoding => "unsupported-encoding",
            XmlError::BadFormat(_) => "bad-format",
            XmlError::InvalidXml(_) => "invalid-xml",
        }
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::UnsupportedEncoding => f.write_str("unsupported-encoding: only UTF-8"),
            XmlError::NotWellFormed(d)
            | XmlError::RestrictedXml(d)
            | XmlError::PolicyViolation(d)
            | XmlError::InvalidNamespace(d)
            | XmlError::BadFormat(d)
            | XmlError::InvalidXml(d) => write!(f, "{}: {}", self.condition(), d),
        }
    }
}

impl std::error::Error for XmlError {}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing consumed yet: an XML declaration is still allowed.
    Start,
    /// Waiting for the stream header.
    Prolog,
    /// Header received: top-level elements and the close tag.
    Stream,
    /// `</stream:stream>` seen: only whitespace may follow.
    Closed,
}

/// Scanner state between bytes (kept across pushes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between top-level frames, skipping whitespace.
    Top,
    /// Just after `<`.
    Lt,
    /// After `<!`: comment, CDATA or DTD markup.
    Bang,
    /// Inside `<?…?>` (only the leading XML declaration gets here).
    Pi,
    /// Inside a start tag; `quote` is the open quote byte or 0, `slash` whether the previous
    /// byte outside quotes was `/`, `sep` whether a separator must follow (a value just ended).
    StartTag { quote: u8, slash: bool, sep: bool },
    /// Inside an end tag.
    EndTag,
    /// Character data inside an element.
    Content,
    /// Inside CDATA; `brackets` counts trailing `]` (0..=2).
    CData { brackets: u8 },
}

/// A frame whose bytes are complete in the buffer, `frame_start..pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    Header,
    Stanza,
    Close,
}

/// Incremental framer for one XMPP stream; see the module docs.
#[derive(Debug)]
pub struct Framer {
    /// Limits (depth already clamped).
    limits: XmlLimits,
    /// Buffered bytes; `..frame_start` is consumed and compacted away lazily.
    buf: Vec<u8>,
    /// Start of the frame being scanned (or of unconsumed data).
    frame_start: usize,
    /// Start of the markup construct being scanned (`<` position).
    tag_start: usize,
    /// Next byte to scan.
    pos: usize,
    /// Scanner state at `pos`.
    state: State,
    /// Stream phase.
    phase: Phase,
    /// Element depth inside the current top-level element.
    depth: usize,
    /// Names of the open elements of the current top-level element, outermost first, as
    /// `(offset from frame_start, length)` into `buf` (the stanza's bytes stay buffered until
    /// it completes). At most `max_depth` entries; end tags are compared byte for byte.
    open: Vec<(u32, u32)>,
    /// `=` signs seen outside quotes in the current start tag (attribute count).
    attrs: usize,
    /// A complete frame waiting to be returned.
    ready: Option<Ready>,
    /// Namespace bindings of the stream header (`""` = default namespace).
    ns_base: Vec<(String, String)>,
    /// Qualified name of the stream element, for matching the close tag.
    close_name: String,
    /// Trailing bytes of an incomplete UTF-8 character (already in `buf`).
    utf8_carry: [u8; 4],
    /// Number of valid bytes in `utf8_carry`.
    utf8_carry_len: u8,
    /// Sticky terminal error.
    error: Option<XmlError>,
    /// A XEP-0114 component stream: the header's default namespace is
    /// [`NS_COMPONENT_ACCEPT`], read as [`NS_CLIENT`] for the stanzas inside.
    component: bool,
}

impl Framer {
    /// A framer expecting a stream header; holds no heap memory until bytes arrive.
    pub fn new(limits: XmlLimits) -> Framer {
        let mut limits = limits;
        limits.max_depth = limits.max_depth.min(MAX_DEPTH_CAP);
        Framer {
            limits,
            buf: Vec::new(),
            frame_start: 0,
            tag_start: 0,
            pos: 0,
            state: State::Top,
            phase: Phase::Start,
            depth: 0,
            open: Vec::new(),
            attrs: 0,
            ready: None,
            ns_base: Vec::new(),
            close_name: String::new(),
            utf8_carry: [0; 4],
            utf8_carry_len: 0,
            error: None,
            component: false,
        }
    }

    /// A framer for a XEP-0114 component stream (`jabber:component:accept`): the same
    /// checks, but the header's default namespace must be [`NS_COMPONENT_ACCEPT`], and
    /// stanzas that do not name their namespace come out in [`NS_CLIENT`], as in a client
    /// stream (stanzas that name [`NS_COMPONENT_ACCEPT`] keep it; see
    /// `crate::component::normalize`).
    pub fn new_component(limits: XmlLimits) -> Framer {
        let mut f = Framer::new(limits);
        f.component = true;
        f
    }

    /// Append bytes read from the socket. Validates them (UTF-8, XML characters) and scans
    /// them up to the next complete frame. Errors if the pending (incomplete) data would
    /// exceed `max_stanza_bytes`, or on any stream error found while scanning; errors are
    /// terminal and sticky.
    ///
    /// Callers should drain [`Framer::next_frame`] until `Ok(None)` between pushes; a caller
    /// that does not is refused once more than `max_stanza_bytes` sit undrained.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let res = self.push_inner(bytes);
        self.fail_on(res)
    }

    /// Next complete frame, or `Ok(None)` if more bytes are needed. Errors are terminal for
    /// the stream (and sticky: later calls return the same error).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let res = self.next_inner();
        self.fail_on(res)
    }

    /// Stream restart (after STARTTLS `<proceed/>` or SASL `<success/>`): discard all state,
    /// buffered bytes included; expect a new (optional XML declaration and) header.
    pub fn reset(&mut self) {
        let limits = self.limits.clone();
        let component = self.component;
        *self = Framer::new(limits);
        self.component = component;
    }

    /// The largest top-level element accepted now.
    pub fn max_stanza_bytes(&self) -> usize {
        self.limits.max_stanza_bytes
    }

    /// Changes the largest top-level element accepted (the pre-authentication limit is
    /// lifted after SASL success). Applies to the element being received too.
    pub fn set_max_stanza_bytes(&mut self, max: usize) {
        self.limits.max_stanza_bytes = max;
    }

    /// Bytes currently buffered and not yet consumed by a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.frame_start
    }

    /// Bytes currently allocated by the input buffer (capacity), for memory accounting.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether non-whitespace bytes remain buffered that were not consumed (used to detect
    /// data pipelined after `<starttls/>` or SASL success). Whitespace keepalives do not count.
    pub fn has_pending(&self) -> bool {
        self.utf8_carry_len > 0 || self.buf[self.frame_start..].iter().any(|b| !is_ws(*b))
    }

    /// Record a terminal error and free the buffer.
    fn fail_on<T>(&mut self, res: Result<T, XmlError>) -> Result<T, XmlError> {
        if let Err(e) = &res {
            self.error = Some(e.clone());
            self.buf = Vec::new();
            self.open = Vec::new();
            self.frame_start = 0;
            self.pos = 0;
            self.ready = None;
        }
        res
    }

    fn push_inner(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        self.validate(bytes)?;
        if (self.ready.is_some() || self.pos < self.buf.len())
            && self.buffered() > self.limits.max_stanza_bytes
        {
            return Err(XmlError::PolicyViolation(
                "too much undrained data buffered".to_owned(),
            ));
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        self.scan()
    }

    fn next_inner(&mut self) -> Result<Option<Frame>, XmlError> {
        if self.ready.is_none() {
            self.scan()?;
        }
        let Some(ready) = self.ready.take() else {
            self.compact();
            return Ok(None);
        };
        let bytes = &self.buf[self.frame_start..self.pos];
        let frame = match ready {
            Ready::Header => {
                let (header, ns_base, close_name) = parse_header(bytes, self.component)?;
                self.ns_base = ns_base;
                self.close_name = close_name;
                self.phase = Phase::Stream;
                Frame::Header(header)
            }
            Ready::Stanza => Frame::Stanza(parse_element(
                bytes,
                &self.ns_base,
                self.limits.max_depth,
                self.limits.max_attrs,
            )?),
            Ready::Close => Frame::Close,
        };
        self.frame_start = self.pos;
        Ok(Some(frame))
    }

    /// Drop consumed bytes; release or shrink the allocation when it is mostly unused.
    fn compact(&mut self) {
        if self.frame_start > 0 {
            self.buf.drain(..self.frame_start);
            self.pos -= self.frame_start;
            self.tag_start = self.tag_start.saturating_sub(self.frame_start);
            self.frame_start = 0;
        }
        let cap = self.buf.capacity();
        if self.buf.is_empty() {
            if cap > RELEASE_CAPACITY {
                self.buf = Vec::new();
            }
        } else if cap > 8 * 1024 && self.buf.len() < cap / 4 {
            self.buf.shrink_to(self.buf.len().max(RELEASE_CAPACITY) * 2);
        }
    }

    /// Size limit of the frame being scanned.
    fn frame_limit(&self) -> usize {
        match self.phase {
            Phase::Start | Phase::Prolog => self.limits.max_header_bytes,
            Phase::Stream | Phase::Closed => self.limits.max_stanza_bytes,
        }
    }

    /// Incremental UTF-8 and XML 1.0 character validation of freshly received bytes.
    fn validate(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        let mut rest = bytes;
        if self.utf8_carry_len > 0 {
            let have = usize::from(self.utf8_carry_len);
            let need = utf8_width(self.utf8_carry[0]);
            let take = (need - have).min(rest.len());
            self.utf8_carry[have..have + take].copy_from_slice(&rest[..take]);
            let have = have + take;
            rest = &rest[take..];
            match std::str::from_utf8(&self.utf8_carry[..have]) {
                Ok(s) => {
                    check_chars(s)?;
                    self.utf8_carry_len = 0;
                }
                Err(e) if e.error_len().is_none() && have < need => {
                    // u8 cast: have < need <= 4.
                    self.utf8_carry_len = have as u8;
                    return Ok(());
                }
                Err(_) => return Err(invalid_utf8()),
            }
        }
        match std::str::from_utf8(rest) {
            Ok(s) => check_chars(s),
            Err(e) => {
                let (good, tail) = rest.split_at(e.valid_up_to());
                // The prefix is valid by construction.
                check_chars(std::str::from_utf8(good).map_err(|_| invalid_utf8())?)?;
                if e.error_len().is_some() || tail.len() >= 4 {
                    return Err(invalid_utf8());
                }
                self.utf8_carry[..tail.len()].copy_from_slice(tail);
                // u8 cast: tail.len() < 4.
                self.utf8_carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Advance the scanner over buffered bytes until a frame is complete or the buffer ends,
    /// then enforce the frame size limit.
    fn scan(&mut self) -> Result<(), XmlError> {
        let len = self.buf.len();
        while self.ready.is_none() && self.pos < len {
            match self.state {
                State::Top => self.scan_top()?,
                State::Lt => self.scan_lt()?,
                State::Bang => self.scan_bang()?,
                State::Pi => self.scan_pi()?,
                State::StartTag { quote, slash, sep } => self.scan_start_tag(quote, slash, sep)?,
                State::EndTag => self.scan_end_tag()?,
                State::Content => match self.buf[self.pos..].iter().position(|&b| b == b'<') {
                    Some(i) => {
                        self.tag_start = self.pos + i;
                        self.pos += i + 1;
                        self.state = State::Lt;
                    }
                    None => self.pos = len,
                },
                State::CData { brackets } => self.scan_cdata(brackets),
            }
        }
        let limit = self.frame_limit();
        if self.pos - self.frame_start > limit {
            return Err(match self.phase {
                Phase::Start | Phase::Prolog => {
                    XmlError::PolicyViolation(format!("stream header larger than {limit} bytes"))
                }
                Phase::Stream | Phase::Closed => {
                    XmlError::PolicyViolation(format!("stanza larger than {limit} bytes"))
                }
            });
        }
        Ok(())
    }

    fn scan_top(&mut self) -> Result<(), XmlError> {
        let rest = &self.buf[self.pos..];
        let skip = rest.iter().position(|b| !is_ws(*b)).unwrap_or(rest.len());
        if skip > 0 {
            self.pos += skip;
            self.frame_start = self.pos;
            if self.phase == Phase::Start {
                self.phase = Phase::Prolog;
            }
            return Ok(());
        }
        if self.phase == Phase::Closed {
            return Err(XmlError::NotWellFormed(
                "data after the stream close tag".to_owned(),
            ));
        }
        if rest[0] != b'<' {
            return Err(XmlError::NotWellFormed(
                "character data at stream level".to_owned(),
            ));
        }
        self.frame_start = self.pos;
        self.tag_start = self.pos;
        self.pos += 1;
        self.state = State::Lt;
        Ok(())
    }

    fn scan_lt(&mut self) -> Result<(), XmlError> {
        match self.buf[self.pos] {
            b'?' => {
                if self.phase != Phase::Start {
                    return Err(XmlError::RestrictedXml(
                        "processing instructions are not allowed".to_owned(),
                    ));
                }
                self.pos += 1;
                self.state = State::Pi;
            }
            b'!' => {
                self.pos += 1;
                self.state = State::Bang;
            }
            b'/' => {
                self.pos += 1;
                self.state = State::EndTag;
            }
            b'>' | b'<' | b'=' | b'"' | b'\'' | b' ' | b'\t' | b'\n' | b'\r' => {
                return Err(XmlError::NotWellFormed(
                    "invalid markup after '<'".to_owned(),
                ));
            }
            _ => {
                // The name byte is scanned by the start-tag state.
                self.attrs = 0;
                self.state = State::StartTag {
                    quote: 0,
                    slash: false,
                    sep: false,
                };
            }
        }
        Ok(())
    }

    fn scan_bang(&mut self) -> Result<(), XmlError> {
        const CDATA: &[u8] = b"[CDATA[";
        let b = self.buf[self.pos];
        let n = self.pos - (self.tag_start + 2);
        let first = if n == 0 {
            b
        } else {
            self.buf[self.tag_start + 2]
        };
        match first {
            b'-' => {
                if n == 0 {
                    self.pos += 1;
                } else if b == b'-' {
                    return Err(XmlError::RestrictedXml(
                        "comments are not allowed".to_owned(),
                    ));
                } else {
                    return Err(XmlError::NotWellFormed("invalid markup '<!-'".to_owned()));
                }
            }
            b'[' => {
                if self.depth == 0 {
                    return Err(XmlError::NotWellFormed(
                        "CDATA section outside an element".to_owned(),
                    ));
                }
                if CDATA.get(n) != Some(&b) {
                    return Err(XmlError::NotWellFormed("invalid markup '<!['".to_owned()));
                }
                self.pos += 1;
                if n + 1 == CDATA.len() {
                    self.state = State::CData { brackets: 0 };
                }
            }
            b'A'..=b'Z' => {
                return Err(XmlError::RestrictedXml(
                    "DTDs and markup declarations are not allowed".to_owned(),
                ));
            }
            _ => return Err(XmlError::NotWellFormed("invalid markup '<!'".to_owned())),
        }
        Ok(())
    }

    fn scan_pi(&mut self) -> Result<(), XmlError> {
        let rest = &self.buf[self.pos..];
        let Some(i) = rest.iter().position(|&b| b == b'>') else {
            self.pos = self.buf.len();
            return Ok(());
        };
        let gt = self.pos + i;
        self.pos = gt + 1;
        // `?>` ends the PI; the `?` must not be the one of `<?`.
        if gt < self.tag_start + 3 || self.buf[gt - 1] != b'?' {
            return Ok(());
        }
        let pi = &self.buf[self.frame_start..self.pos];
        let is_decl = pi.len() > 6 && &pi[2..5] == b"xml" && is_ws(pi[5]);
        if !is_decl {
            return Err(XmlError::RestrictedXml(
                "processing instructions are not allowed".to_owned(),
            ));
        }
        check_decl(pi)?;
        self.frame_start = self.pos;
        self.phase = Phase::Prolog;
        self.state = State::Top;
        Ok(())
    }

    fn scan_start_tag(&mut self, quote: u8, slash: bool, sep: bool) -> Result<(), XmlError> {
        if quote != 0 {
            let rest = &self.buf[self.pos..];
            match rest.iter().position(|&b| b == quote || b == b'<') {
                Some(i) if rest[i] == quote => {
                    self.pos += i + 1;
                    self.state = State::StartTag {
                        quote: 0,
                        slash: false,
                        sep: true,
                    };
                }
                Some(_) => {
                    return Err(XmlError::NotWellFormed("'<' in attribute value".to_owned()));
                }
                None => self.pos = self.buf.len(),
            }
            return Ok(());
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        if sep && !(is_ws(b) || b == b'/' || b == b'>') {
            return Err(XmlError::NotWellFormed(
                "missing whitespace between attributes".to_owned(),
            ));
        }
        let mut next_slash = false;
        let mut next_quote = 0;
        match b {
            b'"' | b'\'' => next_quote = b,
            b'=' => {
                self.attrs += 1;
                if self.attrs > self.limits.max_attrs {
                    return Err(XmlError::PolicyViolation(format!(
                        "more than {} attributes on an element",
                        self.limits.max_attrs
                    )));
                }
            }
            b'/' => next_slash = true,
            b'<' => return Err(XmlError::NotWellFormed("'<' inside a tag".to_owned())),
            b'>' => return self.end_start_tag(slash),
            _ => {}
        }
        self.state = State::StartTag {
            quote: next_quote,
            slash: next_slash,
            sep: false,
        };
        Ok(())
    }

    fn end_start_tag(&mut self, self_closing: bool) -> Result<(), XmlError> {
        self.state = State::Top;
        match self.phase {
            Phase::Start | Phase::Prolog => {
                if self_closing {
                    return Err(XmlError::BadFormat("empty stream element".to_owned()));
                }
                self.ready = Some(Ready::Header);
            }
            Phase::Stream => {
                if self.depth >= self.limits.max_depth {
                    return Err(XmlError::PolicyViolation(format!(
                        "element nesting deeper than {}",
                        self.limits.max_depth
                    )));
                }
                if self_closing {
                    if self.depth == 0 {
                        self.ready = Some(Ready::Stanza);
                    } else {
                        self.state = State::Content;
                    }
                } else {
                    self.push_open_name()?;
                    self.depth += 1;
                    self.state = State::Content;
                }
            }
            Phase::Closed => {
                return Err(XmlError::NotWellFormed(
                    "data after the stream close tag".to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn scan_end_tag(&mut self) -> Result<(), XmlError> {
        let rest = &self.buf[self.pos..];
        let Some(i) = rest.iter().position(|&b| b == b'>' || b == b'<') else {
            self.pos = self.buf.len();
            return Ok(());
        };
        if rest[i] == b'<' {
            return Err(XmlError::NotWellFormed("'<' inside a close tag".to_owned()));
        }
        let name_end = self.pos + i;
        self.pos = name_end + 1;
        self.state = State::Top;
        match self.phase {
            Phase::Start | Phase::Prolog | Phase::Closed => Err(XmlError::NotWellFormed(
                "close tag outside the stream".to_owned(),
            )),
            Phase::Stream if self.depth == 0 => {
                let name = trim_ws_end(&self.buf[self.tag_start + 2..name_end]);
                if name != self.close_name.as_bytes() {
                    return Err(XmlError::NotWellFormed(
                        "close tag does not match the stream element".to_owned(),
                    ));
                }
                self.phase = Phase::Closed;
                self.ready = Some(Ready::Close);
                Ok(())
            }
            Phase::Stream => {
                self.pop_open_name(name_end)?;
                self.depth -= 1;
                if self.depth == 0 {
                    if self.open.capacity() > 16 {
                        self.open = Vec::new();
                    }
                    self.ready = Some(Ready::Stanza);
                } else {
                    self.state = State::Content;
                }
                Ok(())
            }
        }
    }

    /// Record the name of the start tag that just ended (`tag_start..pos` is `<name …>`).
    fn push_open_name(&mut self) -> Result<(), XmlError> {
        let tag = &self.buf[self.tag_start + 1..self.pos];
        let len = tag
            .iter()
            .position(|&b| is_ws(b) || b == b'/' || b == b'>')
            .unwrap_or(tag.len());
        let too_big = || {
            XmlError::PolicyViolation(format!(
                "stanza larger than {} bytes",
                self.limits.max_stanza_bytes
            ))
        };
        let off = u32::try_from(self.tag_start + 1 - self.frame_start).map_err(|_| too_big())?;
        let len = u32::try_from(len).map_err(|_| too_big())?;
        self.open.push((off, len));
        Ok(())
    }

    /// Check the end tag `tag_start..=name_end` against the innermost open element and pop
    /// it: a mismatch is `not-well-formed` at once, before the stanza completes.
    fn pop_open_name(&mut self, name_end: usize) -> Result<(), XmlError> {
        let name = trim_ws_end(&self.buf[self.tag_start + 2..name_end]);
        let Some((off, len)) = self.open.pop() else {
            return Err(XmlError::NotWellFormed("unbalanced close tag".to_owned()));
        };
        let start = self.frame_start + off as usize;
        let open = &self.buf[start..start + len as usize];
        if name != open {
            return Err(XmlError::NotWellFormed(format!(
                "close tag </{}> does not match the open element <{}>",
                shown_name(name),
                shown_name(open)
            )));
        }
        Ok(())
    }

    fn scan_cdata(&mut self, mut brackets: u8) {
        let len = self.buf.len();
        while self.pos < len {
            let b = self.buf[self.pos];
            self.pos += 1;
            match b {
                b']' => brackets = (brackets + 1).min(2),
                b'>' if brackets == 2 => {
                    self.state = State::Content;
                    return;
                }
                _ => brackets = 0,
            }
        }
        self.state = State::CData { brackets };
    }
}

/// Width of the UTF-8 sequence introduced by lead byte `b` (1 for invalid leads, which
/// `from_utf8` then rejects).
fn utf8_width(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// The `not-well-formed` error for bad UTF-8.
fn invalid_utf8() -> XmlError {
    XmlError::NotWellFormed("invalid UTF-8".to_owned())
}

/// Reject characters outside the XML 1.0 `Char` production (C0 controls other than tab,
/// LF, CR; U+FFFE; U+FFFF). Surrogates cannot occur in valid UTF-8.
pub(crate) fn check_chars(s: &str) -> Result<(), XmlError> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let bad = match c {
            0x00..=0x1F => !matches!(c, b'\t' | b'\n' | b'\r'),
            0xEF => b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)),
            _ => false,
        };
        if bad {
            let ch = s[i..].chars().next().unwrap_or('\0');
            debug_assert!(!is_xml_char(ch));
            return Err(XmlError::NotWellFormed(format!(
                "character U+{:04X} is not allowed in XML",
                u32::from(ch)
            )));
        }
    }
    Ok(())
}

/// A name for an error message: at most 64 bytes of it.
fn shown_name(name: &[u8]) -> String {
    let cut = &name[..name.len().min(64)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < name.len() {
        s.push('…');
    }
    s
}

/// Trailing XML whitespace removed.
fn trim_ws_end(mut b: &[u8]) -> &[u8] {
    while let Some((last, head)) = b.split_last() {
        if !is_ws(*last) {
            break;
        }
        b = head;
    }
    b
}

/// Check the XML declaration `<?xml …?>`: version 1.0, encoding absent or UTF-8.
fn check_decl(pi: &[u8]) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(pi);
    let decl = match reader.read_event() {
        Ok(Event::Decl(d)) => d,
        Ok(_) | Err(_) => {
            return Err(XmlError::NotWellFormed(
                "malformed XML declaration".to_owned(),
            ));
        }
    };
    let version = decl
        .version()
        .map_err(|e| XmlError::NotWellFormed(format!("XML declaration: {e}")))?;
    if version.as_ref() != b"1.0" {
        return Err(XmlError::NotWellFormed(
            "only XML version 1.0 is supported".to_owned(),
        ));
    }
    if let Some(enc) = decl.encoding() {
        let enc = enc.map_err(|e| XmlError::NotWellFormed(format!("XML declaration: {e}")))?;
        if !enc.eq_ignore_ascii_case(b"UTF-8") {
            return Err(XmlError::UnsupportedEncoding);
        }
    }
    Ok(())
}

/// Namespace bindings from the header, plus its qualified name.
type HeaderParse = (StreamHeader, Vec<(String, String)>, String);

/// Parse the stream header start tag: its attributes, namespace bindings and qualified name.
fn parse_header(bytes: &[u8], component: bool) -> Result<HeaderParse, XmlError> {
    let nw = |e: &dyn fmt::Display| XmlError::NotWellFormed(format!("stream header: {e}"));
    let mut reader = Reader::from_reader(bytes);
    let start = match reader.read_event() {
        Ok(Event::Start(s)) => s,
        Ok(_) => {
            return Err(XmlError::NotWellFormed(
                "malformed stream header".to_owned(),
            ));
        }
        Err(e) => return Err(nw(&e)),
    };
    let qname = std::str::from_utf8(start.name().into_inner())
        .map_err(|_| XmlError::NotWellFormed("invalid UTF-8".to_owned()))?
        .to_owned();
    let mut bindings: Vec<(String, String)> = Vec::new();
    let mut attrs: Vec<(String, String)> = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| nw(&e))?;
        let key = std::str::from_utf8(a.key.into_inner())
            .map_err(|_| XmlError::NotWellFormed("invalid UTF-8".to_owned()))?;
        let value = decode(&a.value, true)?;
        if key == "xmlns" {
            bindings.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            if p == "xml" || p == "xmlns" || value.is_empty() || value == NS_XML {
                return Err(XmlError::NotWellFormed(format!(
                    "illegal namespace declaration xmlns:{p}"
                )));
            }
            bindings.push((p.to_owned(), value));
        } else {
            attrs.push((key.to_owned(), value));
        }
    }
    let lookup = |p: &str| {
        bindings
            .iter()
            .rev()
            .find(|(k, _)| k == p)
            .map(|(_, v)| v.as_str())
    };
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", qname.as_str()),
    };
    if local != "stream" || lookup(prefix) != Some(NS_STREAM) {
        return Err(XmlError::InvalidNamespace(format!(
            "root element <{qname}> is not stream in {NS_STREAM}"
        )));
    }
    let default_ns = if component {
        NS_COMPONENT_ACCEPT
    } else {
        NS_CLIENT
    };
    if lookup("") != Some(default_ns) {
        return Err(XmlError::InvalidNamespace(format!(
            "default namespace must be {default_ns}"
        )));
    }
    let mut header = StreamHeader::default();
    for (k, v) in attrs {
        let slot = match k.as_str() {
            "to" => &mut header.to,
            "from" => &mut header.from,
            "version" => &mut header.version,
            "id" => &mut header.id,
            "xml:lang" => &mut header.lang,
            other => match other.split_once(':') {
                Some((p, _)) if p != "xml" && lookup(p).is_none() => {
                    return Err(XmlError::NotWellFormed(format!("unbound prefix {p}")));
                }
                _ => continue,
            },
        };
        *slot = Some(v);
    }
    if component {
        // The stanzas of a component stream are read as those of a client stream.
        for (p, v) in &mut bindings {
            if p.is_empty() && v == NS_COMPONENT_ACCEPT {
                NS_CLIENT.clone_into(v);
            }
        }
    }
    bindings.shrink_to_fit();
    Ok((header, bindings, qname))
}
