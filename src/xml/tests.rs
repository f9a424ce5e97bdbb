//! Tests of the framer, the element parser and the serialiser.

use super::framer::MAX_DEPTH_CAP;
use super::*;

const HDR: &str = "<?xml version='1.0' encoding='UTF-8'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
     xml:lang='en' id='c2s1'>";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// Feed `input` cut into chunks of the given sizes, draining after every push.
fn feed_sizes(
    limits: XmlLimits,
    input: &[u8],
    mut size: impl FnMut() -> usize,
) -> Result<Vec<Frame>, XmlError> {
    let mut f = Framer::new(limits);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = size().clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        f.push(chunk)?;
        while let Some(frame) = f.next_frame()? {
            out.push(frame);
        }
    }
    Ok(out)
}

/// A small deterministic LCG for chunk sizes.
fn lcg(seed: u64, max: usize) -> impl FnMut() -> usize {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Truncation intended: only the high bits are used.
        ((state >> 33) as usize % max) + 1
    }
}

/// Feed `input` whole, byte by byte and in several pseudo-random chunkings; assert that
/// every way gives the same frames (or the same error condition) and return the result.
fn feed_all(limits: &XmlLimits, input: &[u8]) -> Result<Vec<Frame>, XmlError> {
    let whole = feed_sizes(limits.clone(), input, || usize::MAX);
    let bytewise = feed_sizes(limits.clone(), input, || 1);
    let mut others = vec![bytewise];
    for (seed, max) in [(1, 3), (7, 17), (42, 64), (99, 500), (12345, 4096)] {
        others.push(feed_sizes(limits.clone(), input, lcg(seed, max)));
    }
    for other in others {
        match (&whole, &other) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the frames"),
            (Err(a), Err(b)) => assert_eq!(a.condition(), b.condition(), "{a} vs {b}"),
            (a, b) => panic!("chunking changed the outcome: {a:?} vs {b:?}"),
        }
    }
    whole
}

fn ok(input: &str) -> Vec<Frame> {
    match feed_all(&XmlLimits::default(), input.as_bytes()) {
        Ok(f) => f,
        Err(e) => panic!("unexpected error {e} for {input:?}"),
    }
}

fn err(input: &[u8]) -> XmlError {
    err_with(&XmlLimits::default(), input)
}

fn err_with(limits: &XmlLimits, input: &[u8]) -> XmlError {
    match feed_all(limits, input) {
        Ok(f) => panic!("expected an error, got {f:?}"),
        Err(e) => e,
    }
}

/// Stanzas of a transcript (everything but header/close).
fn stanzas(frames: &[Frame]) -> Vec<&Element> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Stanza(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn stanza_after_header(body: &str) -> Element {
    let frames = ok(&format!("{HDR}{body}"));
    assert_eq!(frames.len(), 2, "{frames:?}");
    match &frames[1] {
        Frame::Stanza(e) => e.clone(),
        other => panic!("expected a stanza, got {other:?}"),
    }
}

/// Asserts that `body`, inside a stream, fails with `condition`.
#[track_caller]
fn assert_in_stream_err(body: &str, condition: &str) {
    assert_eq!(in_stream_err(body).condition(), condition, "{body}");
}

/// Asserts that one level over [`MAX_DEPTH_CAP`] is refused under `limits`.
#[track_caller]
fn assert_too_deep_refused(limits: &XmlLimits) {
    let too_deep = format!("{HDR}{}", "<a>".repeat(MAX_DEPTH_CAP + 1));
    assert_eq!(
        err_with(limits, too_deep.as_bytes()).condition(),
        "policy-violation"
    );
}

fn in_stream_err(body: &str) -> XmlError {
    err(format!("{HDR}{body}").as_bytes())
}

// ---------------------------------------------------------------- transcripts

#[test]
fn valid_transcripts_identical_under_any_chunking() {
    let transcripts = [
        format!(
            "{HDR}<message to='a@b' type='chat' id=\"m1\"><body>hi &amp; bye &#x263A; &#65;</body></message>\
             \n <presence/>\t\r\n<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq> </stream:stream>"
        ),
        format!(
            "{HDR}<iq type='set' id='p1'><pubsub xmlns='{NS_PUBSUB}'><publish node='n'>\
             <item id='i'><entry xmlns='urn:x' a='1&gt;2'>caf\u{e9} \u{1F600} \u{4E2D}</entry></item>\
             </publish></pubsub></iq><message><body><![CDATA[<not-a-tag> & ]] ]]]></body></message>"
        ),
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
         <a x='>' y=\"/>\" z='\"'/><b><b><b/></b></b>   <c>t<d/>u</c></stream:stream>"
            .to_owned(),
    ];
    for t in &transcripts {
        let frames = ok(t);
        assert!(matches!(frames[0], Frame::Header(_)));
        assert!(frames.len() >= 3, "{frames:?}");
    }
    // Content checks on the first transcript.
    let frames = ok(&transcripts[0]);
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[4], Frame::Close);
    let s = stanzas(&frames);
    assert!(s[0].is("message", NS_CLIENT));
    assert_eq!(s[0].attr("to"), Some("a@b"));
    assert_eq!(
        s[0].child("body", NS_CLIENT).map(Element::text),
        Some("hi & bye \u{263A} A".to_owned())
    );
    assert!(s[1].is("presence", NS_CLIENT));
    assert!(s[2].child("query", "jabber:iq:roster").is_some());
}

#[test]
fn many_stanzas_in_one_push() {
    let mut t = HDR.to_owned();
    for i in 0..500 {
        t.push_str(&format!("<message id='{i}'><body>n{i}</body></message> "));
    }
    let frames = ok(&t);
    assert_eq!(frames.len(), 501);
    let s = stanzas(&frames);
    assert_eq!(s[499].attr("id"), Some("499"));
    assert_eq!(
        s[499].elements().next().map(Element::text),
        Some("n499".to_owned())
    );
}

// ---------------------------------------------------------------- header

#[test]
fn header_attributes() {
    let frames = ok(HDR);
    assert_eq!(
        frames,
        vec![Frame::Header(StreamHeader {
            to: Some("example.com".into()),
            from: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
            id: Some("c2s1".into()),
        })]
    );
}

#[test]
fn header_without_decl_and_custom_prefix() {
    let frames = ok(
        "  <s:stream xmlns=\"jabber:client\" xmlns:s=\"http://etherx.jabber.org/streams\" \
         from=\"me@x\"><s:features/><s:error><x xmlns='urn:y'/></s:error></s:stream>",
    );
    assert_eq!(frames.len(), 4);
    match &frames[0] {
        Frame::Header(h) => assert_eq!(h.from.as_deref(), Some("me@x")),
        other => panic!("{other:?}"),
    }
    let s = stanzas(&frames);
    assert!(s[0].is("features", NS_STREAM));
    assert!(s[1].is("error", NS_STREAM));
    assert!(s[1].child("x", "urn:y").is_some());
    assert_eq!(frames[3], Frame::Close);
}

#[test]
fn header_decl_double_quotes_and_no_encoding() {
    let t = "<?xml version=\"1.0\"?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>";
    assert!(matches!(ok(t)[0], Frame::Header(_)));
}

#[test]
fn header_namespace_errors() {
    let cases = [
        // wrong root name
        "<stream:foo xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        // root not in the stream namespace
        "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
        // unbound stream prefix
        "<stream:stream xmlns='jabber:client'>",
        // wrong content namespace
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        // no content namespace
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
        // unprefixed root in the stream namespace: default ns is then wrong
        "<stream xmlns='http://etherx.jabber.org/streams'>",
        // a stanza instead of a header
        "<message xmlns='jabber:client'>",
    ];
    for c in cases {
        assert_eq!(err(c.as_bytes()).condition(), "invalid-namespace", "{c}");
    }
}

#[test]
fn header_other_errors() {
    assert_eq!(
        err(b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        XmlError::UnsupportedEncoding
    );
    assert_eq!(
        err(b" <?xml version='1.0'?>").condition(),
        "restricted-xml",
        "declaration not at the start"
    );
    assert_eq!(err(b"<?foo bar?>").condition(), "restricted-xml");
    let self_closing = "<stream:stream xmlns='jabber:client' \
                        xmlns:stream='http://etherx.jabber.org/streams'/>";
    assert_eq!(err(self_closing.as_bytes()).condition(), "bad-format");
    let big = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        "a".repeat(XmlLimits::default().max_header_bytes)
    );
    assert_eq!(err(big.as_bytes()).condition(), "policy-violation");
    assert_eq!(err(b"hello").condition(), "not-well-formed");
    assert_eq!(err(b"</stream:stream>").condition(), "not-well-formed");
}

#[test]
fn never_ending_header_is_bounded() {
    let mut f = Framer::new(XmlLimits::default());
    let mut res = f.push(b"<stream:stream to='");
    for _ in 0..100 {
        if res.is_err() {
            break;
        }
        assert!(f.buffered() <= XmlLimits::default().max_header_bytes + 100);
        res = f.push(&[b'a'; 100]);
    }
    assert_eq!(res.map_err(|e| e.condition()), Err("policy-violation"));
}

// ---------------------------------------------------------------- framing details

#[test]
fn gt_and_slash_gt_inside_attribute_values() {
    let e = stanza_after_header(
        "<message to='a>b' id=\"x/>\" t='say \"/>\"'><body a=\"'>\">ok</body></message>",
    );
    assert_eq!(e.attr("to"), Some("a>b"));
    assert_eq!(e.attr("id"), Some("x/>"));
    assert_eq!(e.attr("t"), Some("say \"/>\""));
    let body = e
        .child("body", NS_CLIENT)
        .cloned()
        .unwrap_or_else(|| Element::new("", ""));
    assert_eq!(body.attr("a"), Some("'>"));
    assert_eq!(body.text(), "ok");
}

#[test]
fn cdata_sections() {
    let e = stanza_after_header("<m><b><![CDATA[a<b>&c]]]>d<![CDATA[]]><![CDATA[]>]]></b></m>");
    let b = e.child("b", NS_CLIENT).map(Element::text);
    assert_eq!(b, Some("a<b>&c]d]>".to_owned()));
    // Text merged into one node.
    assert_eq!(e.child("b", NS_CLIENT).map(|b| b.children.len()), Some(1));
    // A literal `]]>` outside CDATA is not well-formed.
    assert_in_stream_err("<m>a]]>b</m>", "not-well-formed");
    // CDATA at stream level is not allowed.
    assert_in_stream_err("<![CDATA[x]]>", "not-well-formed");
    // Malformed `<![`.
    assert_in_stream_err("<m><![CDAT x]]></m>", "not-well-formed");
}

#[test]
fn self_closing_nested_same_name_and_keepalives() {
    let frames = ok(&format!(
        "{HDR} \n\t <presence/>\n\n <iq><query><query><query/></query></query></iq>   \r\n  <r/> "
    ));
    let s = stanzas(&frames);
    assert_eq!(s.len(), 3);
    assert!(s[0].is("presence", NS_CLIENT) && s[0].children.is_empty());
    let q1 = s[1].child("query", NS_CLIENT);
    let q2 = q1.and_then(|q| q.child("query", NS_CLIENT));
    let q3 = q2.and_then(|q| q.child("query", NS_CLIENT));
    assert!(q3.is_some_and(|q| q.children.is_empty()));
    assert!(s[2].is("r", NS_CLIENT));
}

#[test]
fn text_at_stream_level_and_after_close() {
    assert_in_stream_err("hello", "not-well-formed");
    assert_in_stream_err("<a/>x<b/>", "not-well-formed");
    assert_in_stream_err("</stream:stream><a/>", "not-well-formed");
    assert_in_stream_err("</stream:foo>", "not-well-formed");
    assert_in_stream_err("< a/>", "not-well-formed");
    // Whitespace after the close tag is fine.
    let frames = ok(&format!("{HDR}</stream:stream>\n "));
    assert_eq!(frames.last(), Some(&Frame::Close));
}

// ---------------------------------------------------------------- limits

#[test]
fn oversized_stanza_is_policy_violation() {
    let limits = XmlLimits {
        max_stanza_bytes: 1000,
        ..XmlLimits::default()
    };
    let at_limit = format!("<m>{}</m>", "x".repeat(1000 - 7));
    assert_eq!(at_limit.len(), 1000);
    assert!(feed_all(&limits, format!("{HDR}{at_limit}").as_bytes()).is_ok());
    let over = format!("<m>{}</m>", "x".repeat(1000 - 6));
    let e = err_with(&limits, format!("{HDR}{over}").as_bytes());
    assert_eq!(e.condition(), "policy-violation");
    // Whitespace keepalives do not count towards the next stanza.
    let ws = format!("{HDR}{}{at_limit}", " ".repeat(5000));
    assert!(feed_all(&limits, ws.as_bytes()).is_ok());
}

#[test]
fn never_ending_stanza_keeps_the_buffer_bounded() {
    let limits = XmlLimits {
        max_stanza_bytes: 4096,
        ..XmlLimits::default()
    };
    for opener in ["<m>", "<m a='", "<m><![CDATA[", "<m><n><o>"] {
        let mut f = Framer::new(limits.clone());
        assert!(f.push(HDR.as_bytes()).is_ok());
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
        let mut res = f.push(opener.as_bytes());
        let chunk = [b'y'; 300];
        let mut pushes = 0;
        while res.is_ok() && pushes < 1000 {
            assert!(f.buffered() <= 4096 + chunk.len(), "{opener}");
            res = f.next_frame().map(|fr| assert!(fr.is_none()));
            if res.is_ok() {
                res = f.push(&chunk);
            }
            pushes += 1;
        }
        assert_eq!(
            res.map_err(|e| e.condition()),
            Err("policy-violation"),
            "{opener}"
        );
        assert!(pushes < 20, "{opener}: detected too late");
        // Errors are sticky and the buffer is released.
        assert_eq!(f.buffer_capacity(), 0);
        assert!(f.push(b"<a/>").is_err());
        assert!(f.next_frame().is_err());
    }
}

#[test]
fn undrained_pushes_are_bounded() {
    let limits = XmlLimits {
        max_stanza_bytes: 1000,
        ..XmlLimits::default()
    };
    let mut f = Framer::new(limits);
    assert!(f.push(HDR.as_bytes()).is_ok());
    let mut res = Ok(());
    for _ in 0..100 {
        res = f.push(b"<presence/><presence/><presence/>");
        if res.is_err() {
            break;
        }
        assert!(f.buffered() <= 1100);
    }
    assert_eq!(res.map_err(|e| e.condition()), Err("policy-violation"));
}

#[test]
fn depth_bomb() {
    let limits = XmlLimits {
        max_depth: 5,
        ..XmlLimits::default()
    };
    let ok5 = format!("{HDR}{}{}", "<a>".repeat(5), "</a>".repeat(5));
    assert!(feed_all(&limits, ok5.as_bytes()).is_ok());
    let leaf5 = format!("{HDR}{}<b/>{}", "<a>".repeat(4), "</a>".repeat(4));
    assert!(
        feed_all(&limits, leaf5.as_bytes()).is_ok(),
        "empty leaf at the limit is fine"
    );
    let leaf6 = format!("{HDR}{}<b/>{}", "<a>".repeat(5), "</a>".repeat(5));
    assert_eq!(
        err_with(&limits, leaf6.as_bytes()).condition(),
        "policy-violation"
    );
    let bad = format!("{HDR}{}{}", "<a>".repeat(6), "</a>".repeat(6));
    assert_eq!(
        err_with(&limits, bad.as_bytes()).condition(),
        "policy-violation"
    );
    // The bomb never closes: rejected once the depth is crossed.
    let bomb = format!("{HDR}{}", "<a>".repeat(100_000));
    assert_eq!(
        in_stream_err(&bomb[HDR.len()..]).condition(),
        "policy-violation"
    );
    // The configured depth is clamped to the compile-time cap.
    let huge = XmlLimits {
        max_depth: usize::MAX,
        ..XmlLimits::default()
    };
    assert_too_deep_refused(&huge);
}

#[test]
fn attribute_bomb() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='{i}'")).collect::<String>();
    let e = stanza_after_header(&format!("<m{}/>", attrs(32)));
    assert_eq!(e.attrs.len(), 32);
    assert_eq!(e.attr("a31"), Some("31"));
    assert_eq!(
        in_stream_err(&format!("<m{}/>", attrs(33))).condition(),
        "policy-violation"
    );
    assert_eq!(
        in_stream_err(&format!("<m><n{}></n></m>", attrs(1000))).condition(),
        "policy-violation"
    );
}

// ---------------------------------------------------------------- restricted XML

#[test]
fn billion_laughs_is_refused_before_expansion() {
    let doc = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
               <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
               <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
               <message><body>&lol2;</body></message>";
    assert_eq!(err(doc.as_bytes()).condition(), "restricted-xml");
    assert_in_stream_err("<!DOCTYPE x>", "restricted-xml");
    assert_in_stream_err("<m><!ENTITY x 'y'></m>", "restricted-xml");
}

#[test]
fn comments_pis_and_entities_are_restricted() {
    for body in [
        "<!-- hi -->",
        "<m><!-- hi --></m>",
        "<?foo bar?>",
        "<m><?xml version='1.0'?></m>",
        "<m>&foo;</m>",
        "<m a='&foo;'/>",
        "<m>&nbsp;</m>",
    ] {
        assert_in_stream_err(body, "restricted-xml");
    }
    assert_eq!(err(b"<!-- x -->").condition(), "restricted-xml");
    // Malformed references are not-well-formed rather than restricted.
    for body in [
        "<m>a & b</m>",
        "<m>&#xZZ;</m>",
        "<m>&#;</m>",
        "<m>&;</m>",
        "<m>&amp</m>",
    ] {
        assert_in_stream_err(body, "not-well-formed");
    }
}

// ---------------------------------------------------------------- characters

#[test]
fn invalid_utf8_is_not_well_formed() {
    let mut bad: Vec<Vec<u8>> = Vec::new();
    bad.push(b"<m>\xff</m>".to_vec());
    bad.push(b"<m>\xc0\xaf</m>".to_vec()); // overlong '/'
    bad.push(b"<m>\xed\xa0\x80</m>".to_vec()); // surrogate
    bad.push(b"<m>\xe2\x82</m>".to_vec()); // truncated, then ASCII
    bad.push(b"<m a='\xf0\x9f\x98'/>".to_vec());
    for b in bad {
        let mut input = HDR.as_bytes().to_vec();
        input.extend_from_slice(&b);
        assert_eq!(err(&input).condition(), "not-well-formed", "{b:?}");
    }
}

#[test]
fn multibyte_split_across_pushes() {
    let text = "\u{e9}\u{20AC}\u{1F600}";
    let input = format!("{HDR}<m>{text}</m>");
    let bytes = input.as_bytes();
    // Split inside the 4-byte character explicitly (byte-wise feeding is covered too).
    let cut = bytes.len() - 6;
    let mut f = Framer::new(XmlLimits::default());
    assert!(f.push(&bytes[..cut]).is_ok());
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
    assert_eq!(f.next_frame(), Ok(None));
    assert!(f.push(&bytes[cut..]).is_ok());
    let m = f.next_frame();
    assert_eq!(
        m,
        Ok(Some(Frame::Stanza(
            Element::new("m", NS_CLIENT).with_text(text)
        )))
    );
    assert_eq!(stanza_after_header(&format!("<m>{text}</m>")).text(), text);
}

#[test]
fn control_characters_are_not_well_formed() {
    for body in [
        "<m>\u{1}</m>",
        "<m a='\u{0}'/>",
        "<m>\u{8}</m>",
        "<m>\u{1F}</m>",
        "<m>\u{FFFE}</m>",
        "<m>\u{FFFF}</m>",
        "<m>&#1;</m>",
        "<m>&#0;</m>",
        "<m>&#xFFFE;</m>",
        "<m>&#xD800;</m>",
        "<m>&#x110000;</m>",
        "<m a='&#x1b;'/>",
    ] {
        assert_eq!(
            in_stream_err(body).condition(),
            "not-well-formed",
            "{body:?}"
        );
    }
    // Control characters between stanzas too.
    assert_in_stream_err("<a/>\u{0}", "not-well-formed");
    // Allowed whitespace controls and references.
    let e = stanza_after_header("<m a='&#9;x&#10;'>\t&#13;&#x1F600;</m>");
    assert_eq!(e.attr("a"), Some("\tx\n"));
    assert_eq!(e.text(), "\t\r\u{1F600}");
}

#[test]
fn line_ends_and_attribute_whitespace_are_normalised() {
    let e = stanza_after_header("<m a='x\r\ny\tz\nw'>a\r\nb\rc<![CDATA[d\r\ne]]></m>");
    assert_eq!(e.attr("a"), Some("x y z w"));
    assert_eq!(e.text(), "a\nb\ncd\ne");
}

// ---------------------------------------------------------------- well-formedness

#[test]
fn mismatched_tags() {
    for body in [
        "<a></b>",
        "<a><b></a></b>",
        "<a><b></c></a>",
        "<p:a xmlns:p='u' xmlns:q='u'></q:a>",
        "<a x='1' y></a>",
        "<a x=1/>",
        "<a x='1'y='2'/>",
        "<a <b/>",
        "<a></a x>",
    ] {
        assert_in_stream_err(body, "not-well-formed");
    }
}

/// Push `chunks` one after another after the header; the first error, if any, with the
/// number of stanzas that came out before it.
fn push_chunks(chunks: &[&[u8]]) -> (usize, Option<XmlError>) {
    let mut f = Framer::new(XmlLimits::default());
    let mut n = 0;
    for chunk in std::iter::once(HDR.as_bytes()).chain(chunks.iter().copied()) {
        if let Err(e) = f.push(chunk) {
            return (n, Some(e));
        }
        loop {
            match f.next_frame() {
                Ok(Some(Frame::Stanza(_))) => n += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return (n, Some(e)),
            }
        }
    }
    (n, None)
}

#[test]
fn mismatched_end_tag_is_an_error_at_once() {
    // Nothing after the mismatch: the error must not wait for the stanza to "complete".
    let (n, e) = push_chunks(&[b"<message><body></message>"]);
    assert_eq!(n, 0);
    let e = e.expect("mismatch reported at once");
    assert_eq!(e.condition(), "not-well-formed", "{e}");
    assert!(e.to_string().contains("</message>"), "{e}");
    // Later stanzas are not swallowed into the broken one: the stream is dead at once.
    let (n, e) = push_chunks(&[b"<message><body></message>", b"<presence/>", b"<iq/>"]);
    assert_eq!((n, e.map(|e| e.condition())), (0, Some("not-well-formed")));
    // A stanza before the broken one is delivered.
    let (n, e) = push_chunks(&[b"<presence/><a><b><c></c></a>"]);
    assert_eq!((n, e.map(|e| e.condition())), (1, Some("not-well-formed")));
}

#[test]
fn mismatched_prefixed_end_tag_is_an_error_at_once() {
    for body in [
        &b"<a:b xmlns:a='u'></a:c>"[..],
        b"<a:b xmlns:a='u' xmlns:c='u'></c:b>",
        b"<x><a:b xmlns:a='u'></b></x>",
        b"<x><b></a:b>",
        // Same hash-unfriendly near misses: prefix, length, case, trailing bytes.
        b"<x><body></bodyx>",
        b"<x><body></bod>",
        b"<x><Body></body>",
    ] {
        let (_, e) = push_chunks(&[body]);
        let e = e.unwrap_or_else(|| panic!("no error for {}", String::from_utf8_lossy(body)));
        assert_eq!(e.condition(), "not-well-formed", "{e}");
    }
    // Whitespace before `>` in the end tag and attributes on the start tag are fine.
    let (n, e) = push_chunks(&[b"<a:b xmlns:a='u'><c x='1'\n/><d\ty='2'></d\n></a:b >"]);
    assert_eq!((n, e), (1, None));
}

#[test]
fn mismatched_end_tag_split_across_reads_is_an_error() {
    let input = b"<message><body>hi</message>";
    for cut in 1..input.len() {
        let (head, tail) = input.split_at(cut);
        let (n, e) = push_chunks(&[head, tail]);
        assert_eq!(
            (n, e.map(|e| e.condition())),
            (0, Some("not-well-formed")),
            "cut at {cut}"
        );
    }
    // Byte by byte.
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (n, e) = push_chunks(&bytes);
    assert_eq!((n, e.map(|e| e.condition())), (0, Some("not-well-formed")));
    // The compaction between pushes keeps the recorded names valid: a stanza before the
    // broken one is drained (and its bytes dropped) before the mismatch arrives.
    let (n, e) = push_chunks(&[
        b"<presence/><message><bo",
        b"dy>x</body><su",
        b"bject></body>",
    ]);
    assert_eq!((n, e.map(|e| e.condition())), (1, Some("not-well-formed")));
}

#[test]
fn stream_close_tag_mismatch_at_depth_zero() {
    for close in [
        "</stream>",
        "</stream:streamx>",
        "</x:stream>",
        "</message>",
    ] {
        let (n, e) = push_chunks(&[b"<presence/>", close.as_bytes()]);
        assert_eq!(
            (n, e.map(|e| e.condition())),
            (1, Some("not-well-formed")),
            "{close}"
        );
    }
    let frames = ok(&format!("{HDR}<presence/></stream:stream >"));
    assert_eq!(frames.last(), Some(&Frame::Close));
}

#[test]
fn deep_correct_nesting_still_works() {
    let limits = XmlLimits {
        max_depth: MAX_DEPTH_CAP,
        ..XmlLimits::default()
    };
    let mut body = String::new();
    for i in 0..MAX_DEPTH_CAP {
        body.push_str(&format!(
            "<p{}:e{i} xmlns:p{}='urn:{i}' a='{i}'>",
            i % 3,
            i % 3
        ));
    }
    body.push_str("text");
    for i in (0..MAX_DEPTH_CAP).rev() {
        body.push_str(&format!("</p{}:e{i}>", i % 3));
    }
    let t = format!("{HDR}{body}{body}<presence/></stream:stream>");
    let frames = feed_all(&limits, t.as_bytes()).expect("deep nesting is well-formed");
    assert_eq!(stanzas(&frames).len(), 3);
    // One level too deep is still refused for depth, not for the names.
    assert_too_deep_refused(&limits);
}

#[test]
fn random_splits_of_a_valid_stream_give_the_same_stanzas() {
    let mut t = HDR.to_owned();
    for i in 0..40 {
        t.push_str(&format!(
            "<message id='m{i}' to='a@b'><body>n{i} &amp; \u{263A}</body>\
             <x:y xmlns:x='urn:x'><x:z a='/>'/><![CDATA[</x:y>]]></x:y></message>\n\
             <iq id='q{i}'><query xmlns='jabber:iq:roster'><item jid='j{i}@b'><group>g</group>\
             </item></query></iq><presence/>"
        ));
    }
    t.push_str("</stream:stream>");
    let want = feed_sizes(XmlLimits::default(), t.as_bytes(), || usize::MAX).expect("valid");
    assert_eq!(stanzas(&want).len(), 120);
    for seed in 0..200u64 {
        let max = [2, 7, 31, 257, 4096][usize::try_from(seed % 5).unwrap_or(0)];
        let got = feed_sizes(XmlLimits::default(), t.as_bytes(), lcg(seed, max))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn unbound_prefix_and_illegal_declarations() {
    for body in [
        "<foo:bar/>",
        "<a><foo:bar/></a>",
        "<a foo:x='1'/>",
        "<a xmlns:p=''/>",
        "<a xmlns:xmlns='u'/>",
        "<a xmlns:xml='urn:not-xml'/>",
        "<a xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "<xmlns:a/>",
        "<a><p:b xmlns:p='u'/><p:c/></a>",
    ] {
        assert_in_stream_err(body, "not-well-formed");
    }
}

#[test]
fn duplicate_attributes() {
    assert_in_stream_err("<a x='1' x='2'/>", "not-well-formed");
    assert_in_stream_err(
        "<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>",
        "not-well-formed",
    );
    // Same local name in different namespaces is fine.
    let e = stanza_after_header("<a xmlns:p='u' x='1' p:x='2'/>");
    assert_eq!(e.attr("x"), Some("1"));
    assert_eq!(e.attr("{u}x"), Some("2"));
}

#[test]
fn namespace_resolution() {
    let e = stanza_after_header(
        "<iq xml:lang='de'><p:q xmlns:p='urn:p' p:a='1' b='2'><r/><s xmlns='urn:s'><t/></s>\
         <u xmlns=''/><stream:features/></p:q></iq>",
    );
    assert!(e.is("iq", NS_CLIENT));
    assert_eq!(e.attrs, vec![("xml:lang".to_owned(), "de".to_owned())]);
    let q = e
        .child("q", "urn:p")
        .cloned()
        .unwrap_or_else(|| Element::new("", ""));
    // No xmlns declarations in attrs.
    assert_eq!(
        q.attrs,
        vec![
            ("{urn:p}a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned())
        ]
    );
    // Prefix declaration does not change the default namespace.
    assert!(q.child("r", NS_CLIENT).is_some());
    assert!(
        q.child("s", "urn:s")
            .and_then(|s| s.child("t", "urn:s"))
            .is_some()
    );
    assert!(q.child("u", "").is_some());
    assert!(q.child("features", NS_STREAM).is_some());
}

// ---------------------------------------------------------------- restarts

#[test]
fn reset_and_pending_data() {
    let mut f = Framer::new(XmlLimits::default());
    let input = format!(
        "{HDR}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message><body>x</body></message>"
    );
    assert!(f.push(input.as_bytes()).is_ok());
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
    let st = f.next_frame();
    assert!(
        matches!(&st, Ok(Some(Frame::Stanza(e))) if e.is("starttls", "urn:ietf:params:xml:ns:xmpp-tls"))
    );
    assert!(f.has_pending(), "the pipelined message must be visible");
    assert!(f.buffered() > 0);
    f.reset();
    assert_eq!(f.buffered(), 0);
    assert!(!f.has_pending());
    assert_eq!(f.buffer_capacity(), 0);
    // A new stream, including a new XML declaration, is accepted after the reset.
    assert!(f.push(HDR.as_bytes()).is_ok());
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
    assert_eq!(f.next_frame(), Ok(None));
}

#[test]
fn has_pending_ignores_whitespace_and_counts_partial_data() {
    let mut f = Framer::new(XmlLimits::default());
    assert!(f.push(format!("{HDR}<a/> \n").as_bytes()).is_ok());
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Stanza(_)))));
    assert!(!f.has_pending());
    assert_eq!(f.next_frame(), Ok(None));
    assert!(f.push(b"<b").is_ok());
    assert!(f.has_pending());
    assert_eq!(f.next_frame(), Ok(None));
    assert_eq!(f.buffered(), 2);
}

#[test]
fn buffer_is_released_when_drained() {
    let mut f = Framer::new(XmlLimits::default());
    assert_eq!(f.buffer_capacity(), 0);
    let big = format!("{HDR}<m>{}</m>", "z".repeat(20_000));
    assert!(f.push(&big.as_bytes()[..10_000]).is_ok());
    while let Ok(Some(_)) = f.next_frame() {}
    assert!(f.push(&big.as_bytes()[10_000..]).is_ok());
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Stanza(_)))));
    assert_eq!(f.next_frame(), Ok(None));
    assert_eq!(f.buffered(), 0);
    assert_eq!(
        f.buffer_capacity(),
        0,
        "idle framer must not keep the buffer"
    );
    // Consumed data is compacted away: the buffer does not grow with the stream length.
    for _ in 0..1000 {
        assert!(f.push(b"<presence/> ").is_ok());
        while let Ok(Some(_)) = f.next_frame() {}
        assert!(f.buffer_capacity() <= 512);
    }
}

// ---------------------------------------------------------------- serialisation

fn round_trip(xml: &str) -> Element {
    let parsed = stanza_after_header(xml);
    let written = parsed.to_string_in_stream();
    let again = stanza_after_header(&written);
    assert_eq!(parsed, again, "round trip changed the tree via {written}");
    let mut plain = String::new();
    parsed.write_to(&mut plain, NS_CLIENT);
    assert_eq!(Element::parse(&plain), Ok(parsed.clone()));
    parsed
}

#[test]
fn round_trip_nested_namespaces() {
    let e = round_trip(
        "<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item>\
         <x xmlns='urn:x'>a&amp;b</x></item></publish></pubsub></iq>",
    );
    let x = e
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("publish", NS_PUBSUB))
        .and_then(|p| p.child("item", NS_PUBSUB))
        .and_then(|i| i.child("x", "urn:x"))
        .map(Element::text);
    assert_eq!(x, Some("a&b".to_owned()));
    let mut out = String::new();
    e.write_to(&mut out, NS_CLIENT);
    assert_eq!(
        out,
        "<iq><pubsub xmlns=\"http://jabber.org/protocol/pubsub\"><publish node=\"n\"><item>\
         <x xmlns=\"urn:x\">a&amp;b</x></item></publish></pubsub></iq>"
    );
}

#[test]
fn round_trip_escaping_and_prefixed_attributes() {
    round_trip("<m a='&lt;&amp;&gt;&quot;&apos;' b=\"'\">&lt;&amp;&gt;\"'</m>");
    round_trip("<m a='&#9;&#10;&#13;'>x&#13;y\nz</m>");
    round_trip(
        "<m xml:lang='en' xmlns:p='urn:p' xmlns:q='urn:q' p:a='1' q:b='2' p:c='3'>\
         <p:n p:d='4'/><o xmlns='' x='y'><z xmlns='jabber:client'/></o></m>",
    );
    round_trip(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
    );
    round_trip("<m><![CDATA[<&>]]></m>");
    let e = Element::new("m", NS_CLIENT)
        .with_attr("a", "<&>\"'")
        .with_text("<&>\"'");
    let s = e.to_string_in_stream();
    assert_eq!(s, "<m a=\"&lt;&amp;&gt;&quot;&apos;\">&lt;&amp;&gt;\"'</m>");
    assert_eq!(Element::parse(&s), Ok(e));
}

#[test]
fn stream_namespace_serialisation() {
    let f = Element::new("features", NS_STREAM).with_child(Element::new(
        "mechanisms",
        "urn:ietf:params:xml:ns:xmpp-sasl",
    ));
    assert_eq!(
        f.to_string_in_stream(),
        "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/></stream:features>"
    );
    let mut out = String::new();
    f.write_to(&mut out, NS_CLIENT);
    assert_eq!(
        out,
        "<features xmlns=\"http://etherx.jabber.org/streams\">\
         <mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/></features>"
    );
    // Children in the content namespace inside a stream-prefixed element need no xmlns.
    let e = Element::new("error", NS_STREAM).with_child(Element::new("x", NS_CLIENT));
    assert_eq!(e.to_string_in_stream(), "<stream:error><x/></stream:error>");
}

#[test]
fn escape_functions() {
    let mut t = String::new();
    escape_text("a<b>&c\"d'e\r\n", &mut t);
    assert_eq!(t, "a&lt;b&gt;&amp;c\"d'e&#13;\n");
    let mut a = String::new();
    escape_attr("a<b>&c\"d'e\t\n\r\u{e9}", &mut a);
    assert_eq!(a, "a&lt;b&gt;&amp;c&quot;d&apos;e&#9;&#10;&#13;\u{e9}");
}

// ---------------------------------------------------------------- element API

#[test]
fn element_api() {
    let mut e = Element::new("iq", NS_CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "1")
        .with_attr("type", "set")
        .with_text("a")
        .with_text("b")
        .with_child(Element::new("q", "urn:q"))
        .with_text("")
        .with_text("c");
    assert_eq!(e.attr("type"), Some("set"));
    assert_eq!(e.attrs.len(), 2);
    assert_eq!(e.text(), "abc");
    assert_eq!(e.children.len(), 3);
    assert!(e.child("q", "urn:q").is_some());
    assert!(e.child("q", NS_CLIENT).is_none());
    assert_eq!(e.elements().count(), 1);
    e.set_attr("to", "x");
    assert_eq!(e.attr("to"), Some("x"));
    assert_eq!(e.remove_attr("id"), Some("1".to_owned()));
    assert_eq!(e.remove_attr("id"), None);
    if let Some(q) = e.child_mut("q", "urn:q") {
        q.push_child(Element::new("r", "urn:q"));
        q.push_text("t");
    }
    assert_eq!(e.child("q", "urn:q").map(|q| q.elements().count()), Some(1));
    assert!(e.is("iq", NS_CLIENT) && !e.is("iq", "urn:q"));
    let small = Element::new("a", "");
    let before = e.heap_size();
    assert!(before > small.heap_size());
    e.push_text("x".repeat(1000));
    assert!(e.heap_size() >= before + 1000);
}

#[test]
fn element_parse_standalone() {
    let e = Element::parse("  <message to='x'><body>hi</body></message>\n");
    assert_eq!(
        e,
        Ok(Element::new("message", NS_CLIENT)
            .with_attr("to", "x")
            .with_child(Element::new("body", NS_CLIENT).with_text("hi")))
    );
    for (input, condition) in [
        ("<a/><b/>", "not-well-formed"),
        ("x<a/>", "not-well-formed"),
        ("", "not-well-formed"),
        ("<a>", "not-well-formed"),
        ("<a><!--c--></a>", "restricted-xml"),
        ("<a>\u{1}</a>", "not-well-formed"),
    ] {
        assert_eq!(
            Element::parse(input).map_err(|e| e.condition()),
            Err(condition),
            "{input:?}"
        );
    }
}

#[test]
fn error_display_and_conditions() {
    let all = [
        (XmlError::NotWellFormed("x".into()), "not-well-formed"),
        (XmlError::RestrictedXml("x".into()), "restricted-xml"),
        (XmlError::PolicyViolation("x".into()), "policy-violation"),
        (XmlError::InvalidNamespace("x".into()), "invalid-namespace"),
        (XmlError::UnsupportedEncoding, "unsupported-encoding"),
        (XmlError::BadFormat("x".into()), "bad-format"),
        (XmlError::InvalidXml("x".into()), "invalid-xml"),
    ];
    for (e, c) in all {
        assert_eq!(e.condition(), c);
        assert!(e.to_string().starts_with(c), "{e}");
    }
}

// ---------------------------------------------------------------- robustness

/// Outcome of a feed, for comparing chunkings of possibly invalid input: the frames when
/// everything was accepted, or `None` on any error.
fn outcome(limits: &XmlLimits, input: &[u8], size: impl FnMut() -> usize) -> Option<Vec<Frame>> {
    feed_sizes(limits.clone(), input, size).ok()
}

#[test]
fn mutated_transcripts_never_panic_and_ignore_chunking() {
    let base = format!(
        "{HDR}<message to='a@b' id=\"m>1\"><body>x &amp; y &#x263A;</body>\
         <x xmlns='urn:x' xmlns:p='urn:p' p:a='1'><p:y/><![CDATA[c<]]]></x></message>\
         \n<iq type='get'><query xmlns='jabber:iq:roster'/></iq> <presence/></stream:stream>"
    );
    let limits = XmlLimits {
        max_stanza_bytes: 200,
        max_depth: 4,
        max_attrs: 8,
        ..XmlLimits::default()
    };
    assert!(outcome(&limits, base.as_bytes(), || usize::MAX).is_some());
    const SPECIAL: &[u8] = b"<>/'\"=&;![]?- :x\x00\xff\xc3\xa9";
    let mut rnd = lcg(2024, 1 << 30);
    let mut accepted = 0;
    for _ in 0..400 {
        let mut input = base.clone().into_bytes();
        for _ in 0..(rnd() % 3 + 1) {
            let at = rnd() % input.len();
            match rnd() % 4 {
                0 => input[at] = SPECIAL[rnd() % SPECIAL.len()],
                1 => input[at] = (rnd() % 256) as u8,
                2 => {
                    input.remove(at);
                }
                _ => input.insert(at, SPECIAL[rnd() % SPECIAL.len()]),
            }
        }
        let whole = outcome(&limits, &input, || usize::MAX);
        let bytewise = outcome(&limits, &input, || 1);
        let random = outcome(&limits, &input, lcg(rnd() as u64, 40));
        assert_eq!(
            whole,
            bytewise,
            "input {:?}",
            String::from_utf8_lossy(&input)
        );
        assert_eq!(whole, random, "input {:?}", String::from_utf8_lossy(&input));
        if whole.is_some() {
            accepted += 1;
        }
    }
    // The mutations must exercise both outcomes.
    assert!(accepted > 10 && accepted < 390, "accepted {accepted}");
}

#[test]
fn accepted_stanzas_are_well_formed_for_quick_xml() {
    // Every accepted stanza, re-serialised, parses again to the same tree: the framer's
    // boundaries and the parser agree on random valid-ish input.
    let mut rnd = lcg(77, 1 << 30);
    let names = ["a", "b", "p:c", "d"];
    for _ in 0..200 {
        let mut s = String::from("<r xmlns:p='urn:p'>");
        let mut open: Vec<&str> = Vec::new();
        for _ in 0..(rnd() % 12) {
            match rnd() % 5 {
                0 if open.len() < 5 => {
                    let n = names[rnd() % names.len()];
                    s.push_str(&format!("<{n} k='v&lt;{}'>", rnd() % 10));
                    open.push(n);
                }
                1 => {
                    if let Some(n) = open.pop() {
                        s.push_str(&format!("</{n}>"));
                    }
                }
                2 => s.push_str("t&amp;>\u{e9}"),
                3 => s.push_str("<![CDATA[<x>]]>"),
                _ => s.push_str(&format!("<{}/>", names[rnd() % names.len()])),
            }
        }
        while let Some(n) = open.pop() {
            s.push_str(&format!("</{n}>"));
        }
        s.push_str("</r>");
        let e = round_trip(&s);
        assert!(e.is("r", NS_CLIENT));
    }
}

/// Found by the `element` fuzz target: `<xml:b/>` (an element in the permanently bound XML
/// namespace) was written as `<b xmlns="http://www.w3.org/XML/1998/namespace"/>`, which is
/// not well-formed, so relaying such a payload would have broken the recipients' streams.
#[test]
fn serialise_element_in_xml_namespace_keeps_xml_prefix() {
    let e = round_trip("<a><xml:b xml:lang='en'><c/>t</xml:b><d/></a>");
    let b = e.child("b", NS_XML).expect("xml:b");
    assert!(
        b.child("c", NS_CLIENT).is_some(),
        "children keep the default namespace"
    );
    let mut out = String::new();
    e.write_to(&mut out, NS_CLIENT);
    assert!(out.contains("<xml:b"), "{out}");
    assert!(out.contains("</xml:b>"), "{out}");
    assert!(!out.contains(NS_XML), "{out}");
}

/// Found by the `element` fuzz target: an attribute whose namespace URI contains `}` was
/// split at the first `}` of its `{uri}local` name, and written under an invalid name.
#[test]
fn serialise_attribute_namespace_with_brace_keeps_name() {
    let e = round_trip("<a><x xmlns:p='urn:p}}' p:k='v'/></a>");
    let x = e.child("x", NS_CLIENT).expect("x");
    assert_eq!(x.attr("{urn:p}}}k"), Some("v"));
}

// ---- the writer ----

#[test]
fn writer_escapes_attributes_and_text() {
    let mut s = String::new();
    let mut w = Writer::new(&mut s);
    w.start("m")
        .attr("a", "x'\"<>&\t\n\r")
        .attr_fmt("n", 42)
        .attr_fmt("d", format_args!("{}<{}", 1, 2))
        .text("a<b & c>d\r")
        .text_fmt(format_args!("'{}'", "<"))
        .end();
    assert_eq!(
        s,
        "<m a='x&apos;&quot;&lt;&gt;&amp;&#9;&#10;&#13;' n='42' d='1&lt;2'>\
         a&lt;b &amp; c&gt;d&#13;'&lt;'</m>"
    );
}

#[test]
fn writer_nests_and_writes_empty_elements() {
    let mut s = String::from("x");
    let mut w = Writer::new(&mut s);
    w.start("iq")
        .attr("type", "result")
        .attr_opt("to", None)
        .attr_opt("from", Some("s"));
    w.start("pubsub").ns(NS_PUBSUB);
    w.start("items").attr("node", "n");
    w.start("item").attr("id", "1").end();
    w.text_elem("t", "");
    w.end_all();
    assert_eq!(
        s,
        "x<iq type='result' from='s'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='n'><item id='1'/><t></t></items></pubsub></iq>"
    );
    // What it writes parses back to the same text and attributes.
    let e = Element::parse(&s[1..]).expect("parse");
    assert_eq!(e.attr("from"), Some("s"));
    assert_eq!(
        e.child("pubsub", NS_PUBSUB)
            .and_then(|p| p.child("items", NS_PUBSUB))
            .and_then(|i| i.attr("node")),
        Some("n")
    );
}

#[test]
fn writer_round_trips_escaped_values() {
    let nasty = "a'b\"c<d>e&f\tg\nh\ri";
    let mut s = String::new();
    Writer::new(&mut s)
        .start("m")
        .attr("v", nasty)
        .text(nasty)
        .end();
    let e = Element::parse(&s).expect("parse");
    assert_eq!(e.attr("v"), Some(nasty));
    assert_eq!(e.text(), nasty);
}

#[test]
fn writer_inserts_raw_xml_unescaped() {
    let payload = "<p xmlns=\"u\">1 &lt; 2</p>";
    let mut s = String::new();
    let mut w = Writer::new(&mut s);
    w.start("item").attr("id", "i").raw(Raw(payload)).end();
    assert_eq!(s, "<item id='i'><p xmlns=\"u\">1 &lt; 2</p></item>");
    // Raw as the only content of an element still closes its start tag.
    let mut s = String::new();
    Writer::new(&mut s).start("a").raw(Raw("")).end();
    assert_eq!(s, "<a></a>");
}

#[test]
fn writer_leaves_open_and_closes_separately() {
    let mut head = String::new();
    let mut w = Writer::new(&mut head);
    w.start("message").attr("to", "a&b");
    w.start("event").ns("urn:e");
    w.leave_open();
    let mut tail = String::new();
    Writer::new(&mut tail).close("event").close("message");
    assert_eq!(head, "<message to='a&amp;b'><event xmlns='urn:e'>");
    assert_eq!(tail, "</event></message>");

    let mut s = String::new();
    let mut w = stream_header(&mut s);
    w.attr("to", "example.com");
    w.leave_open();
    s.push_str(STREAM_CLOSE);
    assert_eq!(
        s,
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='example.com'>\
         </stream:stream>"
    );
}

#[test]
#[should_panic(expected = "without an open element")]
fn writer_end_without_start_panics() {
    let mut s = String::new();
    Writer::new(&mut s).end();
}

#[test]
fn writer_attr_raw_inserts_a_value_escaped_beforehand() {
    let mut escaped = String::new();
    crate::xml::escape_attr("a'b&c", &mut escaped);
    let s = crate::xml::build(|w| {
        w.start("m")
            .attr_raw("from", crate::xml::Raw(&escaped))
            .attr("to", "a'b&c")
            .end();
    });
    assert_eq!(s, "<m from='a&apos;b&amp;c' to='a&apos;b&amp;c'/>");
}
