//! Subscription approval (XEP-0060 §8.6) and the pending-subscriptions command
//! (`get-pending`, §8.7).

use super::*;

impl Engine {
    /// A message to the service: an owner's answer to an approval form (§8.6.2), with
    /// `pubsub#allow` true (the subscription becomes `subscribed`) or false (it is
    /// removed); the subscriber is told either way. Anything else is ignored (logged).
    pub fn handle_message(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        from: &Jid,
        msg: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let Some(x) = find_form(msg) else {
            return Vec::new();
        };
        self.host(None, (dir, store, now_ms), |h| {
            if let Err(e) = h.approval(&from.bare(), x) {
                tracing::info!(from = %from, error = %e, "pub-sub approval form refused");
                h.out.clear();
            }
            std::mem::take(&mut h.out)
        })
    }
}

impl Host<'_> {
    /// §8.6: the approval form for `sub`, to every owner of `node`.
    pub(super) fn send_approval_forms(&mut self, node: &str, sub: &Sub) {
        let Some(n) = self.svc.nodes.get(node) else {
            return;
        };
        let owners: Vec<Jid> = n
            .affs
            .iter()
            .filter(|(_, a)| *a == Affiliation::Owner)
            .filter_map(|(j, _)| Jid::parse(j).ok())
            .collect();
        for o in owners {
            self.send_approval_forms_to(node, sub, &o);
        }
    }

    /// The `pubsub#subscribe_authorization` form (§8.6.1).
    pub(super) fn approval_form(node: &str, sub: &Sub) -> String {
        let field = |var: &str, ty: &str, label: &str, v: &str| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", ty);
            if !label.is_empty() {
                f.set_attr("label", label);
            }
            f.with_child(Element::new("value", NS_DATA).with_text(v))
        };
        let x = Element::new("x", NS_DATA)
            .with_attr("type", "form")
            .with_child(Element::new("title", NS_DATA).with_text("PubSub subscriber request"))
            .with_child(Element::new("instructions", NS_DATA).with_text(
                "To approve this entity's subscription request, set Allow and submit the form; to deny it, submit the form with Allow unset.",
            ))
            .with_child(hidden_form_type(FORM_SUBSCRIBE_AUTH))
            .with_child(field("pubsub#subid", "hidden", "", &sub.subid))
            .with_child(field("pubsub#node", "text-single", "Node ID", node))
            .with_child(field(
                "pubsub#subscriber_jid",
                "jid-single",
                "Subscriber Address",
                sub.jid.as_str(),
            ))
            .with_child(field(
                "pubsub#allow",
                "boolean",
                "Allow this JID to subscribe to this pubsub node?",
                "false",
            ));
        x.to_string_in_stream()
    }

    pub(super) fn approval(&mut self, owner: &Jid, x: &Element) -> Result<(), PubSubError> {
        let fields = form_fields(x);
        let get = |var: &str| {
            fields
                .iter()
                .find(|(v, _)| v == var)
                .and_then(|(_, vals)| vals.first())
                .map(|v| v.trim().to_owned())
        };
        if get("FORM_TYPE").as_deref() != Some(FORM_SUBSCRIBE_AUTH) {
            return Err(PubSubError::BadForm("not an approval form".into()));
        }
        let name = get("pubsub#node").ok_or(PubSubError::NodeIdRequired)?;
        let jid = get("pubsub#subscriber_jid")
            .and_then(|j| Jid::parse(&j).ok())
            .ok_or(PubSubError::InvalidJid)?;
        // A cancelled form changes nothing: the request stays pending (§8.6).
        if x.attr("type") == Some("cancel") {
            return Ok(());
        }
        let allow = match (x.attr("type"), get("pubsub#allow").as_deref()) {
            (_, Some("1" | "true")) => true,
            (_, Some("0" | "false")) => false,
            _ => return Err(PubSubError::BadForm("pubsub#allow is a boolean".into())),
        };
        let n = self.require_owner(&name, owner)?;
        let subid = get("pubsub#subid");
        let i = n
            .subs
            .iter()
            .position(|s| {
                s.jid == jid
                    && s.state == SubState::Pending
                    && subid
                        .as_ref()
                        .is_none_or(|id| id.is_empty() || *id == s.subid)
            })
            .ok_or(PubSubError::NotSubscribed)?;
        let mut sub = n.subs[i].clone();
        if allow {
            sub.state = SubState::Subscribed;
            self.commit(&[sub.put(&name)])?;
        } else {
            self.commit(&[sub.delete(&name)])?;
        }
        let n = self.node_mut(&name)?;
        if allow {
            n.subs[i].state = SubState::Subscribed;
        } else {
            n.subs.remove(i);
            n.subs_changed();
        }
        let state = if allow { "subscribed" } else { "none" };
        self.subscription_changed(&name, &jid, &sub.subid, state);
        self.notify_owners_sub(&name, &jid, &sub.subid, state);
        Ok(())
    }

    /// XEP-0050 commands: §8.7 `get-pending`. Without a form it answers the list of nodes
    /// the requester owns that have pending subscriptions; with a submitted form naming a
    /// node it sends the approval form of each of them again. Stateless: the session id
    /// is echoed, nothing is kept between the two steps.
    pub(super) fn command(&mut self, req: &Req, c: &Element) -> Reply {
        if c.attr("node") != Some(CMD_GET_PENDING) {
            return Err(PubSubError::ItemNotFound);
        }
        let session = c
            .attr("sessionid")
            .map_or_else(|| format!("pending-{:x}", req.now_ms), str::to_owned);
        if c.attr("action") == Some("cancel") {
            return Ok(Some(Self::command_xml(&session, "canceled")));
        }
        let chosen = find_form(c).and_then(|x| {
            form_fields(x)
                .into_iter()
                .find(|(v, _)| v == "pubsub#node")
                .and_then(|(_, vals)| vals.into_iter().next())
        });
        match chosen {
            None => {
                let mut f = Element::new("field", NS_DATA)
                    .with_attr("var", "pubsub#node")
                    .with_attr("type", "list-single")
                    .with_attr("label", "Node ID");
                for (name, n) in &self.svc.nodes {
                    let owner = self.affiliation(n, &req.bare) == Affiliation::Owner;
                    if owner && n.subs.iter().any(|s| s.state == SubState::Pending) {
                        f.push_child(
                            Element::new("option", NS_DATA).with_child(
                                Element::new("value", NS_DATA).with_text(name.as_str()),
                            ),
                        );
                    }
                }
                let x = Element::new("x", NS_DATA)
                    .with_attr("type", "form")
                    .with_child(hidden_form_type(FORM_SUBSCRIBE_AUTH))
                    .with_child(f);
                let cmd = Element::new("command", NS_COMMANDS)
                    .with_attr("node", CMD_GET_PENDING)
                    .with_attr("sessionid", session.as_str())
                    .with_attr("status", "executing")
                    .with_child(
                        Element::new("actions", NS_COMMANDS)
                            .with_attr("execute", "complete")
                            .with_child(Element::new("complete", NS_COMMANDS)),
                    )
                    .with_child(x);
                Ok(Some(cmd.to_string_in_stream()))
            }
            Some(name) => {
                let n = self.require_owner(&name, &req.bare)?;
                let pending: Vec<Sub> = n
                    .subs
                    .iter()
                    .filter(|s| s.state == SubState::Pending)
                    .cloned()
                    .collect();
                for sub in &pending {
                    self.send_approval_forms_to(&name, sub, &req.bare);
                }
                Ok(Some(Self::command_xml(&session, "completed")))
            }
        }
    }

    /// The XEP-0050 `<command/>` of get-pending `session`, finished with `status`.
    fn command_xml(session: &str, status: &str) -> String {
        crate::xml::build(|w| {
            w.start("command")
                .ns(NS_COMMANDS)
                .attr("node", CMD_GET_PENDING)
                .attr("sessionid", session)
                .attr("status", status)
                .end();
        })
    }

    /// The approval form of `sub` to the owner `to` (§8.6; again for §8.7). The message
    /// id names the SubID (the owner's answer reflects it, §8.6).
    pub(super) fn send_approval_forms_to(&mut self, node: &str, sub: &Sub, to: &Jid) {
        let s = crate::xml::build(|w| {
            w.start("message")
                .attr("from", self.svc.jid.as_str())
                .attr("to", to.as_str())
                .attr_fmt("id", format_args!("approve-{}", sub.subid))
                .raw(Raw(&Self::approval_form(node, sub)))
                .end();
        });
        self.out.push(Delivery {
            to: to.clone(),
            stanza: Stanza::from(s),
            keep_offline: false,
        });
    }
}
