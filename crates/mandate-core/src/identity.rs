//! Identities (SPEC §2): humans, agents and services, each agent or service
//! with a parent, every chain ending at a human.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use crate::policy::ChainEntities;

/// The longest identity id, in bytes.
pub const IDENTITY_ID_BYTES_MAX: usize = 128;

/// An identity's id: 1–128 characters of `A-Za-z0-9._:@/-`, such as
/// `user:alice` or `agent:buyer`. Parsed, so a value of this type is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(String);

/// An identity id that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity id `{id}` must be 1-{IDENTITY_ID_BYTES_MAX} characters of A-Z a-z 0-9 . _ : @ / -")]
pub struct InvalidIdentityId {
    /// The id given, cut short.
    pub id: String,
}

impl IdentityId {
    /// Parses an identity id.
    pub fn parse(id: &str) -> Result<IdentityId, InvalidIdentityId> {
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'-');
        if id.is_empty() || id.len() > IDENTITY_ID_BYTES_MAX || !id.as_bytes().iter().all(allowed) {
            return Err(InvalidIdentityId { id: id.chars().take(IDENTITY_ID_BYTES_MAX).collect() });
        }
        Ok(IdentityId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest chain: an acting identity and its ancestors up to the human,
/// counted inclusively (a human alone is a chain of 1).
pub const CHAIN_DEPTH_MAX: usize = 32;

/// What an identity is. Only humans stand alone; agents and services act for
/// a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A person: the top of every chain, holding all authority of its own.
    Human,
    /// An AI agent acting for its parent.
    Agent,
    /// A program acting for its parent.
    Service,
}

impl Kind {
    /// The name SPEC §2 uses: `human`, `agent` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Human => "human",
            Kind::Agent => "agent",
            Kind::Service => "service",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an identity may still act. Revocation is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// It may act, if its ancestors are active too.
    Active,
    /// Neither it nor any descendant may act.
    Revoked,
}

impl Status {
    /// The name SPEC §2 uses: `active` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One identity of a tenant (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its id, unique in the tenant.
    pub id: IdentityId,
    /// Human, agent or service.
    pub kind: Kind,
    /// Whom it acts for: `None` exactly for humans.
    pub parent: Option<IdentityId>,
    /// Its own status; see [`Directory::chain`] for whether it is effective.
    pub status: Status,
    /// The key its grants are signed with, when it signs any.
    pub public_key: Option<VerifyingKey>,
    /// Free attributes, visible to Cedar policies.
    pub attributes: Map<String, Value>,
}

impl Identity {
    /// An active identity with no key and no attributes.
    pub fn new(id: IdentityId, kind: Kind, parent: Option<IdentityId>) -> Identity {
        Identity { id, kind, parent, status: Status::Active, public_key: None, attributes: Map::new() }
    }
}

/// Why an identity could not be added or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The id is taken.
    #[error("identity `{id}` already exists")]
    Duplicate {
        /// The id.
        id: IdentityId,
    },
    /// No identity has this id.
    #[error("identity `{id}` does not exist")]
    Unknown {
        /// The id.
        id: IdentityId,
    },
    /// A human was given a parent.
    #[error("human `{id}` cannot have a parent")]
    HumanWithParent {
        /// The human's id.
        id: IdentityId,
    },
    /// An agent or service was given no parent.
    #[error("{kind} `{id}` must have a parent")]
    ParentMissing {
        /// The identity's id.
        id: IdentityId,
        /// Its kind.
        kind: Kind,
    },
    /// The parent named does not exist.
    #[error("parent `{parent}` of `{id}` does not exist")]
    ParentUnknown {
        /// The new identity's id.
        id: IdentityId,
        /// The parent it names.
        parent: IdentityId,
    },
    /// The parent exists but is not effective: a new child could never act.
    #[error("parent `{parent}` of `{id}` is not effective: `{revoked}` is revoked")]
    ParentRevoked {
        /// The new identity's id.
        id: IdentityId,
        /// The parent it names.
        parent: IdentityId,
        /// The revoked identity on the parent's chain nearest to the parent.
        revoked: IdentityId,
    },
    /// The chain would be longer than [`CHAIN_DEPTH_MAX`].
    #[error("identity `{id}` would make a chain longer than {CHAIN_DEPTH_MAX}")]
    TooDeep {
        /// The new identity's id.
        id: IdentityId,
    },
}

/// Why an identity cannot act (SPEC §3, step 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No identity has this id (`identity_unknown`).
    #[error("identity `{id}` does not exist")]
    Unknown {
        /// The id asked about.
        id: IdentityId,
    },
    /// The identity or an ancestor is revoked (`identity_revoked`).
    #[error("identity `{id}` is not effective: `{revoked}` is revoked")]
    Revoked {
        /// The id asked about.
        id: IdentityId,
        /// The first revoked identity walking up from `id` (possibly `id`).
        revoked: IdentityId,
    },
}

/// An effective identity's chain: the acting identity, then each parent up to
/// the human. Only [`Directory::chain`] makes one, so it is never empty, ends
/// at a human and was effective when made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    acting: IdentityId,
    /// Parent first, the human last; empty when a human acts.
    ancestors: Vec<IdentityId>,
}

impl Chain {
    /// The identity asking.
    pub fn acting(&self) -> &IdentityId {
        &self.acting
    }

    /// The human at the top.
    pub fn human(&self) -> &IdentityId {
        self.ancestors.last().unwrap_or(&self.acting)
    }

    /// The ids from the acting identity up to the human, as decisions report
    /// them.
    pub fn ids(&self) -> impl Iterator<Item = &IdentityId> {
        std::iter::once(&self.acting).chain(&self.ancestors)
    }

    /// The delegation hops from the acting identity upward, each
    /// `(grantee, grantor)`: every hop needs a grant (SPEC §3, step 2). Empty
    /// when a human acts.
    pub fn hops(&self) -> impl Iterator<Item = (&IdentityId, &IdentityId)> {
        self.ids().zip(&self.ancestors)
    }

    /// The number of identities in the chain, 1 to [`CHAIN_DEPTH_MAX`].
    pub fn len(&self) -> usize {
        1 + self.ancestors.len()
    }

    /// Always false: a chain holds at least the acting identity.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A tenant's identities, with the rules of SPEC §2 kept on every insert.
///
/// INVARIANT (rooted-chains): every identity's parent was in the directory
/// before it, humans have no parent and no one else lacks one, and parents
/// never change. So parent links form a forest whose roots are humans, every
/// walk up ends at a human within [`CHAIN_DEPTH_MAX`] steps, and there are no
/// cycles. Kept by [`Directory::insert`], the only way in.
///
/// INVARIANT (cached-entities): each identity is stored with the Cedar
/// entities of its chain, built from its parent's when it is inserted. They
/// stay true because nothing that goes into them (parents, attributes) ever
/// changes, and what does change (status) is not in them. Any future way of
/// changing an identity's attributes must rebuild them for it and all its
/// descendants.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    identities: BTreeMap<IdentityId, Stored>,
    /// Each identity's direct children, for reporting revocation cascades.
    children: BTreeMap<IdentityId, Vec<IdentityId>>,
}

/// An identity and what decisions need of it, prepared once.
#[derive(Debug, Clone)]
struct Stored {
    identity: Identity,
    /// Its chain as Cedar entities (see INVARIANT (cached-entities)).
    entities: ChainEntities,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds an identity, refusing it unless: its id is new; a human has no
    /// parent; an agent or service has an existing, effective parent; and its
    /// chain is at most [`CHAIN_DEPTH_MAX`] long. O(depth).
    pub fn insert(&mut self, identity: Identity) -> Result<(), IdentityError> {
        let id = identity.id.clone();
        if self.identities.contains_key(&id) {
            return Err(IdentityError::Duplicate { id });
        }
        let parent_entities = match (identity.kind, &identity.parent) {
            (Kind::Human, None) => None,
            (Kind::Human, Some(_)) => return Err(IdentityError::HumanWithParent { id }),
            (kind @ (Kind::Agent | Kind::Service), None) => return Err(IdentityError::ParentMissing { id, kind }),
            (Kind::Agent | Kind::Service, Some(parent)) => {
                let parent_chain = self.chain(parent).map_err(|error| match error {
                    ChainError::Unknown { .. } => {
                        IdentityError::ParentUnknown { id: id.clone(), parent: parent.clone() }
                    }
                    ChainError::Revoked { revoked, .. } => {
                        IdentityError::ParentRevoked { id: id.clone(), parent: parent.clone(), revoked }
                    }
                })?;
                if parent_chain.len() >= CHAIN_DEPTH_MAX {
                    return Err(IdentityError::TooDeep { id });
                }
                let parent_entities = self.identities.get(parent).map(|stored| &stored.entities);
                Some(
                    parent_entities
                        .ok_or_else(|| IdentityError::ParentUnknown { id: id.clone(), parent: parent.clone() })?,
                )
            }
        };
        // INVARIANT (cached-entities): built here, from the parent's.
        let entities = ChainEntities::extend(parent_entities, &id, &identity.attributes);
        if let Some(parent) = &identity.parent {
            self.children.entry(parent.clone()).or_default().push(id.clone());
        }
        self.identities.insert(id, Stored { identity, entities });
        Ok(())
    }

    /// Revokes an identity, and so the authority of all its descendants.
    /// Returns whether it was active (revoking twice changes nothing).
    pub fn revoke(&mut self, id: &IdentityId) -> Result<bool, IdentityError> {
        let identity =
            &mut self.identities.get_mut(id).ok_or_else(|| IdentityError::Unknown { id: id.clone() })?.identity;
        let was_active = identity.status == Status::Active;
        identity.status = Status::Revoked;
        Ok(was_active)
    }

    /// The identity with this id.
    pub fn get(&self, id: &IdentityId) -> Option<&Identity> {
        self.identities.get(id).map(|stored| &stored.identity)
    }

    /// The Cedar entities of `id`'s chain, built when it was inserted.
    pub(crate) fn chain_entities(&self, id: &IdentityId) -> Option<&ChainEntities> {
        self.identities.get(id).map(|stored| &stored.entities)
    }

    /// The chain of an effective identity, acting identity first; otherwise
    /// why it cannot act, naming the first revoked identity walking up.
    /// O(depth · log n).
    pub fn chain(&self, id: &IdentityId) -> Result<Chain, ChainError> {
        let mut ancestors = Vec::new();
        let mut current = id;
        // INVARIANT (rooted-chains): this walk ends at a human within
        // CHAIN_DEPTH_MAX steps; a missing parent is reported, not assumed.
        loop {
            let Some(Stored { identity, .. }) = self.identities.get(current) else {
                return Err(ChainError::Unknown { id: current.clone() });
            };
            if identity.status == Status::Revoked {
                return Err(ChainError::Revoked { id: id.clone(), revoked: current.clone() });
            }
            match &identity.parent {
                Some(parent) => {
                    ancestors.push(parent.clone());
                    current = parent;
                }
                None => return Ok(Chain { acting: id.clone(), ancestors }),
            }
        }
    }

    /// Everyone below `id`, nearest first: whom revoking `id` cuts off. Empty
    /// for an unknown id or one without children.
    pub fn descendants(&self, id: &IdentityId) -> Vec<IdentityId> {
        let children = |parent: &IdentityId| self.children.get(parent).into_iter().flatten().cloned();
        let mut found: Vec<IdentityId> = children(id).collect();
        let mut next = 0;
        while let Some(parent) = found.get(next).cloned() {
            found.extend(children(&parent));
            next += 1;
        }
        found
    }

    /// All identities, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        self.identities.values().map(|stored| &stored.identity)
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }
}
