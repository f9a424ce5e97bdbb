//! Service discovery (XEP-0030, XEP-0060 §5.1–§5.5): `disco#info` with node meta-data and
//! `disco#items` of nodes and items.

use super::*;

impl Host<'_> {
    pub(super) fn disco_info(&self, req: &Req, q: &Element) -> Reply {
        let mut out = Element::new("query", NS_DISCO_INFO);
        match q.attr("node") {
            None => {
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "service")
                        .with_attr("name", "Kinglet publish-subscribe"),
                );
                // XEP-0059 paging of items, also under its own namespace (§6.5.4).
                for f in [
                    NS_DISCO_INFO,
                    NS_DISCO_ITEMS,
                    NS_PUBSUB,
                    NS_RSM,
                    NS_COMMANDS,
                ] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
                for f in FEATURES {
                    out.push_child(
                        Element::new("feature", NS_DISCO_INFO)
                            .with_attr("var", format!("{NS_PUBSUB}#{f}")),
                    );
                }
            }
            Some(CMD_GET_PENDING) => {
                // XEP-0050 §2.3: the command node.
                out.set_attr("node", CMD_GET_PENDING);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "automation")
                        .with_attr("type", "command-node")
                        .with_attr("name", "Get pending subscriptions"),
                );
                for f in [NS_COMMANDS, NS_DATA] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
            }
            Some(name) => {
                let n = self.node(name)?;
                // PEP: a node the requester may not read does not exist for it.
                if self.svc.owner.is_some() && self.check_access(n, &req.bare).is_err() {
                    return Err(PubSubError::NodeNotFound);
                }
                out.set_attr("node", name);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", n.config.kind.as_str()),
                );
                for f in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
                out.push_child(self.meta_data(n));
            }
        }
        Ok(Some(out.to_string_in_stream()))
    }

    /// The `pubsub#meta-data` form (§5.4).
    pub(super) fn meta_data(&self, n: &Node) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "result");
        x.push_child(hidden_form_type(FORM_META_DATA));
        let mut field = |var: &str, ty: &str, values: Vec<String>| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", ty);
            for v in values {
                f.push_child(Element::new("value", NS_DATA).with_text(v));
            }
            x.push_child(f);
        };
        let with = |a: Affiliation| -> Vec<String> {
            n.affs
                .iter()
                .filter(|(_, x)| *x == a)
                .map(|(j, _)| j.clone())
                .collect()
        };
        field(
            "pubsub#node_type",
            "text-single",
            vec![n.config.kind.as_str().to_owned()],
        );
        field("pubsub#title", "text-single", vec![n.config.title.clone()]);
        field("pubsub#contact", "jid-multi", n.config.contact.clone());
        field(
            "pubsub#language",
            "text-single",
            vec![n.config.language.clone()],
        );
        field(
            "pubsub#description",
            "text-single",
            vec![n.config.description.clone()],
        );
        field(
            "pubsub#type",
            "text-single",
            vec![n.config.payload_type.clone()],
        );
        field("pubsub#creator", "jid-single", vec![n.creator.clone()]);
        field(
            "pubsub#creation_date",
            "text-single",
            vec![xep0082(n.created_ms)],
        );
        field(
            "pubsub#access_model",
            "list-single",
            vec![n.config.access_model_str().to_owned()],
        );
        field(
            "pubsub#publish_model",
            "list-single",
            vec![n.config.publish_model_str().to_owned()],
        );
        field(
            "pubsub#num_subscribers",
            "text-single",
            vec![n.subscribed().to_string()],
        );
        field("pubsub#owner", "jid-multi", with(Affiliation::Owner));
        field(
            "pubsub#publisher",
            "jid-multi",
            with(Affiliation::Publisher),
        );
        field(
            "pubsub#max_items",
            "text-single",
            vec![n.config.effective_max_items(&self.svc.limits).to_string()],
        );
        x
    }

    /// disco#items of the service (its nodes) or of a node (its item ids), paged with
    /// XEP-0059 like items retrieval and never larger than half an outbox.
    pub(super) fn disco_items(&self, req: &Req, q: &Element) -> Reply {
        let svc = self.svc.jid.as_str();
        // One `<item jid='svc' node? name?/>` row, written once and measured for the page.
        let row = |node: Option<&str>, name: Option<&str>| {
            crate::xml::build(|w| {
                w.start("item")
                    .attr("jid", svc)
                    .attr_opt("node", node)
                    .attr_opt("name", name)
                    .end();
            })
        };
        let page = q
            .child("set", NS_RSM)
            .map(|set| Page::parse(set, self.svc.limits.pubsub_max_page_items))
            .transpose()?;
        // (key, fragment) in order.
        // XEP-0248: the service (the root collection) and every collection list their
        // children.
        let children = |c: &str| -> Vec<(&str, String)> {
            self.svc
                .dag
                .children(c)
                .iter()
                .filter_map(|id| self.svc.nodes.get_key_value(&**id))
                // PEP: only the nodes the requester may read (XEP-0163 §6).
                .filter(|(_, n)| {
                    self.svc.owner.is_none() || self.check_access(n, &req.bare).is_ok()
                })
                .map(|(name, n)| {
                    let title = Some(n.config.title.as_str()).filter(|t| !t.is_empty());
                    (name.as_str(), row(Some(name), title))
                })
                .collect()
        };
        let (head, rows): (Option<&str>, Vec<(&str, String)>) = match q.attr("node") {
            None | Some("") => (None, children("")),
            Some(name) if self.svc.dag.kind(name) == Some(Kind::Collection) => {
                (Some(name), children(name))
            }
            Some(NS_COMMANDS) => (
                Some(NS_COMMANDS),
                vec![(
                    CMD_GET_PENDING,
                    row(Some(CMD_GET_PENDING), Some("Get pending subscriptions")),
                )],
            ),
            Some(name) => {
                let n = self.node(name)?;
                if self.svc.owner.is_some() && self.check_access(n, &req.bare).is_err() {
                    return Err(PubSubError::NodeNotFound);
                }
                let ids: Vec<&str> = if n.config.persist_items {
                    n.items
                        .iter()
                        .filter(|e| !n.expired(e.published_ms, req.now_ms))
                        .map(|e| e.id.as_str())
                        .collect()
                } else {
                    n.last.iter().map(|l| l.id.as_str()).collect()
                };
                (
                    Some(name),
                    ids.into_iter()
                        .map(|id| (id, row(None, Some(id))))
                        .collect(),
                )
            }
        };
        let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
        let window = match &page {
            None => Window::all(keys.len()),
            Some(p) => p.window(&keys)?,
        }
        .fit(&rows, self.svc.limits.outbox_max_bytes / 2, |(_, f)| {
            f.len()
        });
        let mut s = String::with_capacity(128);
        let mut w = Writer::new(&mut s);
        w.start("query").ns(NS_DISCO_ITEMS).attr_opt("node", head);
        for (_, f) in window.slice(&rows) {
            w.raw(Raw(f));
        }
        if page.is_some() || !window.is_whole() {
            window.write_set(&mut w, &keys);
        }
        // An empty list is `<query …></query>`, as before.
        w.text("").end();
        Ok(Some(s))
    }
}
