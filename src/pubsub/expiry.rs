//! The timer: item expiry (`pubsub#item_expire`) and subscription leases (`pubsub#expire`).

use super::*;

impl Engine {
    /// When the next item (`item_expire`) or subscription lease (`pubsub#expire`) ends,
    /// in ms since the epoch; `None` when nothing is due. The router sleeps until then and
    /// calls [`Engine::on_tick`].
    pub fn next_deadline(&self) -> Option<u64> {
        self.generic
            .nodes
            .values()
            .filter_map(Node::next_deadline)
            .min()
            .map(|d| d.max(self.retry_at))
    }

    /// Records and returns the deadline the timer now sleeps until.
    pub fn arm(&mut self) -> Option<u64> {
        self.armed = self.next_deadline();
        self.armed
    }

    /// Whether the next deadline moved earlier than the one the timer sleeps until (the
    /// router then wakes the timer).
    pub fn needs_rearm(&self) -> bool {
        match (self.next_deadline(), self.armed) {
            (Some(d), Some(a)) => d < a,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Deletes what expired by `now_ms` in one commit: items past `item_expire` (retract
    /// notifications if `notify_retract`) and subscriptions past their lease (the
    /// subscriber is told its subscription is `none`, owners if `notify_sub`). A failed
    /// commit is logged and retried 5 s later.
    pub fn on_tick(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        now_ms: u64,
    ) -> Vec<Delivery> {
        if now_ms < self.retry_at {
            return Vec::new();
        }
        match self.host(None, (dir, store, now_ms), |h| h.expire()) {
            Ok(out) => {
                self.retry_at = 0;
                out
            }
            Err(()) => {
                self.retry_at = now_ms.saturating_add(5000);
                Vec::new()
            }
        }
    }
}

impl Host<'_> {
    /// [`Engine::on_tick`] on the generic service; `Err` when the commit failed.
    fn expire(&mut self) -> Result<Vec<Delivery>, ()> {
        let now_ms = self.now_ms;
        let mut ops = Vec::new();
        let mut items: Vec<(String, Vec<(u64, String)>)> = Vec::new();
        let mut leases: Vec<(String, Sub)> = Vec::new();
        for (name, n) in &self.svc.nodes {
            if n.next_deadline().is_none_or(|d| d > now_ms) {
                continue;
            }
            if n.config.persist_items {
                let gone: Vec<(u64, String)> = n
                    .items
                    .iter()
                    .filter(|e| n.expired(e.published_ms, now_ms))
                    .map(|e| (e.seq, e.id.clone()))
                    .collect();
                for (seq, _) in &gone {
                    ops.push(PubsubOp::DeleteItem(name.clone(), *seq));
                }
                if !gone.is_empty() {
                    items.push((name.clone(), gone));
                }
            }
            for s in n
                .subs
                .iter()
                .filter(|s| s.opts.expire_ms != 0 && s.opts.expire_ms <= now_ms)
            {
                ops.push(s.delete(name));
                leases.push((name.clone(), s.clone()));
            }
        }
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if self.commit(&ops).is_err() {
            return Err(());
        }
        for (name, gone) in &items {
            let Some(n) = self.svc.nodes.get_mut(name) else {
                continue;
            };
            let seqs: Vec<u64> = gone.iter().map(|(s, _)| *s).collect();
            n.remove_seqs(&seqs, &mut self.eng.stored_total);
            if n.config.notify_retract {
                for (_, id) in gone {
                    let inner = self.items_event(name, &Self::retract_xml(id));
                    self.notify_items(name, &inner, None);
                }
            }
        }
        for (name, sub) in &leases {
            self.remove_sub(name, sub);
            self.subscription_changed(name, &sub.jid, &sub.subid, "none");
            self.notify_owners_sub(name, &sub.jid, &sub.subid, "none");
        }
        tracing::debug!(
            items = items.iter().map(|(_, g)| g.len()).sum::<usize>(),
            leases = leases.len(),
            "pub-sub expiry"
        );
        Ok(std::mem::take(&mut self.out))
    }
}
