//! Deleting items from a node (XEP-0060 §7.2).

use super::*;

impl Host<'_> {
    /// §7.2 retract.
    pub(super) fn retract(&mut self, req: &Req, r: &Element) -> Reply {
        let name = Self::node_attr(r)?.to_owned();
        let id = r
            .child("item", NS_PUBSUB)
            .and_then(|i| i.attr("id"))
            .filter(|i| !i.is_empty())
            .ok_or(PubSubError::ItemRequired)?
            .to_owned();
        let n = self.node(&name)?;
        let aff = self.affiliation(n, &req.bare);
        let (seq, publisher) = if n.config.persist_items {
            let e = n
                .items
                .iter()
                .find(|e| e.id == id)
                .ok_or(PubSubError::ItemNotFound)?;
            let publisher = match &n.last {
                Some(l) if l.id == id => Some(l.publisher.clone()),
                _ => self
                    .load_items(&name, &[e])?
                    .into_iter()
                    .next()
                    .map(|i| i.publisher),
            };
            (Some(e.seq), publisher)
        } else {
            match &n.last {
                Some(l) if l.id == id => (None, Some(l.publisher.clone())),
                _ => return Err(PubSubError::ItemNotFound),
            }
        };
        let own = publisher
            .as_deref()
            .and_then(|p| Jid::parse(p).ok())
            .is_some_and(|p| p.bare() == req.bare);
        let allowed = match aff {
            Affiliation::Owner | Affiliation::Publisher => true,
            Affiliation::PublishOnly => own,
            _ => false,
        };
        if !allowed {
            return Err(PubSubError::Forbidden("you may not retract this item"));
        }
        let notify = flag(r, "notify").unwrap_or(false) || n.config.notify_retract;
        if let Some(seq) = seq {
            self.commit(&[PubsubOp::DeleteItem(name.clone(), seq)])?;
        }
        let new_last = {
            let n = self.node(&name)?;
            let rest: Vec<&IndexEntry> = n.items.iter().filter(|e| e.id != id).collect();
            match rest.last() {
                Some(e) if n.last.as_ref().is_some_and(|l| l.id == id) => self
                    .load_items(&name, &[e])
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map(Rc::new),
                _ if n.last.as_ref().is_some_and(|l| l.id == id) => None,
                _ => n.last.clone(),
            }
        };
        if let Some(n) = self.svc.nodes.get_mut(&name) {
            if let Some(seq) = seq {
                n.remove_seqs(&[seq], &mut self.eng.stored_total);
            }
            n.last = new_last;
        }
        let pep = self.svc.owner.is_some();
        let cache_max = self.svc.limits.pep_cache_payload_bytes;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
            if pep && n.last.as_ref().is_some_and(|l| l.payload.len() > cache_max) {
                n.last = None;
            }
        }
        if notify {
            let inner = self.items_event(&name, &Self::retract_xml(&id));
            self.notify_items(&name, &inner, None);
            self.notify_collections(&name, &inner);
        }
        Ok(None)
    }
}
