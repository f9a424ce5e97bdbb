//! XEP-0198 with clients nobody here wrote: slixmpp's `xep_0198` plugin
//! (`tests/interop/slixmpp_sm.py`) and aioxmpp's stream management
//! (`tests/interop/aioxmpp_sm.py`). Each script subscribes through a relay that it cuts
//! without a stream close (`tests/interop/cutlink.py`: both legs reset, or only the
//! client's with the server writing into the dead link), publishes during the cut with a
//! second client, lets the client resume on its own, and prints a JSON summary, on which
//! these tests assert: resumed (not bound anew), every item exactly once and in order.
//! Same Python and `KINGLET_SKIP_INTEROP` convention as `interop.rs`.

use super::interop::{python, run_script};
use super::{Daemon, Options};

/// A short resumption window (the scripts resume within a second or two), and a send
/// window of 16 stanzas, so that the server asks for acknowledgements on its own (at 8
/// unacknowledged) during the scripts' 12 live items, while the 3 + 10 items around and
/// during the cut fit the detached queue.
const C2S: &str = "resume_timeout_secs = 20\ndetached_max_stanzas = 16\n";

/// Items the scripts publish during the cut, after the resumption, and in all (their
/// defaults: 12 live, 3 just before the cut, 10 during it, 3 after the resumption).
const DURING: usize = 10;
const AFTER: usize = 3;
const TOTAL: usize = 28;

/// Runs `script` with `--cut cut` and `extra` arguments against a fresh daemon and checks
/// its summary, where `max` is the resumption window `<enabled/>` must give; returns it for
/// client-specific checks (`None` with `KINGLET_SKIP_INTEROP`).
fn resumes_after_cut(script: &str, cut: &str, extra: &[&str], max: u64) -> Option<(Json, Daemon)> {
    python()?;
    let d = Daemon::start(Options {
        c2s_extra: C2S,
        ..Options::default()
    });
    let args: Vec<&str> = ["--cut", cut].iter().chain(extra).copied().collect();
    let (success, text) = run_script(script, &d, d.port, &args)?;
    let fail = |why: &str| -> ! {
        panic!(
            "{script} --cut {cut}: {why}\n{text}\n--- server log ---\n{}",
            d.log()
        )
    };
    let Some(line) = text.lines().rev().find(|l| l.starts_with('{')) else {
        fail("no JSON summary")
    };
    let s = match Json::parse(line) {
        Ok(s) => s,
        Err(e) => fail(&format!("summary is not JSON: {e}")),
    };
    if !success || s.get("ok") != &Json::Bool(true) {
        fail(&format!("failed: {:?}", s.get("failure")));
    }
    assert_eq!(s.get("cut").str(), cut);
    // Negotiated: stream management with resumption, the configured window.
    for key in ["sm_enabled", "sm_id", "resume", "resumed", "in_order"] {
        assert_eq!(s.get(key), &Json::Bool(true), "{key}: {line}");
    }
    assert_eq!(s.get("max").num(), max, "<enabled max/>: {line}");
    // Every item once, in order, including those published while the link was down.
    let published = s.get("published").strings();
    let received = s.get("received").strings();
    assert_eq!(published.len(), TOTAL, "{line}");
    assert_eq!(received, published, "every item once, in order");
    assert_eq!(s.get("duplicates").num(), 0);
    assert_eq!(s.get("missing").num(), 0);
    assert_eq!(s.get("published_during_cut").num(), DURING as u64);
    // What the client had before the cut, and what came after it before the first new
    // item (redelivered unacknowledged stanzas and the detached queue), add up.
    let before = s.get("received_at_cut").num();
    let redelivered = s.get("redelivered").num();
    assert!(
        redelivered >= DURING as u64 && before + redelivered == (TOTAL - AFTER) as u64,
        "{before} before the cut, {redelivered} redelivered: {line}"
    );
    // Acknowledgements both ways: the server asked on its own schedule, and answered.
    assert!(s.get("server_ack_requests").num() >= 1, "{line}");
    assert!(s.get("server_acks").num() >= 2, "{line}");
    // The old connection and the resuming one (held by the relay until the link was back).
    assert_eq!(s.get("accepted_connections").num(), 2, "{line}");
    let log = d.log();
    assert!(
        log.contains("session resumed jid=alice@localhost/sm"),
        "the server resumed the session:\n{log}"
    );
    let binds = log
        .lines()
        .filter(|l| l.contains("resource bound") && l.contains("jid=alice@localhost/sm"))
        .count();
    assert_eq!(binds, 1, "no second bind:\n{log}");
    Some((s, d))
}

fn slixmpp(cut: &str) {
    // The plugin asks for no window: it gets c2s.resume_timeout_secs.
    let Some((s, _d)) = resumes_after_cut("slixmpp_sm.py", cut, &[], 20) else {
        return;
    };
    assert_eq!(s.get("client").str(), "slixmpp");
    // The plugin resumed: one bind and one session_start in all (the first login).
    assert_eq!(s.get("binds").num(), 1);
    assert_eq!(s.get("session_starts").num(), 1);
}

fn aioxmpp(cut: &str) {
    // A shorter window than the server's is honoured (XEP-0198 §5, `max`).
    let extra = ["--resumption-timeout", "15"];
    let Some((s, _d)) = resumes_after_cut("aioxmpp_sm.py", cut, &extra, 15) else {
        return;
    };
    assert_eq!(s.get("client").str(), "aioxmpp");
    let ev = s.get("stream_events");
    assert_eq!(ev.get("established").num(), 1, "established once");
    assert_eq!(ev.get("suspended").num(), 1);
    assert_eq!(ev.get("resumed").num(), 1);
    assert_eq!(ev.get("destroyed").num(), 0, "state never lost");
}

/// Both legs of the link reset: the server detaches the session and queues the items.
#[test]
fn slixmpp_xep0198_resumes_after_a_reset_link() {
    slixmpp("reset");
}

/// Only the client's leg dies: the server writes the items into the dead link until the
/// client resumes on a new connection (the old one is closed with `conflict`).
#[test]
fn slixmpp_xep0198_resumes_after_a_silent_link() {
    slixmpp("silent");
}

#[test]
fn aioxmpp_xep0198_resumes_after_a_reset_link() {
    aioxmpp("reset");
}

#[test]
fn aioxmpp_xep0198_resumes_after_a_silent_link() {
    aioxmpp("silent");
}

/// A JSON value: just enough of RFC 8259 to read the scripts' summaries.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    /// The member `key` of an object (`Null` if absent).
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&Json::Null, |e| &e.1),
            _ => &Json::Null,
        }
    }

    fn num(&self) -> u64 {
        match self {
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as u64,
            other => panic!("not a count: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn strings(&self) -> Vec<&str> {
        match self {
            Json::Arr(a) => a.iter().map(Json::str).collect(),
            other => panic!("not an array: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// Skips white space, then `c` if it comes next.
    fn punct(&mut self, c: u8) -> bool {
        self.ws();
        let next = self.s.get(self.i) == Some(&c);
        if next {
            self.i += 1;
        }
        next
    }

    fn eat(&mut self, lit: &str) -> bool {
        let end = self.i + lit.len();
        if self.s.get(self.i..end) == Some(lit.as_bytes()) {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 32 {
            return Err("nested too deep".into());
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => self
                .members(b'}', |p| {
                    p.ws();
                    let k = p.string()?;
                    if !p.punct(b':') {
                        return Err(format!("':' expected at {}", p.i));
                    }
                    Ok((k, p.value(depth + 1)?))
                })
                .map(Json::Obj),
            Some(b'[') => self.members(b']', |p| p.value(depth + 1)).map(Json::Arr),
            Some(b'"') => self.string().map(Json::Str),
            _ if self.eat("true") => Ok(Json::Bool(true)),
            _ if self.eat("false") => Ok(Json::Bool(false)),
            _ if self.eat("null") => Ok(Json::Null),
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| format!("value expected at {start}"))
            }
        }
    }

    /// The members of an object or array, each read by `member`, from its opening bracket
    /// (the next byte) to `close`, separated by commas.
    fn members<T>(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.i += 1;
        let mut all = Vec::new();
        if self.punct(close) {
            return Ok(all);
        }
        loop {
            all.push(member(self)?);
            if self.punct(close) {
                return Ok(all);
            }
            if !self.punct(b',') {
                return Err(format!("',' or '{}' expected at {}", close as char, self.i));
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return Err(format!("string expected at {}", self.i));
        }
        let mut out = String::new();
        loop {
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|c| *c != b'"' && *c != b'\\')
            {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?);
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = *self.s.get(self.i + 1).ok_or("unterminated escape")?;
                    self.i += 2;
                    match c {
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let u = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            // Surrogates (characters beyond the BMP) only matter for
                            // display here: they become U+FFFD.
                            out.push(char::from_u32(u).unwrap_or('\u{fffd}'));
                        }
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        other => out.push(other as char),
                    }
                }
                _ => return Err("unterminated string".into()),
            }
        }
    }
}

#[test]
fn json_summary_parser() {
    let v = Json::parse(
        r#"{"a": [1, "x\"y", true, null], "b": {"c": 2.0}, "s": "caf\u00e9\n", "e": []}"#,
    )
    .unwrap();
    assert_eq!(v.get("b").get("c").num(), 2);
    assert_eq!(v.get("s").str(), "café\n");
    assert_eq!(
        v.get("a"),
        &Json::Arr(vec![
            Json::Num(1.0),
            Json::Str("x\"y".into()),
            Json::Bool(true),
            Json::Null
        ])
    );
    assert_eq!(v.get("e").strings(), Vec::<&str>::new());
    assert_eq!(v.get("missing"), &Json::Null);
    for bad in ["", "{", "[1,]", "{\"a\" 1}", "\"open", "[1] 2", "tru"] {
        assert!(Json::parse(bad).is_err(), "{bad:?}");
    }
}
