//! Access control: affiliations (§4.1), node lookup, owner checks, the create policy and
//! the access models (§4.5).

use super::*;

impl Host<'_> {
    pub(super) fn affiliation(&self, node: &Node, bare: &Jid) -> Affiliation {
        // XEP-0163: the account is the one owner of its PEP nodes (`pubsub.admins` are
        // not); on the generic service, admins own every node.
        match &self.svc.owner {
            Some(o) if o == bare => return Affiliation::Owner,
            Some(_) => {}
            None if self.eng.admins.iter().any(|a| a == bare.as_str()) => {
                return Affiliation::Owner;
            }
            None => {}
        }
        node.affs
            .iter()
            .find(|(j, _)| j == bare.as_str())
            .map_or(Affiliation::None, |(_, a)| *a)
    }

    pub(super) fn node(&self, name: &str) -> Result<&Node, PubSubError> {
        self.svc.nodes.get(name).ok_or(PubSubError::NodeNotFound)
    }

    pub(super) fn node_mut(&mut self, name: &str) -> Result<&mut Node, PubSubError> {
        self.svc
            .nodes
            .get_mut(name)
            .ok_or(PubSubError::NodeNotFound)
    }

    pub(super) fn require_owner(&self, name: &str, bare: &Jid) -> Result<&Node, PubSubError> {
        let n = self.node(name)?;
        if self.affiliation(n, bare) != Affiliation::Owner {
            return Err(PubSubError::Forbidden("only owners may do this"));
        }
        Ok(n)
    }

    /// The name in `e`'s `node` attribute and that node, if `req`'s sender owns it.
    pub(super) fn owned_node(
        &self,
        e: &Element,
        req: &Req,
    ) -> Result<(String, &Node), PubSubError> {
        let name = Self::node_attr(e)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        Ok((name, n))
    }

    pub(super) fn may_create(&self, bare: &Jid) -> bool {
        if let Some(o) = &self.svc.owner {
            return o == bare;
        }
        self.eng.admins.iter().any(|a| a == bare.as_str())
            || match self.eng.create_policy {
                CreatePolicy::Anyone => true,
                CreatePolicy::Local => bare.domain() == self.eng.domain && bare.local().is_some(),
                CreatePolicy::Admins => false,
            }
    }

    /// May `bare` subscribe to / retrieve items of `node` (§4.5, §6.1.3, §6.5.9)?
    pub(super) fn check_access(&self, node: &Node, bare: &Jid) -> Result<(), PubSubError> {
        match self.affiliation(node, bare) {
            Affiliation::Outcast => return Err(PubSubError::Outcast),
            Affiliation::PublishOnly => {
                return Err(PubSubError::Forbidden("publish-only entities cannot read"));
            }
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => return Ok(()),
            Affiliation::None => {}
        }
        let owners = || {
            node.affs
                .iter()
                .filter(|(_, a)| *a == Affiliation::Owner)
                .filter_map(|(j, _)| Jid::parse(j).ok())
        };
        match node.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                if owners().any(|o| {
                    self.dir
                        .roster_entry(&o, bare)
                        .is_some_and(|(from, _)| from)
                }) {
                    Ok(())
                } else {
                    Err(PubSubError::PresenceSubscriptionRequired)
                }
            }
            AccessModel::Roster => {
                let allowed = &node.config.roster_groups_allowed;
                let ok = owners().any(|o| {
                    self.dir
                        .roster_entry(&o, bare)
                        .is_some_and(|(_, groups)| groups.iter().any(|g| allowed.contains(g)))
                });
                if ok {
                    Ok(())
                } else {
                    Err(PubSubError::NotInRosterGroup)
                }
            }
            AccessModel::Whitelist => Err(PubSubError::ClosedNode),
            AccessModel::Authorize => {
                let mine = || node.subs.iter().filter(|s| s.jid.bare() == *bare);
                if mine().any(|s| s.state == SubState::Subscribed) {
                    Ok(())
                } else if mine().any(|s| s.state == SubState::Pending) {
                    Err(PubSubError::PendingSubscription)
                } else {
                    Err(PubSubError::AuthorizationRequired)
                }
            }
        }
    }
}
