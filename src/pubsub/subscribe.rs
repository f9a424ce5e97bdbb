//! Subscribing and unsubscribing (XEP-0060 §6.1, §6.2) and subscription options
//! (§6.3, §6.4).

use super::*;

impl Host<'_> {
    /// The `jid` attribute of a subscribe/unsubscribe/options request, which must be the
    /// requester's bare or full JID (§6.1.3.1).
    pub(super) fn sub_jid(req: &Req, e: &Element) -> Result<Jid, PubSubError> {
        let j = e
            .attr("jid")
            .filter(|j| !j.is_empty())
            .ok_or(PubSubError::JidRequired)?;
        let j = Jid::parse(j).map_err(|_| PubSubError::InvalidJid)?;
        if j.bare() != req.bare {
            return Err(PubSubError::InvalidJid);
        }
        Ok(j)
    }

    /// The subscription of `jid` a request names: by its `subid`, or the only one
    /// (§6.2.3.1 `subid-required`, §6.2.3.5 `invalid-subid`).
    pub(super) fn find_sub(n: &Node, jid: &Jid, e: &Element) -> Result<usize, PubSubError> {
        let mine: Vec<usize> = (0..n.subs.len())
            .filter(|i| &n.subs[*i].jid == jid)
            .collect();
        match e.attr("subid").filter(|s| !s.is_empty()) {
            Some(id) => mine.into_iter().find(|i| n.subs[*i].subid == id).ok_or(
                if n.subs.iter().any(|s| &s.jid == jid) {
                    PubSubError::InvalidSubId
                } else {
                    PubSubError::NotSubscribed
                },
            ),
            None => match mine.as_slice() {
                [] => Err(PubSubError::NotSubscribed),
                [i] => Ok(*i),
                _ => Err(PubSubError::SubIdRequired),
            },
        }
    }

    /// Removes `sub` from node `name`, if the node is still there.
    pub(super) fn remove_sub(&mut self, name: &str, sub: &Sub) {
        if let Some(n) = self.svc.nodes.get_mut(name) {
            n.remove_sub(sub);
        }
    }

    /// `<subscription node jid subid subscription/>` of the pubsub namespace.
    /// Opens it in `w` (attributes written; the caller adds children and ends it).
    pub(super) fn write_subscription(w: &mut Writer, node: &str, sub: &Sub) {
        w.start("subscription")
            .attr("node", node)
            .attr("jid", sub.jid.as_str())
            .attr("subid", &sub.subid)
            .attr("subscription", sub.state.as_str());
    }

    /// §6.1 subscribe. Several subscriptions per JID (`multi-subscribe`, §6.1.6): a
    /// request with options equal to an existing subscription's returns that one (and
    /// sends the last item again); other options make a new subscription with its own
    /// SubID. Under the authorize access model the subscription is `pending` and every
    /// owner gets the approval form (§8.6).
    pub(super) fn subscribe(&mut self, req: &Req, s: &Element, options: Option<&Element>) -> Reply {
        // XEP-0248: no node (or an empty one) is the root collection.
        let name = s.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, s)?;
        let n = self.node(&name)?;
        let state = match self.check_access(n, &req.bare) {
            Ok(()) => SubState::Subscribed,
            Err(PubSubError::AuthorizationRequired) => SubState::Pending,
            Err(e) => return Err(e),
        };
        if !n.config.subscribe {
            return Err(PubSubError::SubscriptionsDisabled);
        }
        let mut opts = SubOptions::default();
        if let Some(x) = options.and_then(find_form) {
            Self::parse_sub_options(x, &mut opts, req.now_ms)?;
        }
        opts.temporary |= n.config.tempsub;
        let existing = n
            .subs
            .iter()
            .position(|x| x.jid == jid && x.opts == opts && x.state == state);
        // XEP-0248: one subscription per JID and type to a collection (`conflict`).
        if existing.is_none()
            && n.config.kind == Kind::Collection
            && n.subs
                .iter()
                .any(|x| x.jid == jid && x.opts.sub_type == opts.sub_type)
        {
            return Err(PubSubError::CollectionSubscribed);
        }
        let sub = match existing {
            Some(i) => n.subs[i].clone(),
            None => {
                if n.subs.len() >= self.svc.limits.pubsub_max_subscriptions_per_node
                    || n.subs.iter().filter(|x| x.jid == jid).count()
                        >= self.svc.limits.subscriptions_per_jid
                {
                    return Err(PubSubError::TooManySubscriptions);
                }
                let sub = Sub {
                    jid: jid.clone(),
                    subid: self.new_id(req.now_ms),
                    state,
                    opts,
                };
                self.commit(&[sub.put(&name)])?;
                let n = self.node_mut(&name)?;
                n.insert_sub(sub.clone());
                if state == SubState::Pending {
                    self.send_approval_forms(&name, &sub);
                } else {
                    self.notify_owners_sub(&name, &jid, &sub.subid, "subscribed");
                }
                sub
            }
        };
        let n = self.node(&name)?;
        // §6.1.7: the last published item, with a delay stamp.
        if state == SubState::Subscribed && n.config.send_last != SendLast::Never {
            let last = match (&n.last, n.items.back()) {
                (Some(l), _) => Some(l.clone()),
                // Not cached (a large PEP item): from the self.store.
                (None, Some(e)) if n.config.persist_items => self
                    .load_items(&name, &[e])?
                    .into_iter()
                    .next()
                    .map(Rc::new),
                _ => None,
            };
            if let Some(last) = last {
                if !n.expired(last.published_ms, req.now_ms) && sub.opts.deliver {
                    let payloads = n.config.deliver_payloads;
                    let headline = n.config.headline;
                    let with_publisher = n.config.itemreply_publisher;
                    let inner = self.items_event(&name, &item_xml(&last, payloads, with_publisher));
                    let d = self.message(&jid, headline, &inner, Some(last.published_ms));
                    self.out.push(d);
                }
            }
        }
        // §6.1.5: options are supported (never required, so never `unconfigured`).
        Ok(Some(crate::xml::build(|w| {
            w.start("pubsub").ns(NS_PUBSUB);
            Self::write_subscription(w, &name, &sub);
            w.start("subscribe-options").end_all();
        })))
    }

    /// §6.2 unsubscribe (one subscription: by SubID when the JID has several).
    pub(super) fn unsubscribe(&mut self, req: &Req, u: &Element) -> Reply {
        let name = u.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, u)?;
        let n = self.node(&name)?;
        let i = Self::find_sub(n, &jid, u)?;
        let sub = n.subs[i].clone();
        self.commit(&[sub.delete(&name)])?;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
            n.subs.remove(i);
            n.subs_changed();
        }
        self.notify_owners_sub(&name, &jid, &sub.subid, "none");
        Ok(None)
    }

    /// Reads a `pubsub#subscribe_options` form into `opts`. `digest` and the XEP-0248
    /// options are refused with `not-acceptable` + `unsupported` (never ignored).
    pub(super) fn parse_sub_options(
        x: &Element,
        opts: &mut SubOptions,
        now_ms: u64,
    ) -> Result<(), PubSubError> {
        let boolean = |var: &str, values: &[String]| match values.first().map(|v| v.trim()) {
            Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            _ => Err(PubSubError::InvalidOptions(format!("{var} is a boolean"))),
        };
        for (var, values) in form_fields(x) {
            match var.as_str() {
                "FORM_TYPE" => {
                    if values.first().map(String::as_str) != Some(FORM_SUBSCRIBE_OPTIONS) {
                        return Err(PubSubError::InvalidOptions("wrong FORM_TYPE".into()));
                    }
                }
                "pubsub#deliver" => opts.deliver = boolean(&var, &values)?,
                "pubsub#include_body" => opts.include_body = boolean(&var, &values)?,
                "pubsub#digest" => {
                    if boolean(&var, &values)? {
                        return Err(PubSubError::UnsupportedValue("digest"));
                    }
                }
                "pubsub#digest_frequency" => return Err(PubSubError::UnsupportedValue("digest")),
                // XEP-0248 (accepted on leaves too, where they mean nothing).
                "pubsub#subscription_type" => {
                    opts.sub_type = match values.first().map(|v| v.trim()) {
                        Some("nodes") => SubType::Nodes,
                        Some("items") => SubType::Items,
                        Some("all") => SubType::All,
                        _ => {
                            return Err(PubSubError::InvalidOptions(
                                "pubsub#subscription_type is nodes, items or all".into(),
                            ));
                        }
                    }
                }
                "pubsub#subscription_depth" => {
                    opts.depth = match values.first().map(|v| v.trim()) {
                        Some("0") => Depth::Levels(0),
                        Some(v) => Depth::parse(v).ok_or_else(|| {
                            PubSubError::InvalidOptions(
                                "pubsub#subscription_depth is a number or all".into(),
                            )
                        })?,
                        None => Depth::Levels(1),
                    }
                }
                "pubsub#show-values" => {
                    let mut mask = SHOW_SET;
                    for v in &values {
                        let i = SHOWS.iter().position(|s| *s == v.trim()).ok_or_else(|| {
                            PubSubError::InvalidOptions(format!("unknown show value {v:?}"))
                        })?;
                        mask |= 1 << i;
                    }
                    opts.show = mask;
                }
                "pubsub#expire" => match values.first().map(|v| v.trim()).unwrap_or("") {
                    "" => {
                        opts.expire_ms = 0;
                        opts.temporary = false;
                    }
                    "presence" => {
                        opts.expire_ms = 0;
                        opts.temporary = true;
                    }
                    v => {
                        let ms = parse_xep0082(v).ok_or_else(|| {
                            PubSubError::InvalidOptions(format!(
                                "pubsub#expire: {v:?} is not a date-time"
                            ))
                        })?;
                        if ms <= now_ms {
                            return Err(PubSubError::InvalidOptions(
                                "pubsub#expire is in the past".into(),
                            ));
                        }
                        opts.expire_ms = ms;
                        opts.temporary = false;
                    }
                },
                other => {
                    return Err(PubSubError::InvalidOptions(format!(
                        "unsupported option {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The subscription options form (§6.3.2) with the values of `o`.
    pub(super) fn sub_options_form(o: &SubOptions, ty: &str) -> Element {
        let field = |var: &str, fty: &str, label: &str, values: Vec<String>| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", fty)
                .with_attr("label", label);
            if var == "pubsub#show-values" {
                for s in SHOWS {
                    f.push_child(
                        Element::new("option", NS_DATA)
                            .with_child(Element::new("value", NS_DATA).with_text(s)),
                    );
                }
            }
            for v in values {
                f.push_child(Element::new("value", NS_DATA).with_text(v));
            }
            f
        };
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_owned()];
        let expire = if o.temporary {
            "presence".to_owned()
        } else if o.expire_ms != 0 {
            xep0082(o.expire_ms)
        } else {
            String::new()
        };
        let shows: Vec<String> = SHOWS
            .iter()
            .enumerate()
            .filter(|(i, _)| o.show & SHOW_SET != 0 && o.show & (1 << i) != 0)
            .map(|(_, s)| (*s).to_owned())
            .collect();
        Element::new("x", NS_DATA)
            .with_attr("type", ty)
            .with_child(hidden_form_type(FORM_SUBSCRIBE_OPTIONS))
            .with_child(field(
                "pubsub#deliver",
                "boolean",
                "Enable delivery?",
                b(o.deliver),
            ))
            .with_child(field(
                "pubsub#include_body",
                "boolean",
                "Receive message body in addition to payload?",
                b(o.include_body),
            ))
            .with_child(field(
                "pubsub#expire",
                "text-single",
                "Requested lease period (a date-time, or presence)",
                vec![expire],
            ))
            .with_child(field(
                "pubsub#show-values",
                "list-multi",
                "Receive notifications only when your presence is one of these",
                shows,
            ))
            .with_child(field(
                "pubsub#subscription_type",
                "list-single",
                "Collections: notifications of items, of nodes, or all",
                vec![o.sub_type.as_str().to_owned()],
            ))
            .with_child(field(
                "pubsub#subscription_depth",
                "text-single",
                "Collections: how many levels below (a number, or all)",
                vec![o.depth.to_string()],
            ))
    }

    /// §6.4 default subscription options.
    pub(super) fn default_sub_options(d: &Element) -> String {
        let mut e = Element::new("default", NS_PUBSUB);
        if let Some(n) = d.attr("node") {
            e.set_attr("node", n);
        }
        e.push_child(Self::sub_options_form(&SubOptions::default(), "form"));
        let p = Element::new("pubsub", NS_PUBSUB).with_child(e);
        p.to_string_in_stream()
    }

    /// §6.3 subscription options (get and set), of one subscription (by SubID when the
    /// JID has several).
    pub(super) fn options(&mut self, req: &Req, o: &Element, set: bool) -> Reply {
        let name = o.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, o)?;
        let n = self.node(&name)?;
        let i = Self::find_sub(n, &jid, o)?;
        if !set {
            let e = Element::new("options", NS_PUBSUB)
                .with_attr("node", name.as_str())
                .with_attr("jid", jid.as_str())
                .with_attr("subid", n.subs[i].subid.as_str())
                .with_child(Self::sub_options_form(&n.subs[i].opts, "form"));
            return Ok(Some(
                Element::new("pubsub", NS_PUBSUB)
                    .with_child(e)
                    .to_string_in_stream(),
            ));
        }
        let x = find_form(o).ok_or(PubSubError::InvalidOptions("no form".into()))?;
        let mut sub = n.subs[i].clone();
        Self::parse_sub_options(x, &mut sub.opts, req.now_ms)?;
        sub.opts.temporary |= n.config.tempsub;
        self.commit(&[sub.put(&name)])?;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
            n.subs[i] = sub;
            n.subs_changed();
        }
        Ok(None)
    }
}
