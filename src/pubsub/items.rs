//! Retrieving items (XEP-0060 §6.5) and the requester's own subscriptions and
//! affiliations (§5.6, §5.7).

use super::*;

impl Host<'_> {
    /// Reads items of `node` by index entries (payloads from the store).
    pub(super) fn load_items(
        &self,
        name: &str,
        entries: &[&IndexEntry],
    ) -> Result<Vec<CachedItem>, PubSubError> {
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        let key = self.store_key(name);
        let got = self.store.pubsub_items(&key, &seqs).map_err(|e| {
            tracing::error!(node = name, error = %e, "cannot read pub-sub items");
            PubSubError::Internal
        })?;
        let mut out = Vec::with_capacity(got.len());
        for r in got.into_iter().flatten() {
            out.push(CachedItem {
                id: r.id,
                publisher: r.publisher,
                published_ms: r.published_ms,
                payload: r.payload,
            });
        }
        Ok(out)
    }

    /// §6.5 retrieve items (all, by id, newest `max_items`), paged with XEP-0059 RSM
    /// (§6.5.4). The reply never exceeds half an outbox: a larger result is cut and says so
    /// with an RSM `<set/>` (count, first, last), so nothing is truncated silently.
    pub(super) fn items(&mut self, req: &Req, it: &Element, rsm: Option<&Element>) -> Reply {
        let name = Self::node_attr(it)?.to_owned();
        let n = self.node(&name)?;
        // §6.5.9.3: a pending subscription is no subscription for retrieval.
        self.check_access(n, &req.bare).map_err(|e| match e {
            PubSubError::PendingSubscription => PubSubError::AuthorizationRequired,
            e => e,
        })?;
        // §6.5.9.1 and §6.5.9.2: with several subscriptions, the request names one.
        let mine: Vec<&Sub> = n.subs.iter().filter(|s| s.jid.bare() == req.bare).collect();
        match it.attr("subid").filter(|s| !s.is_empty()) {
            None if mine.len() > 1 => return Err(PubSubError::SubIdRequired),
            Some(id) if !mine.is_empty() && !mine.iter().any(|s| s.subid == id) => {
                return Err(PubSubError::InvalidSubId);
            }
            _ => {}
        }
        let wanted: Vec<&str> = it
            .elements()
            .filter(|e| e.is("item", NS_PUBSUB))
            .filter_map(|e| e.attr("id"))
            .collect();
        // Any size is the newest that many (saturated: the same on 32-bit targets).
        let max = it
            .attr("max_items")
            .map(|m| {
                parse_len(m).ok_or(PubSubError::BadRequest(
                    "max_items is a non-negative integer",
                ))
            })
            .transpose()?;
        let page = rsm
            .map(|set| Page::parse(set, self.svc.limits.pubsub_max_page_items))
            .transpose()?;
        if n.config.kind == Kind::Collection {
            return self.collection_items(req, &name, max, page.as_ref());
        }
        let transient;
        let mut entries: Vec<&IndexEntry> = if n.config.persist_items {
            n.items
                .iter()
                .filter(|e| !n.expired(e.published_ms, req.now_ms))
                .filter(|e| wanted.is_empty() || wanted.contains(&e.id.as_str()))
                .collect()
        } else {
            transient = n.last.as_ref().map(|l| l.transient_entry());
            transient
                .iter()
                .filter(|e| !n.expired(e.published_ms, req.now_ms))
                .filter(|e| wanted.is_empty() || wanted.contains(&e.id.as_str()))
                .collect()
        };
        if let Some(m) = max {
            let skip = entries.len().saturating_sub(m);
            entries.drain(..skip);
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        // The RSM window over `entries`, cut to half an outbox by the estimated reply bytes
        // of each item: payload, id, publisher and markup.
        let window = match &page {
            None => Window::all(ids.len()),
            Some(p) => p.window(&ids)?,
        }
        .fit(&entries, self.svc.limits.outbox_max_bytes / 2, |e| {
            e.bytes.saturating_add(e.id.len()).saturating_add(192)
        });
        let cut = page.is_none() && !window.is_whole();
        let page_entries = window.slice(&entries);
        let found: Vec<CachedItem> = if n.config.persist_items {
            self.load_items(&name, page_entries)?
        } else {
            n.last
                .iter()
                .filter(|_| !page_entries.is_empty())
                .map(|l| (**l).clone())
                .collect()
        };
        let mut s =
            String::with_capacity(160 + found.iter().map(|i| i.payload.len() + 64).sum::<usize>());
        let mut w = Writer::new(&mut s);
        w.start("pubsub").ns(NS_PUBSUB);
        w.start("items").attr("node", &name);
        for i in &found {
            write_item(&mut w, i, true, n.config.itemreply_publisher);
        }
        w.end();
        if page.is_some() || cut {
            window.write_set(&mut w, &ids);
        }
        w.end();
        Ok(Some(s))
    }

    /// §5.6 the requester's subscriptions.
    pub(super) fn own_subscriptions(&self, req: &Req, e: &Element) -> String {
        self.own_list(e, "subscriptions", |w, name, n| {
            for sub in n.subs.iter().filter(|x| x.jid.bare() == req.bare) {
                Self::write_subscription(w, name, sub);
                w.end();
            }
        })
    }

    /// §5.7 the requester's affiliations.
    pub(super) fn own_affiliations(&self, req: &Req, e: &Element) -> String {
        self.own_list(e, "affiliations", |w, name, n| {
            if name.is_empty() {
                return;
            }
            let a = self.affiliation(n, &req.bare);
            if a != Affiliation::None {
                w.start("affiliation")
                    .attr("node", name)
                    .attr("affiliation", a.as_str())
                    .end();
            }
        })
    }

    /// `<pubsub xmlns='…pubsub'><{list}>…</{list}></pubsub>`, `entries` writing those of each
    /// node (of the one named by `e`'s `node` attribute, if any).
    fn own_list(
        &self,
        e: &Element,
        list: &'static str,
        mut entries: impl FnMut(&mut Writer, &str, &Node),
    ) -> String {
        let only = e.attr("node");
        crate::xml::build(|w| {
            w.start("pubsub").ns(NS_PUBSUB);
            w.start(list);
            for (name, n) in &self.svc.nodes {
                if only.is_none_or(|o| o == name) {
                    entries(w, name, n);
                }
            }
            w.end_all();
        })
    }
}
