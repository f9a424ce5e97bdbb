//! The little JSON the client needs, without a JSON crate: string escaping for `--format
//! json` output, and a strict validator (RFC 8259) that also minifies, for `pub --json`
//! payloads and for emitting an XEP-0335 container's JSON on one line.
//!
//! The validator is a recursive-descent scanner bounded by [`MAX_JSON_DEPTH`]; it never
//! builds a tree, only copies the input without insignificant whitespace.

/// Deepest accepted nesting of arrays and objects.
pub const MAX_JSON_DEPTH: usize = 64;

/// Appends `s` as a JSON string literal (with quotes) to `out`.
pub fn push_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Checks that `text` is one JSON value (surrounding whitespace allowed) and returns it
/// without insignificant whitespace.
///
/// # Errors
///
/// A message with the byte offset of the first problem.
pub fn minify(text: &str) -> Result<String, String> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
        out: String::with_capacity(text.len()),
        src: text,
    };
    p.ws();
    p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(p.out)
}

/// Scanner state.
struct Parser<'a> {
    /// Input bytes.
    b: &'a [u8],
    /// Position.
    i: usize,
    /// Minified output.
    out: String,
    /// Input text (for copying valid UTF-8 slices).
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.i)
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_JSON_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b'"') => self.string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end")),
        }
    }

    fn container(&mut self, depth: usize, close: u8, object: bool) -> Result<(), String> {
        self.out.push(char::from(self.b[self.i]));
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.out.push(char::from(close));
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if object {
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected a string key"));
                }
                self.string()?;
                self.ws();
                if self.peek() != Some(b':') {
                    return Err(self.err("expected ':'"));
                }
                self.out.push(':');
                self.i += 1;
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.out.push(',');
                    self.i += 1;
                }
                Some(c) if c == close => {
                    self.out.push(char::from(close));
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or the closing bracket")),
            }
        }
    }

    fn string(&mut self) -> Result<(), String> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 1;
                        }
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("bad \\u escape"));
                            }
                            self.i += 5;
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
        // Both ends are ASCII quotes, so the slice lies on char boundaries.
        self.out.push_str(&self.src[start..self.i]);
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.out.push_str(word);
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected true, false or null"))
        }
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - s
    }

    fn number(&mut self) -> Result<(), String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("bad number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("bad number fraction"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("bad number exponent"));
            }
        }
        self.out.push_str(&self.src[start..self.i]);
        Ok(())
    }
}
