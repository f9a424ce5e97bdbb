//! The catch-up planner against a fake node (XEP-0059 `<before/>` paging as Kinglet's
//! service does it, or no RSM at all), and the duplicate filter.

use std::time::{Duration, Instant};

use super::*;
use crate::pubsub::{NS_PUBSUB, NS_RSM};

/// An item as `sub` would have printed it.
fn item(id: &str, v: &str) -> Item {
    let payload = Element::parse(&format!("<v xmlns='urn:x'>{v}</v>")).expect("payload");
    Item {
        node: "n".to_owned(),
        id: id.to_owned(),
        publisher: None,
        published: None,
        payload: Some(payload.clone()),
        element: Element::new("item", NS_PUBSUB)
            .with_attr("id", id)
            .with_child(payload),
    }
}

/// A node's stored items, oldest first, as (id, value).
struct FakeNode {
    items: Vec<(String, String)>,
    /// Answer without RSM (a server that ignores `<set/>`).
    no_rsm: bool,
    /// Requests answered.
    requests: usize,
}

impl FakeNode {
    fn new(n: usize) -> FakeNode {
        FakeNode {
            items: (1..=n).map(|i| (format!("i{i}"), format!("{i}"))).collect(),
            no_rsm: false,
            requests: 0,
        }
    }

    /// Answers an items request like Kinglet (§6.5 with XEP-0059 `<before/>`): the `max`
    /// items before the anchor (the last ones for an empty anchor), `item-not-found` for an
    /// unknown anchor.
    fn answer(&mut self, body: &str) -> Result<Element, &'static str> {
        self.requests += 1;
        let req = Element::parse(body).expect("request parses");
        assert!(req.is("pubsub", NS_PUBSUB));
        assert_eq!(
            req.child("items", NS_PUBSUB).and_then(|i| i.attr("node")),
            Some("n")
        );
        let set = req.child("set", NS_RSM).expect("an RSM request");
        let max: usize = set
            .child("max", NS_RSM)
            .map(|m| m.text().parse().expect("max"))
            .expect("max");
        assert_eq!(max, CATCH_UP_PAGE as usize);
        let before = set.child("before", NS_RSM).expect("before").text();
        let (lo, hi) = if self.no_rsm {
            (0, self.items.len())
        } else {
            let hi = if before.is_empty() {
                self.items.len()
            } else {
                self.items
                    .iter()
                    .position(|(id, _)| *id == before)
                    .ok_or("item-not-found")?
            };
            (hi.saturating_sub(max), hi)
        };
        let mut xml = format!("<iq type='result'><pubsub xmlns='{NS_PUBSUB}'><items node='n'>");
        for (id, v) in &self.items[lo..hi] {
            xml.push_str(&format!("<item id='{id}'><v xmlns='urn:x'>{v}</v></item>"));
        }
        xml.push_str("</items>");
        if !self.no_rsm {
            xml.push_str(&format!("<set xmlns='{NS_RSM}'>"));
            if hi > lo {
                xml.push_str(&format!(
                    "<first index='{lo}'>{}</first><last>{}</last>",
                    self.items[lo].0,
                    self.items[hi - 1].0
                ));
            }
            xml.push_str(&format!("<count>{}</count></set>", self.items.len()));
        }
        xml.push_str("</pubsub></iq>");
        Ok(Element::parse(&xml).expect("reply parses"))
    }

    /// Runs a whole catch-up against this node.
    fn catch_up(&mut self, recent: &Recent) -> Outcome {
        let mut c = CatchUp::new("n");
        let mut step = c.start();
        for _ in 0..=MAX_CATCH_UP_PAGES {
            match step {
                Step::Done(o) => return o,
                Step::Request(body) => {
                    step = match self.answer(&body) {
                        Ok(reply) => c.on_reply(&reply, recent),
                        Err(cond) => c.on_error(cond).expect("a handled error"),
                    }
                }
            }
        }
        panic!("the catch-up did not end within its page bound");
    }
}

fn ids(o: &Outcome) -> Vec<&str> {
    o.items.iter().map(|i| i.id.as_str()).collect()
}

/// A `Recent` that printed items `from..=to` of a [`FakeNode`] live.
fn printed(from: usize, to: usize) -> Recent {
    let mut r = Recent::new();
    for i in from..=to {
        r.printed_live(&item(&format!("i{i}"), &format!("{i}")));
    }
    r
}

#[test]
fn missed_items_after_the_last_printed_in_publish_order() {
    let mut node = FakeNode::new(8);
    let o = node.catch_up(&printed(1, 5));
    assert_eq!(ids(&o), ["i6", "i7", "i8"]);
    assert_eq!(o.warning, None);
    assert_eq!(node.requests, 1);
    // Nothing missed.
    let mut node = FakeNode::new(5);
    let o = node.catch_up(&printed(1, 5));
    assert!(o.items.is_empty() && o.warning.is_none(), "{o:?}");
}

#[test]
fn a_long_gap_takes_several_pages() {
    let mut node = FakeNode::new(300);
    let o = node.catch_up(&printed(40, 49));
    let want: Vec<String> = (50..=300).map(|i| format!("i{i}")).collect();
    assert_eq!(ids(&o), want);
    assert_eq!(o.warning, None);
    assert_eq!(node.requests, 3);
}

#[test]
fn the_last_printed_retracted_uses_an_older_one() {
    let mut node = FakeNode::new(8);
    node.items.retain(|(id, _)| id != "i5");
    let o = node.catch_up(&printed(1, 5));
    assert_eq!(ids(&o), ["i6", "i7", "i8"]);
    assert_eq!(o.warning, None);
}

#[test]
fn everything_rotated_out_prints_all_stored_with_a_warning() {
    // max_items 3: i1..i5 printed, i6..i9 published during the cut; i7..i9 are stored.
    let mut node = FakeNode::new(9);
    node.items.drain(..6);
    let o = node.catch_up(&printed(1, 5));
    assert_eq!(ids(&o), ["i7", "i8", "i9"]);
    let w = o.warning.expect("a warning");
    assert!(
        w.contains("no longer stored") && w.contains("missed"),
        "{w}"
    );
}

#[test]
fn a_node_empty_at_the_start_prints_all_without_warning() {
    let mut recent = Recent::new();
    assert!(!recent.is_known());
    recent.note_start(None);
    assert!(recent.is_known() && recent.is_empty());
    let o = FakeNode::new(4).catch_up(&recent);
    assert_eq!(ids(&o), ["i1", "i2", "i3", "i4"]);
    assert_eq!(o.warning, None);
    // Started on a node whose newest item was i2 (noted, not printed).
    let mut recent = Recent::new();
    recent.note_start(Some(&item("i2", "2")));
    let o = FakeNode::new(4).catch_up(&recent);
    assert_eq!(ids(&o), ["i3", "i4"]);
}

#[test]
fn an_overwritten_id_with_a_new_payload_is_new() {
    // i3 was printed as "3", then republished as "new" during the cut (it moved to the end).
    let mut node = FakeNode::new(4);
    node.items.retain(|(id, _)| id != "i3");
    node.items.push(("i3".to_owned(), "new".to_owned()));
    let o = node.catch_up(&printed(1, 3));
    assert_eq!(ids(&o), ["i4", "i3"]);
    assert_eq!(
        o.items[1].payload.as_ref().map(Element::text).as_deref(),
        Some("new")
    );
}

#[test]
fn a_server_without_rsm_sends_everything_at_once() {
    let mut node = FakeNode::new(250);
    node.no_rsm = true;
    let o = node.catch_up(&printed(200, 240));
    let want: Vec<String> = (241..=250).map(|i| format!("i{i}")).collect();
    assert_eq!(ids(&o), want);
    assert_eq!(node.requests, 1);
    let o = node.catch_up(&printed(1000, 1001));
    assert_eq!(o.items.len(), 250);
    assert!(o.warning.is_some());
}

#[test]
fn catch_up_is_bounded() {
    let n = MAX_CATCH_UP_ITEMS + 500;
    let mut node = FakeNode::new(n);
    let mut recent = Recent::new();
    recent.note_start(Some(&item("i1", "1")));
    let o = node.catch_up(&recent);
    assert_eq!(o.items.len(), MAX_CATCH_UP_ITEMS);
    assert_eq!(
        o.items.last().map(|i| i.id.clone()),
        Some(format!("i{n}")),
        "the newest are kept"
    );
    assert!(o.warning.is_some_and(|w| w.contains("newest")));
    assert!(node.requests <= MAX_CATCH_UP_PAGES as usize);
}

#[test]
fn an_anchor_removed_while_paging_ends_with_a_warning() {
    let mut node = FakeNode::new(300);
    let recent = printed(10, 10);
    let mut c = CatchUp::new("n");
    let Step::Request(body) = c.start() else {
        panic!("a request first")
    };
    let first = node.answer(&body).expect("page 1");
    let Step::Request(body) = c.on_reply(&first, &recent) else {
        panic!("a second page")
    };
    // Rotation removes the oldest items, the next page's anchor among them.
    node.items.drain(..250);
    let cond = node.answer(&body).expect_err("anchor gone");
    let Some(Step::Done(o)) = c.on_error(cond) else {
        panic!("done")
    };
    assert_eq!(o.items.len(), CATCH_UP_PAGE as usize);
    assert!(o.warning.is_some());
    // On the first page, an error is the caller's (the node is gone, access refused).
    let mut c = CatchUp::new("n");
    let _ = c.start();
    assert_eq!(c.on_error("item-not-found"), None);
}

#[test]
fn a_collection_reply_is_not_caught_up() {
    let reply = Element::parse(&format!(
        "<iq type='result'><pubsub xmlns='{NS_PUBSUB}'><items node='leaf'>\
         <item id='a'/></items></pubsub></iq>"
    ))
    .expect("reply");
    let mut c = CatchUp::new("n");
    let _ = c.start();
    let Step::Done(o) = c.on_reply(&reply, &printed(1, 1)) else {
        panic!("done")
    };
    assert!(o.items.is_empty() && o.warning.is_some());
}

#[test]
fn the_request_pages_backwards() {
    let e = Element::parse(&request_body("n'", Some("x<y"))).expect("parses");
    assert_eq!(
        e.child("items", NS_PUBSUB).and_then(|i| i.attr("node")),
        Some("n'")
    );
    let set = e.child("set", NS_RSM).expect("set");
    assert_eq!(
        set.child("max", NS_RSM).map(Element::text).as_deref(),
        Some("100")
    );
    assert_eq!(
        set.child("before", NS_RSM).map(Element::text).as_deref(),
        Some("x<y")
    );
    let last = Element::parse(&request_body("n", None)).expect("parses");
    let before = last
        .child("set", NS_RSM)
        .and_then(|s| s.child("before", NS_RSM))
        .expect("an empty before: the last page");
    assert!(before.text().is_empty());
}

#[test]
fn duplicates_of_fetched_items_are_dropped_once_within_the_window() {
    let t0 = Instant::now();
    let mut r = Recent::new();
    r.printed_fetched(&item("a", "1"), t0);
    r.printed_live(&item("b", "2"));
    // Another payload under the same id is a new publication.
    assert!(!r.is_duplicate(&item("a", "other"), t0));
    assert!(r.is_duplicate(&item("a", "1"), t0 + Duration::from_secs(1)));
    // Each fetched item suppresses one event at most.
    assert!(!r.is_duplicate(&item("a", "1"), t0 + Duration::from_secs(2)));
    // Items printed from events never suppress (a republication is printed again).
    assert!(!r.is_duplicate(&item("b", "2"), t0));
    // Past the window, an equal item is printed.
    r.printed_fetched(&item("c", "3"), t0);
    assert!(!r.is_duplicate(&item("c", "3"), t0 + DEDUP_WINDOW + Duration::from_secs(1)));
    // Items without an id are neither remembered nor dropped.
    r.printed_fetched(&item("", "4"), t0);
    assert!(!r.is_duplicate(&item("", "4"), t0));
}

#[test]
fn the_memory_is_bounded() {
    let mut r = Recent::new();
    let t0 = Instant::now();
    for i in 0..RECENT_ITEMS + 10 {
        r.printed_fetched(&item(&format!("i{i}"), "v"), t0);
    }
    assert_eq!(r.len(), RECENT_ITEMS);
    assert!(
        !r.is_duplicate(&item("i0", "v"), t0),
        "the oldest were forgotten"
    );
    assert!(r.is_duplicate(&item(&format!("i{}", RECENT_ITEMS + 9), "v"), t0));
}
