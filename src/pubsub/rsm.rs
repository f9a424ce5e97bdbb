//! XEP-0059 Result Set Management: the one paging type of the pub-sub service, and the one
//! parser of counts a peer sends.
//!
//! Every paged reply (disco#items of the service, of a collection and of a node; items of a
//! leaf; items of a collection) goes through here, so the paging rules and their bounds
//! live in one place:
//!
//! * [`Page::parse`] reads the client's `<set/>` once. `<max/>` and `<index/>` are
//!   non-negative integers of any size ([`parse_count`]): anything else (negative, empty,
//!   `1.5`, `0x10`) is `bad-request`. `<max/>` (or its absence) is clamped to
//!   `limits.pubsub_max_page_items`, which XEP-0059 allows (the responder may return fewer).
//! * [`Page::window`] turns the request into a [`Window`] over a result of known length:
//!   an unknown `<after/>`/`<before/>` id is `item-not-found` (XEP-0059 §2.5), an index at
//!   or past the end is an empty page (§2.6), and the bounds always satisfy
//!   `lo <= hi <= count`.
//! * The call sites slice with [`Window::slice`], shrink the window to the reply budget with
//!   [`Window::fit`] and describe it with [`Window::set_xml`]; they do no index arithmetic.
//!
//! Precedence when a request combines them (XEP-0059 leaves it open): `<before/>` wins over
//! `<after/>`, which wins over `<index/>`.

use super::{NS_RSM, PubSubError};
use crate::xml::Element;
use crate::xml::Writer;

/// A count or index sent by a peer, as text: optional surrounding whitespace, an optional
/// `+` (an `xs:int` may carry one), then at least one ASCII digit and nothing else.
/// Values beyond `u64::MAX` saturate: every caller either compares the value with a bound
/// (and refuses it, as numeric configuration fields do) or clamps it to a length or a limit
/// (RSM, `max_items`), so "more than there can ever be" is all such a value can mean.
/// `None` for a sign, an empty string, a fraction, an exponent or any other character.
pub(super) fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// [`parse_count`] as a length: saturated to `usize::MAX`, so a count only ever clamps and
/// behaves the same on 32- and 64-bit targets.
pub(super) fn parse_len(s: &str) -> Option<usize> {
    parse_count(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Where a requested page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Anchor {
    /// No `<after/>`, `<before/>` or `<index/>`: the first page.
    Start,
    /// `<after>uid</after>`: the entries following this one.
    After(String),
    /// `<before>uid</before>`: the entries preceding this one; empty: the last page.
    Before(String),
    /// `<index>n</index>`: the entries from position `n` (saturated; past the end is empty).
    Index(usize),
}

/// A client's XEP-0059 request, validated and clamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Page {
    /// Most entries wanted: `<max/>` clamped to the page limit; the limit without `<max/>`.
    max: usize,
    anchor: Anchor,
}

impl Page {
    /// Reads an RSM `<set/>`. `page_limit` is `limits.pubsub_max_page_items`.
    ///
    /// # Errors
    ///
    /// `bad-request` when `<max/>` or `<index/>` is not a non-negative integer.
    pub(super) fn parse(set: &Element, page_limit: usize) -> Result<Page, PubSubError> {
        let num = |name: &str| -> Result<Option<usize>, PubSubError> {
            set.child(name, NS_RSM)
                .map(|e| {
                    parse_len(&e.text()).ok_or(PubSubError::BadRequest(
                        "RSM numbers are non-negative integers",
                    ))
                })
                .transpose()
        };
        let max = num("max")?.map_or(page_limit, |m| m.min(page_limit));
        let index = num("index")?;
        let anchor = match (
            set.child("before", NS_RSM),
            set.child("after", NS_RSM),
            index,
        ) {
            (Some(b), _, _) => Anchor::Before(b.text()),
            (None, Some(a), _) => Anchor::After(a.text()),
            (None, None, Some(i)) => Anchor::Index(i),
            (None, None, None) => Anchor::Start,
        };
        Ok(Page { max, anchor })
    }

    /// The requested window over the result whose unique ids, in order, are `ids`.
    ///
    /// # Errors
    ///
    /// `item-not-found` when `<after/>` or a non-empty `<before/>` names no entry
    /// (XEP-0059 §2.5).
    pub(super) fn window(&self, ids: &[&str]) -> Result<Window, PubSubError> {
        let count = ids.len();
        let pos = |id: &str| {
            ids.iter()
                .position(|e| *e == id)
                .ok_or(PubSubError::ItemNotFound)
        };
        let lo = match &self.anchor {
            Anchor::Before(b) => {
                let hi = if b.is_empty() { count } else { pos(b)? };
                return Ok(Window {
                    lo: hi.saturating_sub(self.max),
                    hi,
                    count,
                    from_end: true,
                });
            }
            // `pos < count`, so this never saturates; it stays at most `count`.
            Anchor::After(a) => pos(a)?.saturating_add(1),
            Anchor::Index(i) => *i,
            Anchor::Start => 0,
        };
        // XEP-0059 §2.6: an index at or past the end is an empty page.
        let lo = lo.min(count);
        Ok(Window {
            lo,
            hi: lo.saturating_add(self.max).min(count),
            count,
            from_end: false,
        })
    }
}

/// A checked page `[lo, hi)` over a result of `count` entries: `lo <= hi <= count` holds for
/// every window (the only constructors are [`Window::all`], [`Page::window`] and
/// [`Window::fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    lo: usize,
    hi: usize,
    count: usize,
    /// Paging backwards (`<before/>`): a size cut keeps the end of the window.
    from_end: bool,
}

impl Window {
    /// The whole result (no RSM request).
    pub(super) fn all(count: usize) -> Window {
        Window {
            lo: 0,
            hi: count,
            count,
            from_end: false,
        }
    }

    /// Whether the window covers the whole result (a reply that is not cut).
    pub(super) fn is_whole(&self) -> bool {
        self.lo == 0 && self.hi == self.count
    }

    /// The window's entries of `all`, the result it was made for (`all.len() == count`).
    pub(super) fn slice<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        debug_assert_eq!(all.len(), self.count, "a window over another result");
        all.get(self.lo..self.hi).unwrap_or(&[])
    }

    /// Shrinks the window so that the summed `cost` of its entries of `all` stays within
    /// `budget` (always keeping one entry), from its start, or from its end when paging
    /// backwards. Costs add up saturating.
    pub(super) fn fit<T>(self, all: &[T], budget: usize, cost: impl Fn(&T) -> usize) -> Window {
        let rows = self.slice(all);
        let mut used: usize = 0;
        let mut kept: usize = 0;
        let mut take = |row: &T| {
            let c = cost(row);
            if kept > 0 && used.saturating_add(c) > budget {
                return false;
            }
            used = used.saturating_add(c);
            kept += 1;
            true
        };
        if self.from_end {
            for row in rows.iter().rev() {
                if !take(row) {
                    break;
                }
            }
        } else {
            for row in rows {
                if !take(row) {
                    break;
                }
            }
        }
        // `kept <= rows.len() == hi - lo`: the new bounds stay inside the old ones.
        let (lo, hi) = if self.from_end {
            (self.hi.saturating_sub(kept).max(self.lo), self.hi)
        } else {
            (self.lo, self.lo.saturating_add(kept).min(self.hi))
        };
        Window { lo, hi, ..self }
    }

    /// The XEP-0059 `<set/>` describing this page of `keys` (the result's unique ids): the
    /// first id with its index and the last id when the page is not empty, and the count.
    #[cfg(test)]
    pub(super) fn set_xml(&self, keys: &[&str]) -> String {
        crate::xml::build(|w| self.write_set(w, keys))
    }

    /// [`Window::set_xml`] into a writer.
    pub(super) fn write_set(&self, w: &mut Writer, keys: &[&str]) {
        w.start("set").ns(NS_RSM);
        let page = self.slice(keys);
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            w.start("first")
                .attr_fmt("index", self.lo)
                .text(first)
                .end();
            w.text_elem("last", last);
        }
        w.start("count").text_fmt(self.count).end();
        w.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(inner: &str) -> Element {
        Element::parse(&format!("<set xmlns='{NS_RSM}'>{inner}</set>")).expect("set")
    }

    fn page(inner: &str, limit: usize) -> Result<Page, PubSubError> {
        Page::parse(&set(inner), limit)
    }

    fn bounds(w: Window) -> (usize, usize) {
        (w.lo, w.hi)
    }

    const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

    #[test]
    fn parse_count_accepts_digits_only_and_saturates() {
        assert_eq!(parse_count("0"), Some(0));
        assert_eq!(parse_count(" 42 "), Some(42));
        assert_eq!(parse_count("+7"), Some(7));
        assert_eq!(parse_count("007"), Some(7));
        assert_eq!(parse_count("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_count("18446744073709551616"), Some(u64::MAX));
        assert_eq!(parse_count(&"9".repeat(4096)), Some(u64::MAX));
        assert_eq!(parse_len("18446744073709551616"), Some(usize::MAX));
        assert_eq!(parse_len("-1"), None);
        for bad in [
            "", " ", "-1", "-0", "+", "++1", "+-1", "1.5", "1e3", "0x10", "1 2", "١",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn max_is_clamped_to_the_page_limit() {
        assert_eq!(
            page("<max>18446744073709551615</max>", 10).map(|p| p.max),
            Ok(10)
        );
        assert_eq!(page("<max>3</max>", 10).map(|p| p.max), Ok(3));
        assert_eq!(page("<max>0</max>", 10).map(|p| p.max), Ok(0));
        assert_eq!(page("", 10).map(|p| p.max), Ok(10));
        assert!(matches!(
            page("<max>-1</max>", 10),
            Err(PubSubError::BadRequest(_))
        ));
        assert!(matches!(
            page("<index></index>", 10),
            Err(PubSubError::BadRequest(_))
        ));
    }

    #[test]
    fn windows_stay_inside_the_result() {
        let w = |inner: &str, limit: usize| page(inner, limit).and_then(|p| p.window(&IDS));
        let max = "<max>18446744073709551615</max>";
        // Each row: the <set> content (`{max}` stands for the largest max), the page limit
        // and the window expected.
        let big = usize::MAX;
        let rows = [
            // The issue 10 repro: index 1 with the largest max.
            ("<index>1</index>{max}", big, Ok((1, 5))),
            ("<index>5</index>{max}", big, Ok((5, 5))),
            ("<index>18446744073709551615</index>{max}", big, Ok((5, 5))),
            ("<after>e</after>{max}", big, Ok((5, 5))),
            ("<after>a</after>{max}", big, Ok((1, 5))),
            ("<before/>{max}", big, Ok((0, 5))),
            ("<before>a</before>{max}", big, Ok((0, 0))),
            ("<before>d</before><max>2</max>", 10, Ok((1, 3))),
            ("<max>2</max>", 10, Ok((0, 2))),
            ("", 3, Ok((0, 3))),
            ("<after>zz</after>", 3, Err(PubSubError::ItemNotFound)),
            ("<before>zz</before>", 3, Err(PubSubError::ItemNotFound)),
            // Precedence: before, then after, then index.
            (
                "<before>c</before><after>a</after><index>4</index>",
                10,
                Ok((0, 2)),
            ),
            ("<after>a</after><index>4</index>", 10, Ok((1, 5))),
        ];
        for (inner, limit, expected) in rows {
            let inner = inner.replace("{max}", max);
            assert_eq!(w(&inner, limit).map(bounds), expected, "{inner}");
        }
        // An empty result.
        let empty = page(&format!("<index>1</index>{max}"), usize::MAX)
            .and_then(|p| p.window(&[]))
            .map(bounds);
        assert_eq!(empty, Ok((0, 0)));
    }

    #[test]
    fn fit_keeps_one_row_and_the_right_end() {
        let all = [10usize, usize::MAX, 10, 10, 10];
        let w = Window::all(5);
        assert_eq!(bounds(w.fit(&all, 25, |c| *c)), (0, 1));
        // Costs saturate: an unlimited budget keeps everything.
        assert_eq!(bounds(w.fit(&all, usize::MAX, |c| *c)), (0, 5));
        let back = Window {
            from_end: true,
            ..w
        };
        assert_eq!(bounds(back.fit(&all, 25, |c| *c)), (3, 5));
        assert_eq!(bounds(back.fit(&all, 0, |c| *c)), (4, 5));
        let empty = Window { lo: 5, hi: 5, ..w };
        assert_eq!(bounds(empty.fit(&all, 0, |c| *c)), (5, 5));
    }

    #[test]
    fn set_xml_describes_the_page() {
        let p = page("<index>1</index><max>2</max>", 10).expect("page");
        let w = p.window(&IDS).expect("window");
        assert_eq!(w.slice(&IDS), ["b", "c"]);
        assert_eq!(
            w.set_xml(&IDS),
            format!(
                "<set xmlns='{NS_RSM}'><first index='1'>b</first><last>c</last><count>5</count></set>"
            )
        );
        let past = page("<index>9</index>", 10)
            .and_then(|p| p.window(&IDS))
            .expect("window");
        assert!(past.slice(&IDS).is_empty());
        assert_eq!(
            past.set_xml(&IDS),
            format!("<set xmlns='{NS_RSM}'><count>5</count></set>")
        );
        assert!(Window::all(5).is_whole() && !w.is_whole());
    }
}
