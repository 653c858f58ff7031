//! Cedar policy sets (SPEC §2) and step 3 of the decision (SPEC §3).
//!
//! A [`PolicySet`] is parsed, named and validated once, when a tenant replaces
//! its policies; [`PolicySet::evaluate`] then does no parsing at all.
//!
//! # Names
//!
//! Cedar names the policies of a text `policy0`, `policy1`, … by position and
//! ignores `@id` annotations. Mandate requires every policy to carry a unique
//! `@id("…")` and renames it accordingly (`Policy::new_id`), so decisions name
//! policies the way their authors wrote them.
//!
//! # Entities, request and context
//!
//! For a chain `agent:buyer → agent:team → user:alice` (acting identity
//! first, human last) and a request for action `payments.charge` on resource
//! `merchant://books`:
//!
//! - the principal is `Mandate::Identity::"agent:buyer"`; every identity on
//!   the chain is an entity of type `Mandate::Identity` whose parent is the
//!   next one up, and Cedar's transitive closure makes every ancestor a
//!   parent, so `principal in Mandate::Identity::"user:alice"` holds. Each
//!   entity carries its identity's `attributes` (`principal.department`);
//! - the action is `Mandate::Action::"payments.charge"`;
//! - the resource is `Mandate::Resource::"merchant://books"`, with no
//!   attributes;
//! - the context is the request's `context` object plus two reserved keys:
//!   `amounts`, a record of integers (`context.amounts.usd_cents`), and
//!   `chain`, the set of identity ids on the chain
//!   (`context.chain.contains("user:alice")`). Cedar has no lists: the order
//!   of the chain is carried by the principal's ancestry, not by `chain`. A
//!   request whose context already uses `amounts` or `chain` is refused.
//!
//! JSON becomes Cedar data literally, never Cedar syntax (no `__entity` or
//! `__extn` escapes): booleans, strings, integers that fit in 64 bits, arrays
//! (as sets: unordered, duplicates merged) and objects (as records). `null`,
//! numbers with a fraction or exponent (`1.0` included) and integers beyond
//! ±2^63 have no Cedar counterpart and are refused, naming the path; so is
//! nesting deeper than [`VALUE_DEPTH_MAX`]. Refusing, rather than skipping,
//! keeps `has` honest: a skipped attribute would make a guarded forbid such as
//! `principal has risk && principal.risk > 5` silently pass. Identity layers
//! can refuse such attributes up front with [`check_attributes`].
//!
//! # Schemas and actions
//!
//! Without a schema, policies are only parsed. With one (Cedar schema syntax),
//! policies are validated in strict mode when the set is created, and every
//! evaluation checks its entities and request against the schema, so a
//! validated policy cannot meet data of a type it did not expect. Mandate's
//! names fix what a schema must declare, in namespace `Mandate`:
//!
//! ```cedarschema
//! namespace Mandate {
//!     type Amounts = { usd_cents?: Long, tokens?: Long };
//!     entity Identity in [Identity] { department?: String, team?: String };
//!     entity Resource;
//!     action "payments";
//!     action "payments.charge" in ["payments"] appliesTo {
//!         principal: [Identity],
//!         resource: [Resource],
//!         context: { amounts: Amounts, chain: Set<String>, merchant?: String },
//!     };
//! }
//! ```
//!
//! - `entity Identity in [Identity]`: identities are parents of identities;
//!   declare the attributes identities may carry (an identity with an
//!   undeclared attribute cannot be evaluated).
//! - Each Mandate action is an action declaration with its dotted name as a
//!   string, `action "payments.charge"`, which Cedar names
//!   `Mandate::Action::"payments.charge"`; an entity type `Action` is
//!   refused by Cedar. An action the schema does not declare is refused at
//!   evaluation. Action groups (`action "payments.charge" in ["payments"]`)
//!   let a policy say `action in Mandate::Action::"payments"`; they exist only
//!   in a schema, so without one `action in` matches the action itself only.
//! - Every action's context declares `amounts` (a record listing the
//!   dimensions the action may carry, each optional, so read them behind
//!   `context.amounts has usd_cents`) and `chain: Set<String>`.
//!
//! # Failing closed
//!
//! Cedar skips a policy whose evaluation errors. Mandate does not let an error
//! open a door: if any forbid policy errors, the decision is
//! [`PolicyDecision::Forbid`] and the erroring forbids are among the
//! determining policies; an erroring permit simply does not permit. Every
//! error is reported in [`PolicyOutcome::errors`] either way. A request that
//! cannot be evaluated at all is a [`PolicyError`], which callers answer with
//! a deny.
//!
//! # What a decision costs
//!
//! Cedar evaluates every policy it is given, and that is most of a
//! decision's time; the rest is prepared once rather than per request:
//!
//! - an identity's entities are built when the directory inserts it, from
//!   its parent's (`ChainEntities`): parents and attributes never change, so
//!   a decision builds only its context;
//! - the set keeps its policies without source locations (rebuilt from
//!   Cedar's JSON form), which Cedar's evaluator would otherwise copy onto
//!   every intermediate value;
//! - policies scoped `action == Mandate::Action::"…"` are kept apart by
//!   action, with that constraint dropped, and evaluated only for requests
//!   for their action: for any other action they could only be false.
//!
//! None of this changes an answer: the same policies decide, with the same
//! errors, as if the whole text were given to Cedar with each request.
//!
//! # Versions
//!
//! [`PolicySet::version_hash`] is the SHA-256 (lowercase hex) of the RFC 8785
//! canonical JSON of `{"policies": <text>, "schema": <text>}` (`schema`
//! omitted when there is none): exactly the canonical body of the
//! `PUT /v1/policies` that installed it, so anyone can recompute it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use mandate_log::hash::Hash;
use serde_json::{Map, Value};

use crate::identity::IdentityId;

/// The largest policy text accepted, in bytes: far above any hand-written set,
/// and small enough that parsing stays in milliseconds.
pub const POLICY_TEXT_BYTES_MAX: usize = 1 << 20;

/// The most policies in one set. Cedar's evaluation time grows linearly with
/// the number of policies (about 1.7 ms at 2,000), and every decision pays it.
pub const POLICIES_MAX: usize = 1_000;

/// The largest schema text accepted, in bytes.
pub const SCHEMA_TEXT_BYTES_MAX: usize = 1 << 20;

/// The longest policy id, in bytes: ids are repeated in every decision.
pub const POLICY_ID_BYTES_MAX: usize = 128;

/// The deepest nesting of arrays and objects converted to Cedar values; the
/// conversion recurses, so the depth is bounded.
pub const VALUE_DEPTH_MAX: usize = 32;

/// The context key Mandate fills with the request's amounts.
pub const CONTEXT_AMOUNTS_KEY: &str = "amounts";

/// The context key Mandate fills with the chain's identity ids.
pub const CONTEXT_CHAIN_KEY: &str = "chain";

/// The context keys a request may not use itself.
pub const RESERVED_CONTEXT_KEYS: [&str; 2] = [CONTEXT_AMOUNTS_KEY, CONTEXT_CHAIN_KEY];

/// Cedar's entity type for identities.
pub const IDENTITY_ENTITY_TYPE: &str = "Mandate::Identity";

/// Cedar's entity type for actions.
pub const ACTION_ENTITY_TYPE: &str = "Mandate::Action";

/// Cedar's entity type for resources.
pub const RESOURCE_ENTITY_TYPE: &str = "Mandate::Resource";

/// The annotation that names a policy: `@id("…")`.
pub const ID_ANNOTATION: &str = "id";

/// The annotation that makes a permit ask a human: `@approval("required")`.
pub const APPROVAL_ANNOTATION: &str = "approval";

/// The one value [`APPROVAL_ANNOTATION`] takes.
pub const APPROVAL_REQUIRED: &str = "required";

/// The policy set of a new tenant: grants alone decide until rules are added
/// (SPEC §2).
pub const DEFAULT_POLICIES: &str = "@id(\"default-permit\")\npermit(principal, action, resource);\n";

/// A tenant's Cedar policies and optional schema, parsed, named and validated.
///
/// Cloning is cheap: the compiled set is shared.
#[derive(Debug, Clone)]
pub struct PolicySet {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    policies_text: String,
    schema_text: Option<String>,
    version_hash: String,
    /// The policies whose scope does not name one action: evaluated for
    /// every request.
    every_action: cedar_policy::PolicySet,
    /// The policies scoped `action == Mandate::Action::"…"`, by action name,
    /// each with that scope constraint dropped: evaluated only for requests
    /// for that action, for which the constraint holds. For any other action
    /// the constraint is false (scope constraints never error), so leaving
    /// those policies out changes neither the decision nor the errors.
    by_action: HashMap<String, cedar_policy::PolicySet>,
    /// How many policies there are in all.
    policy_count: usize,
    schema: Option<Schema>,
    authorizer: Authorizer,
    action_type: EntityTypeName,
    resource_type: EntityTypeName,
    /// The ids of permits annotated `@approval("required")`, read once here
    /// rather than from Cedar's annotations on every decision.
    approval_required: std::collections::BTreeSet<String>,
}

/// What [`PolicySet::evaluate`] asks: one request, with its chain resolved.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// The identities from the acting one up to its human, each with its
    /// `attributes` object. Each becomes a `Mandate::Identity` entity whose
    /// parent is the next one.
    pub chain: &'a [(IdentityId, &'a Map<String, Value>)],
    /// The action, e.g. `payments.charge`: `Mandate::Action::"payments.charge"`.
    pub action: &'a str,
    /// The resource, e.g. `repo://acme/api`: `Mandate::Resource::"repo://acme/api"`.
    pub resource: &'a str,
    /// The caller's context object, which must not use the reserved keys.
    pub context: &'a Map<String, Value>,
    /// Amounts in minor units by dimension: `context.amounts`.
    pub amounts: &'a BTreeMap<String, u64>,
}

/// What the policies decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDecision {
    /// At least one permit applies and no forbid applies or errored.
    Permit,
    /// A forbid applies, or errored (fail closed).
    Forbid,
    /// No forbid applies and no permit does either.
    NoPermit,
}

/// The result of evaluating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Permit, forbid or no permit.
    pub decision: PolicyDecision,
    /// The ids of the policies that decided, sorted: the satisfied permits for
    /// [`PolicyDecision::Permit`]; the satisfied and the erroring forbids for
    /// [`PolicyDecision::Forbid`]; none for [`PolicyDecision::NoPermit`].
    pub determining: Vec<String>,
    /// Every policy that failed to evaluate, sorted by policy id, whatever
    /// the decision.
    pub errors: Vec<PolicyEvaluationError>,
    /// The decision is a permit and a determining permit carries
    /// `@approval("required")`: a human must approve.
    pub approval_required: bool,
}

/// One policy that failed to evaluate, so that no error passes unseen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvaluationError {
    /// The policy's `@id`.
    pub policy: String,
    /// Cedar's message.
    pub message: String,
}

/// One strict-validation error, attributed to its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyValidationError {
    /// The policy's `@id`.
    pub policy: String,
    /// The validator's message.
    pub message: String,
}

impl fmt::Display for PolicyValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy `{}`: {}", self.policy, self.message)
    }
}

/// A JSON value with no Cedar counterpart, and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` {problem}")]
pub struct ValueError {
    /// Where the value sits, such as `context.items[2].price`.
    pub path: String,
    /// What is wrong with it.
    pub problem: ValueProblem,
}

/// Why a JSON value cannot become a Cedar value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    /// Cedar has no null; an absent key is the nearest thing, and guessing
    /// that would change what `has` answers.
    #[error("is null, which Cedar cannot represent")]
    Null,
    /// Cedar numbers are 64-bit integers.
    #[error("is not an integer between -2^63 and 2^63-1, the only numbers Cedar has")]
    NotAnInteger,
    /// Arrays and objects nested deeper than [`VALUE_DEPTH_MAX`].
    #[error("is nested deeper than {VALUE_DEPTH_MAX} levels")]
    TooDeep,
    /// Cedar refused the value for a reason of its own.
    #[error("was refused by cedar: {message}")]
    Refused {
        /// Cedar's message.
        message: String,
    },
}

/// Why a policy set was refused, or a request could not be evaluated.
///
/// The first group of variants comes from [`PolicySet::new`] (the text is the
/// caller's to fix); the second from [`PolicySet::evaluate`], where callers
/// must answer with a deny (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy text is over [`POLICY_TEXT_BYTES_MAX`].
    #[error("the policy text is {bytes} bytes, over the limit of {POLICY_TEXT_BYTES_MAX}")]
    PolicyTextTooLong {
        /// Its length.
        bytes: usize,
    },
    /// The schema text is over [`SCHEMA_TEXT_BYTES_MAX`].
    #[error("the schema text is {bytes} bytes, over the limit of {SCHEMA_TEXT_BYTES_MAX}")]
    SchemaTextTooLong {
        /// Its length.
        bytes: usize,
    },
    /// More than [`POLICIES_MAX`] policies.
    #[error("the policy set holds {count} policies, over the limit of {POLICIES_MAX}")]
    TooManyPolicies {
        /// How many there are.
        count: usize,
    },
    /// The policy text is not Cedar.
    #[error("cannot parse the policies: {}", .messages.join("; "))]
    Syntax {
        /// Cedar's messages, one per error.
        messages: Vec<String>,
    },
    /// The schema text is not a Cedar schema.
    #[error("cannot parse the schema: {message}")]
    Schema {
        /// Cedar's message.
        message: String,
    },
    /// A policy has no `@id("…")`.
    #[error("policy {position} (`{excerpt}`) has no `@id(\"…\")` annotation")]
    MissingId {
        /// Its position in the text, from 1.
        position: usize,
        /// The start of its text.
        excerpt: String,
    },
    /// A policy's `@id` is empty, too long or holds control characters.
    #[error("policy {position} has the id `{id}`: ids are 1-{POLICY_ID_BYTES_MAX} bytes without control characters")]
    InvalidId {
        /// Its position in the text, from 1.
        position: usize,
        /// The id, cut short.
        id: String,
    },
    /// Two policies share an `@id`.
    #[error("policies {first} and {second} both have the id `{id}`")]
    DuplicateId {
        /// The shared id.
        id: String,
        /// The position of the first, from 1.
        first: usize,
        /// The position of the second, from 1.
        second: usize,
    },
    /// A template (a policy with `?principal` or `?resource` slots): Mandate
    /// never links templates, so one would never apply.
    #[error("policy {position} is a template (it has `?principal` or `?resource`); templates are not supported")]
    Template {
        /// Its position in the text, from 1.
        position: usize,
    },
    /// `@approval` with a value other than `required`.
    #[error("policy `{id}` has `@approval(\"{value}\")`: the only value is `required`")]
    InvalidApproval {
        /// The policy's id.
        id: String,
        /// The value given.
        value: String,
    },
    /// `@approval` on a forbid, where it could never apply.
    #[error("policy `{id}` is a forbid with `@approval`: only a permit can require approval")]
    ApprovalOnForbid {
        /// The policy's id.
        id: String,
    },
    /// Strict validation against the schema failed.
    #[error("the policies do not validate against the schema: {}", join(.errors))]
    Validation {
        /// Every error, in policy order.
        errors: Vec<PolicyValidationError>,
    },
    /// Cedar refused something Mandate's own checks admit. A bug, reported
    /// rather than hidden.
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
    /// The request's context uses `amounts` or `chain`.
    #[error("the context key `{key}` is reserved: Mandate sets it")]
    ReservedContextKey {
        /// The key.
        key: String,
    },
    /// The request has no identity at all.
    #[error("the request has an empty identity chain")]
    EmptyChain,
    /// An identity appears twice in the chain, which would be a cycle.
    #[error("identity `{id}` appears twice in the chain")]
    ChainRepeats {
        /// The repeated identity.
        id: IdentityId,
    },
    /// A context value has no Cedar counterpart.
    #[error("the context value {0}")]
    ContextValue(ValueError),
    /// An identity attribute has no Cedar counterpart.
    #[error("identity `{identity}`: the attribute {error}")]
    AttributeValue {
        /// The identity.
        identity: IdentityId,
        /// The attribute and its problem.
        error: ValueError,
    },
    /// An amount does not fit in a Cedar integer.
    #[error("the amount `{dimension}` = {amount} is over 2^63-1, the largest Cedar integer")]
    AmountTooLarge {
        /// The dimension.
        dimension: String,
        /// The amount.
        amount: u64,
    },
    /// The identities do not conform to the schema.
    #[error("the identities do not match the schema: {message}")]
    Entities {
        /// Cedar's message.
        message: String,
    },
    /// The request (action, types or context) does not conform to the schema.
    #[error("the request does not match the schema: {message}")]
    Request {
        /// Cedar's message.
        message: String,
    },
}

/// A Cedar error with its causes: Cedar's top-level messages are often only
/// the category ("entity does not conform to the schema").
fn message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn join(errors: &[PolicyValidationError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl PolicySet {
    /// Parses, names and (with a schema) validates a policy set.
    ///
    /// Every policy must carry a unique `@id("…")`, which becomes its id;
    /// `@approval`, when present, must be `"required"` and on a permit. With a
    /// schema, every strict-validation error is reported, each with its policy.
    pub fn new(policies: &str, schema: Option<&str>) -> Result<PolicySet, PolicyError> {
        if policies.len() > POLICY_TEXT_BYTES_MAX {
            return Err(PolicyError::PolicyTextTooLong { bytes: policies.len() });
        }
        if let Some(schema) = schema.filter(|schema| schema.len() > SCHEMA_TEXT_BYTES_MAX) {
            return Err(PolicyError::SchemaTextTooLong { bytes: schema.len() });
        }
        let parsed = cedar_policy::PolicySet::from_str(policies)
            .map_err(|errors| PolicyError::Syntax { messages: errors.iter().map(ToString::to_string).collect() })?;
        let count = parsed.num_of_policies() + parsed.num_of_templates();
        if count > POLICIES_MAX {
            return Err(PolicyError::TooManyPolicies { count });
        }
        if let Some(position) = parsed.templates().map(|template| position(template.id())).min() {
            return Err(PolicyError::Template { position });
        }
        let cedar = rename(&parsed)?;
        let schema_parsed = match schema {
            Some(text) => {
                let (schema, _warnings) = Schema::from_cedarschema_str(text)
                    .map_err(|error| PolicyError::Schema { message: message(&error) })?;
                validate(&cedar, &schema)?;
                Some(schema)
            }
            None => None,
        };
        // Validation and messages above used the parsed policies, with their
        // positions in the text; evaluation uses the same policies without
        // them (see `without_source_locations`).
        let stripped = without_source_locations(&cedar)?;
        let type_name = |name: &str| {
            EntityTypeName::from_str(name).map_err(|error| PolicyError::Internal { message: error.to_string() })
        };
        let action_type = type_name(ACTION_ENTITY_TYPE)?;
        let (every_action, by_action) = split_by_action(&stripped, &action_type)?;
        Ok(PolicySet {
            inner: Arc::new(Compiled {
                version_hash: version_hash(policies, schema)?,
                policies_text: policies.to_owned(),
                schema_text: schema.map(str::to_owned),
                schema: schema_parsed,
                authorizer: Authorizer::new(),
                action_type,
                resource_type: type_name(RESOURCE_ENTITY_TYPE)?,
                approval_required: cedar
                    .policies()
                    .filter(|policy| policy.annotation(APPROVAL_ANNOTATION) == Some(APPROVAL_REQUIRED))
                    .map(|policy| policy.id().to_string())
                    .collect(),
                policy_count: cedar.num_of_policies(),
                every_action,
                by_action,
            }),
        })
    }

    /// The policy set of a new tenant, [`DEFAULT_POLICIES`]: permit
    /// everything, so that grants alone decide.
    pub fn default_for_new_tenant() -> Result<PolicySet, PolicyError> {
        PolicySet::new(DEFAULT_POLICIES, None)
    }

    /// The SHA-256 (lowercase hex) of the canonical JSON
    /// `{"policies": …, "schema": …}`, which each decision records.
    pub fn version_hash(&self) -> String {
        self.inner.version_hash.clone()
    }

    /// The policy text, as given.
    pub fn policies_text(&self) -> &str {
        &self.inner.policies_text
    }

    /// The schema text, as given.
    pub fn schema_text(&self) -> Option<&str> {
        self.inner.schema_text.as_deref()
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.inner.policy_count
    }

    /// Whether the set has no policies (and so permits nothing).
    pub fn is_empty(&self) -> bool {
        self.inner.policy_count == 0
    }

    /// Evaluates one request, failing closed: an erroring forbid forbids.
    ///
    /// An `Err` means the request could not be put to Cedar at all (a
    /// reserved or unrepresentable context value, data that does not match
    /// the schema); the caller must deny.
    pub fn evaluate(&self, request: &PolicyRequest<'_>) -> Result<PolicyOutcome, PolicyError> {
        let chain = ChainEntities::from_chain(request.chain);
        self.evaluate_chain(&chain, request.action, request.resource, request.context, request.amounts)
    }

    /// [`PolicySet::evaluate`] with the chain's entities already built (the
    /// directory keeps them per identity), so that a decision builds only
    /// its context. Same checks, in the same order, with the same errors.
    pub(crate) fn evaluate_chain(
        &self,
        chain: &ChainEntities,
        action: &str,
        resource: &str,
        context: &Map<String, Value>,
        amounts: &BTreeMap<String, u64>,
    ) -> Result<PolicyOutcome, PolicyError> {
        let inner = &*self.inner;
        if let Some(key) = RESERVED_CONTEXT_KEYS.iter().find(|key| context.contains_key(**key)) {
            return Err(PolicyError::ReservedContextKey { key: (*key).to_owned() });
        }
        let built = chain.built.as_ref().as_ref().map_err(Clone::clone)?;
        // With a schema, every evaluation checks the identities against it
        // (and adds the schema's action entities); without one, the chain's
        // entities are used as they are, not even copied.
        let validated;
        let entities = match &inner.schema {
            None => &built.entities,
            Some(schema) => {
                validated = Entities::from_entities(built.entities.iter().cloned(), Some(schema))
                    .map_err(|error| PolicyError::Entities { message: message(&error) })?;
                &validated
            }
        };
        let context = self::context(context, amounts, &built.chain_set)?;
        let action_name = action;
        let action = EntityUid::from_type_name_and_id(inner.action_type.clone(), EntityId::new(action));
        let resource = EntityUid::from_type_name_and_id(inner.resource_type.clone(), EntityId::new(resource));
        let cedar_request = Request::new(built.principal.clone(), action, resource, context, inner.schema.as_ref())
            .map_err(|error| PolicyError::Request { message: message(&error) })?;
        let mut responses = Vec::with_capacity(2);
        for set in std::iter::once(&inner.every_action).chain(inner.by_action.get(action_name)) {
            if !set.is_empty() {
                responses.push((set, inner.authorizer.is_authorized(&cedar_request, set, entities)));
            }
        }
        Ok(inner.outcome(&responses))
    }
}

/// One identity's chain as Cedar sees it: a `Mandate::Identity` entity per
/// identity on the chain, each with its attributes and every identity above
/// it as a parent; the principal's uid; and the `chain` context set. Or, if
/// the chain cannot be put to Cedar, the error every evaluation reports.
///
/// An identity's parents and attributes never change once it exists, so the
/// directory builds this once per identity, from its parent's, when the
/// identity is inserted; a decision then builds no entities at all. Cloning
/// is cheap: the built chain is shared.
#[derive(Debug, Clone)]
pub(crate) struct ChainEntities {
    built: Arc<Result<BuiltChain, PolicyError>>,
}

#[derive(Debug)]
struct BuiltChain {
    /// The acting identity's uid.
    principal: EntityUid,
    /// The ids from the acting identity up to the human.
    ids: Vec<IdentityId>,
    /// `ids` as a Cedar set: the context's `chain`.
    chain_set: RestrictedExpression,
    /// The chain's entities, transitive closure computed, no schema applied.
    entities: Entities,
}

impl ChainEntities {
    /// Builds the entities of a chain given acting identity first, human last.
    /// The checks and their order are those of the original per-request
    /// construction: walking from the human down, a repeated identity, then
    /// an attribute without a Cedar counterpart, is reported for the first
    /// identity that has one.
    pub(crate) fn from_chain(chain: &[(IdentityId, &Map<String, Value>)]) -> ChainEntities {
        let mut built: Option<ChainEntities> = None;
        for (id, attributes) in chain.iter().rev() {
            built = Some(ChainEntities::extend(built.as_ref(), id, attributes));
        }
        built.unwrap_or_else(|| ChainEntities { built: Arc::new(Err(PolicyError::EmptyChain)) })
    }

    /// The chain of `id`, whose parent's chain is `parent` (`None` for a
    /// human). An error of the parent's chain is the child's too.
    pub(crate) fn extend(
        parent: Option<&ChainEntities>,
        id: &IdentityId,
        attributes: &Map<String, Value>,
    ) -> ChainEntities {
        let above = match parent {
            None => None,
            Some(parent) => match parent.built.as_ref() {
                Ok(above) => Some(above),
                Err(_) => return parent.clone(),
            },
        };
        ChainEntities { built: Arc::new(BuiltChain::extend(above, id, attributes)) }
    }
}

impl BuiltChain {
    fn extend(
        above: Option<&BuiltChain>,
        id: &IdentityId,
        attributes: &Map<String, Value>,
    ) -> Result<BuiltChain, PolicyError> {
        let ids_above = above.map(|above| above.ids.as_slice()).unwrap_or_default();
        // A linear scan: chains are at most 32 deep, and this allocates nothing.
        if ids_above.contains(id) {
            return Err(PolicyError::ChainRepeats { id: id.clone() });
        }
        let attrs = record_fields(attributes, 0).map_err(|problem| PolicyError::AttributeValue {
            identity: id.clone(),
            error: problem.render("attributes"),
        })?;
        let identity_type =
            IDENTITY_TYPE.as_ref().map_err(|message| PolicyError::Internal { message: message.clone() })?;
        let principal = EntityUid::from_type_name_and_id(identity_type.clone(), EntityId::new(id.as_str()));
        let parents: HashSet<EntityUid> = above.map(|above| above.principal.clone()).into_iter().collect();
        let entity = Entity::new(principal.clone(), attrs, parents).map_err(|error| PolicyError::AttributeValue {
            identity: id.clone(),
            error: ValueError {
                path: "attributes".to_owned(),
                problem: ValueProblem::Refused { message: error.to_string() },
            },
        })?;
        // The identities above keep their entities (shared, not copied): only
        // the new one gains ancestors when the closure is repaired.
        let entities = match above {
            None => Entities::from_entities([entity], None),
            Some(above) => above.entities.clone().add_entities([entity], None),
        }
        .map_err(|error| PolicyError::Entities { message: message(&error) })?;
        let mut ids = Vec::with_capacity(ids_above.len() + 1);
        ids.push(id.clone());
        ids.extend_from_slice(ids_above);
        let chain_set = RestrictedExpression::new_set(
            ids.iter().map(|id| RestrictedExpression::new_string(id.as_str().to_owned())),
        );
        Ok(BuiltChain { principal, ids, chain_set, entities })
    }
}

/// `Mandate::Identity`, parsed once.
static IDENTITY_TYPE: std::sync::LazyLock<Result<EntityTypeName, String>> =
    std::sync::LazyLock::new(|| EntityTypeName::from_str(IDENTITY_ENTITY_TYPE).map_err(|error| error.to_string()));

/// Checks that every attribute value has a Cedar counterpart (see the module
/// documentation), so that an identity layer can refuse bad attributes when
/// they are set rather than fail every later decision.
pub fn check_attributes(attributes: &Map<String, Value>) -> Result<(), ValueError> {
    record(attributes, 0).map(drop).map_err(|problem| problem.render("attributes"))
}

impl Compiled {
    /// Reads Cedar's responses the Mandate way: errors in forbids forbid.
    ///
    /// Each response is for one part of the set ([`Compiled::every_action`],
    /// the action's own part); together they answer as Cedar would for the
    /// whole set. Cedar's reasons are the satisfied permits of an allow and
    /// the satisfied forbids of a deny, so a forbid satisfied in any part
    /// forbids, and otherwise a permit satisfied in any part permits.
    fn outcome(&self, responses: &[(&cedar_policy::PolicySet, cedar_policy::Response)]) -> PolicyOutcome {
        let mut errors = Vec::new();
        let (mut permits, mut forbids) = (Vec::new(), Vec::new());
        for (set, response) in responses {
            for error in response.diagnostics().errors() {
                let AuthorizationError::PolicyEvaluationError(error) = error;
                let id = error.policy_id();
                errors.push(PolicyEvaluationError { policy: id.to_string(), message: error.inner().to_string() });
                // INVARIANT (fail-closed): a policy that is not known to be a
                // permit counts as a forbid when it errors.
                if set.policy(id).map(Policy::effect) != Some(Effect::Permit) {
                    forbids.push(id.to_string());
                }
            }
            let satisfied = response.diagnostics().reason().map(ToString::to_string);
            match response.decision() {
                Decision::Allow => permits.extend(satisfied),
                Decision::Deny => forbids.extend(satisfied),
            }
        }
        errors.sort_by(|a, b| (&a.policy, &a.message).cmp(&(&b.policy, &b.message)));
        let (decision, mut determining) = if !forbids.is_empty() {
            (PolicyDecision::Forbid, forbids)
        } else if !permits.is_empty() {
            (PolicyDecision::Permit, permits)
        } else {
            (PolicyDecision::NoPermit, Vec::new())
        };
        determining.sort_unstable();
        let approval_required =
            decision == PolicyDecision::Permit && determining.iter().any(|id| self.approval_required.contains(id));
        PolicyOutcome { decision, determining, errors, approval_required }
    }
}

/// The position of a policy in its text, from 1, read from the id Cedar gives
/// it (`policy0` is the first).
fn position(generated: &PolicyId) -> usize {
    let number = AsRef::<str>::as_ref(generated).strip_prefix("policy").and_then(|n| n.parse::<usize>().ok());
    number.map_or(usize::MAX, |n| n.saturating_add(1))
}

/// A new Cedar set with each policy renamed to its `@id`, checked for
/// presence, shape and uniqueness in text order, and its `@approval` checked.
fn rename(parsed: &cedar_policy::PolicySet) -> Result<cedar_policy::PolicySet, PolicyError> {
    let mut ordered: Vec<(usize, &Policy)> = parsed.policies().map(|policy| (position(policy.id()), policy)).collect();
    ordered.sort_unstable_by_key(|(position, _)| *position);
    let mut positions: HashMap<&str, usize> = HashMap::with_capacity(ordered.len());
    let mut renamed = cedar_policy::PolicySet::new();
    for (position, policy) in ordered {
        let Some(id) = policy.annotation(ID_ANNOTATION) else {
            return Err(PolicyError::MissingId { position, excerpt: excerpt(&policy.to_string()) });
        };
        if id.is_empty() || id.len() > POLICY_ID_BYTES_MAX || id.chars().any(char::is_control) {
            let id = id.chars().filter(|c| !c.is_control()).take(POLICY_ID_BYTES_MAX).collect();
            return Err(PolicyError::InvalidId { position, id });
        }
        if let Some(first) = positions.insert(id, position) {
            return Err(PolicyError::DuplicateId { id: id.to_owned(), first, second: position });
        }
        match (policy.annotation(APPROVAL_ANNOTATION), policy.effect()) {
            (None, _) | (Some(APPROVAL_REQUIRED), Effect::Permit) => {}
            (Some(APPROVAL_REQUIRED), Effect::Forbid) => {
                return Err(PolicyError::ApprovalOnForbid { id: id.to_owned() });
            }
            (Some(value), _) => {
                return Err(PolicyError::InvalidApproval { id: id.to_owned(), value: value.to_owned() });
            }
        }
        renamed
            .add(policy.new_id(PolicyId::new(id)))
            .map_err(|error| PolicyError::Internal { message: error.to_string() })?;
    }
    Ok(renamed)
}

/// The same policies rebuilt from Cedar's JSON form, which carries no source
/// locations. Cedar's evaluator copies an expression's location onto every
/// intermediate value and error (a reference count taken and dropped per
/// node); without locations that work disappears, and nothing else changes:
/// the JSON form is Cedar's lossless exchange format, equality of values
/// ignores locations, and Mandate reports evaluation errors by their message,
/// which does not include one.
fn without_source_locations(cedar: &cedar_policy::PolicySet) -> Result<cedar_policy::PolicySet, PolicyError> {
    let mut rebuilt = cedar_policy::PolicySet::new();
    for policy in cedar.policies() {
        let json = policy.to_json().map_err(|error| PolicyError::Internal { message: error.to_string() })?;
        let policy = Policy::from_json(Some(policy.id().clone()), json)
            .map_err(|error| PolicyError::Internal { message: error.to_string() })?;
        rebuilt.add(policy).map_err(|error| PolicyError::Internal { message: error.to_string() })?;
    }
    Ok(rebuilt)
}

/// Splits a set into the policies every request evaluates and those scoped
/// to one action (see [`Compiled::by_action`]). Only `action ==` on a
/// `Mandate::Action` is split out: `action in` depends on the schema's action
/// groups, and an action of another type never matches a request, so both
/// stay with every action, where Cedar decides them as before.
fn split_by_action(
    cedar: &cedar_policy::PolicySet,
    action_type: &EntityTypeName,
) -> Result<(cedar_policy::PolicySet, HashMap<String, cedar_policy::PolicySet>), PolicyError> {
    let internal = |error: &dyn fmt::Display| PolicyError::Internal { message: error.to_string() };
    let mut every_action = cedar_policy::PolicySet::new();
    let mut by_action: HashMap<String, cedar_policy::PolicySet> = HashMap::new();
    for policy in cedar.policies() {
        match policy.action_constraint() {
            ActionConstraint::Eq(action) if action.type_name() == action_type => {
                let mut json = policy.to_json().map_err(|error| internal(&error))?;
                let Value::Object(fields) = &mut json else {
                    return Err(internal(&format!("policy `{}` is not a JSON object", policy.id())));
                };
                fields.insert("action".to_owned(), serde_json::json!({ "op": "All" }));
                let unscoped = Policy::from_json(Some(policy.id().clone()), json).map_err(|error| internal(&error))?;
                let part = by_action.entry(action.id().unescaped().to_owned()).or_default();
                part.add(unscoped).map_err(|error| internal(&error))?;
            }
            _ => every_action.add(policy.clone()).map_err(|error| internal(&error))?,
        }
    }
    Ok((every_action, by_action))
}

/// Strict validation; every error, each with its policy, in a stable order.
fn validate(cedar: &cedar_policy::PolicySet, schema: &Schema) -> Result<(), PolicyError> {
    let result = Validator::new(schema.clone()).validate(cedar, ValidationMode::Strict);
    let mut errors: Vec<PolicyValidationError> = result
        .validation_errors()
        .map(|error| {
            let policy = error.policy_id().to_string();
            let message = error.to_string();
            // Cedar starts each message with "for policy `<id>`, ": the id is
            // reported on its own.
            let message = message.strip_prefix(&format!("for policy `{policy}`, ")).unwrap_or(&message).to_owned();
            PolicyValidationError { policy, message }
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_by(|a, b| (&a.policy, &a.message).cmp(&(&b.policy, &b.message)));
    errors.dedup();
    Err(PolicyError::Validation { errors })
}

/// SHA-256 over the RFC 8785 form of `{"policies": …, "schema": …}`.
fn version_hash(policies: &str, schema: Option<&str>) -> Result<String, PolicyError> {
    let mut object = Map::new();
    object.insert("policies".to_owned(), Value::String(policies.to_owned()));
    if let Some(schema) = schema {
        object.insert("schema".to_owned(), Value::String(schema.to_owned()));
    }
    let bytes = mandate_log::json::canonicalize_object(&object)
        .map_err(|error| PolicyError::Internal { message: error.to_string() })?;
    Ok(Hash::digest(&bytes).to_hex())
}

/// The start of a policy's text on one line, for messages.
fn excerpt(text: &str) -> String {
    const EXCERPT_CHARS_MAX: usize = 60;
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() <= EXCERPT_CHARS_MAX {
        return line;
    }
    let mut cut: String = line.chars().take(EXCERPT_CHARS_MAX).collect();
    cut.push('…');
    cut
}

/// The context: the caller's keys, then `amounts` and `chain`.
fn context(
    caller: &Map<String, Value>,
    amounts: &BTreeMap<String, u64>,
    chain_set: &RestrictedExpression,
) -> Result<Context, PolicyError> {
    let mut pairs = record_fields(caller, 0).map_err(|problem| PolicyError::ContextValue(problem.render("context")))?;
    let mut amount_fields = Vec::with_capacity(amounts.len());
    for (dimension, amount) in amounts {
        let Ok(value) = i64::try_from(*amount) else {
            return Err(PolicyError::AmountTooLarge { dimension: dimension.clone(), amount: *amount });
        };
        amount_fields.push((dimension.clone(), RestrictedExpression::new_long(value)));
    }
    let amounts = RestrictedExpression::new_record(amount_fields)
        .map_err(|error| PolicyError::Internal { message: error.to_string() })?;
    pairs.insert(CONTEXT_AMOUNTS_KEY.to_owned(), amounts);
    pairs.insert(CONTEXT_CHAIN_KEY.to_owned(), chain_set.clone());
    Context::from_pairs(pairs).map_err(|error| PolicyError::Internal { message: error.to_string() })
}

/// A JSON value that failed to convert, with its path gathered on the way
/// out (so a successful conversion builds no paths).
struct Problem {
    /// Path segments, innermost first.
    reversed_path: Vec<Segment>,
    problem: ValueProblem,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl Problem {
    fn new(problem: ValueProblem) -> Problem {
        Problem { reversed_path: Vec::new(), problem }
    }

    fn at(mut self, segment: Segment) -> Problem {
        self.reversed_path.push(segment);
        self
    }

    /// The path in Cedar's notation: `.key` for identifiers, `["key"]`
    /// otherwise, `[n]` for array positions.
    fn render(self, root: &str) -> ValueError {
        let mut path = root.to_owned();
        for segment in self.reversed_path.iter().rev() {
            match segment {
                Segment::Key(key) if is_identifier(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Segment::Key(key) => path.push_str(&format!("[{key:?}]")),
                Segment::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        ValueError { path, problem: self.problem }
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A JSON value as a Cedar value (see the module documentation).
fn value(value: &Value, depth: usize) -> Result<RestrictedExpression, Problem> {
    match value {
        Value::Null => Err(Problem::new(ValueProblem::Null)),
        Value::Bool(flag) => Ok(RestrictedExpression::new_bool(*flag)),
        Value::Number(number) => {
            number.as_i64().map(RestrictedExpression::new_long).ok_or_else(|| Problem::new(ValueProblem::NotAnInteger))
        }
        Value::String(text) => Ok(RestrictedExpression::new_string(text.clone())),
        Value::Array(items) => {
            if depth >= VALUE_DEPTH_MAX {
                return Err(Problem::new(ValueProblem::TooDeep));
            }
            let mut elements = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                elements.push(self::value(item, depth + 1).map_err(|problem| problem.at(Segment::Index(index)))?);
            }
            Ok(RestrictedExpression::new_set(elements))
        }
        Value::Object(object) => record(object, depth),
    }
}

/// A JSON object as a Cedar record.
fn record(object: &Map<String, Value>, depth: usize) -> Result<RestrictedExpression, Problem> {
    let fields = record_fields(object, depth)?;
    RestrictedExpression::new_record(fields)
        .map_err(|error| Problem::new(ValueProblem::Refused { message: error.to_string() }))
}

/// A JSON object's fields as Cedar values.
fn record_fields(object: &Map<String, Value>, depth: usize) -> Result<HashMap<String, RestrictedExpression>, Problem> {
    if depth >= VALUE_DEPTH_MAX {
        return Err(Problem::new(ValueProblem::TooDeep));
    }
    let mut fields = HashMap::with_capacity(object.len() + RESERVED_CONTEXT_KEYS.len());
    for (key, field) in object {
        let converted = value(field, depth + 1).map_err(|problem| problem.at(Segment::Key(key.clone())))?;
        fields.insert(key.clone(), converted);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    //! The prepared evaluation against Cedar given the whole text per
    //! request, the way the first version of this module did it.

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Policies over the tests' vocabulary: scoped to one action, to several,
    /// to none, to an action of another type; erroring permits and forbids;
    /// approval; ancestry and attributes.
    const CORPUS: [&str; 11] = [
        r#"@id("p-any") permit(principal, action, resource);"#,
        r#"@id("p-charge") permit(principal, action == Mandate::Action::"payments.charge", resource)
           when { context.amounts has usd_cents && context.amounts.usd_cents <= 5000 };"#,
        r#"@id("f-refund") forbid(principal, action == Mandate::Action::"payments.refund", resource);"#,
        r#"@id("f-charge-errs") forbid(principal, action == Mandate::Action::"payments.charge", resource)
           when { principal.missing == 1 };"#,
        r#"@id("p-refund-errs") permit(principal, action == Mandate::Action::"payments.refund", resource)
           when { context.nope };"#,
        r#"@id("p-in") permit(principal in Mandate::Identity::"user:alice",
           action in [Mandate::Action::"payments.charge", Mandate::Action::"github.push"], resource);"#,
        r#"@id("f-other-type") forbid(principal, action == Action::"payments.charge", resource);"#,
        r#"@id("p-approval") @approval("required") permit(principal, action == Mandate::Action::"github.push",
           resource == Mandate::Resource::"repo://acme/api");"#,
        r#"@id("f-casino") forbid(principal, action, resource)
           when { context has merchant && context.merchant == "casino" };"#,
        r#"@id("f-ops") forbid(principal, action == Mandate::Action::"github.push", resource)
           when { principal has team && principal.team == "ops" };"#,
        r#"@id("p-chain") permit(principal, action == Mandate::Action::"payments.charge", resource)
           when { context.chain.contains("user:bob") && Mandate::Identity::"user:bob".department == "sales" };"#,
    ];

    const SCHEMA: &str = r#"
        namespace Mandate {
            type Amounts = { usd_cents?: Long };
            entity Identity in [Identity] { department?: String, team?: String };
            entity Resource;
            action "payments";
            action "payments.charge", "payments.refund" in ["payments"] appliesTo {
                principal: [Identity], resource: [Resource],
                context: { amounts: Amounts, chain: Set<String>, merchant?: String },
            };
        }
    "#;

    const SCHEMA_POLICIES: &str = r#"
        @id("group") permit(principal in Mandate::Identity::"user:alice", action in Mandate::Action::"payments", resource);
        @id("charge-cap") forbid(principal, action == Mandate::Action::"payments.charge", resource)
        when { context.amounts has usd_cents && context.amounts.usd_cents > 5000 };
        @id("refund-team") forbid(principal, action == Mandate::Action::"payments.refund", resource)
        when { principal has team && principal.team == "ops" };
    "#;

    /// One request's data, owned.
    #[derive(Debug, Clone)]
    struct Ask {
        chain: Vec<(IdentityId, Map<String, Value>)>,
        action: &'static str,
        resource: &'static str,
        context: Map<String, Value>,
        amounts: BTreeMap<String, u64>,
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => Map::new(),
        }
    }

    fn ask() -> impl Strategy<Value = Ask> {
        let member = |id: &str, attributes: Value| (IdentityId::parse(id).unwrap(), object(attributes));
        let chains = vec![
            vec![member("agent:buyer", json!({"team": "ops"})), member("user:alice", json!({"department": "sales"}))],
            vec![
                member("agent:sub", json!({})),
                member("agent:buyer", json!({"team": "books"})),
                member("user:bob", json!({"department": "sales"})),
            ],
            vec![member("user:alice", json!({}))],
            vec![member("agent:odd", json!({"score": 0.5})), member("user:alice", json!({}))],
        ];
        (
            prop::sample::select(chains),
            prop::sample::select(vec!["payments.charge", "payments.refund", "github.push", "other"]),
            prop::sample::select(vec!["merchant://books", "repo://acme/api"]),
            prop::sample::select(vec![json!({}), json!({"merchant": "casino"}), json!({"merchant": "books"})]),
            prop::option::of(prop::sample::select(vec![100_u64, 5000, 6000])),
        )
            .prop_map(|(chain, action, resource, context, usd_cents)| Ask {
                chain,
                action,
                resource,
                context: object(context),
                amounts: usd_cents.map(|amount| ("usd_cents".to_owned(), amount)).into_iter().collect(),
            })
    }

    /// Cedar given everything per request, read as the first version read it.
    fn reference(text: &str, schema: Option<&str>, ask: &Ask) -> Result<PolicyOutcome, ()> {
        let cedar = rename(&cedar_policy::PolicySet::from_str(text).unwrap()).unwrap();
        let schema = schema.map(|text| Schema::from_cedarschema_str(text).unwrap().0);
        let uid = |id: &IdentityId| {
            EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(IDENTITY_ENTITY_TYPE).unwrap(),
                EntityId::new(id.as_str()),
            )
        };
        let mut entities = Vec::new();
        for (index, (id, attributes)) in ask.chain.iter().enumerate() {
            let attrs = record_fields(attributes, 0).map_err(drop)?;
            let parents: HashSet<EntityUid> =
                ask.chain.get(index + 1).map(|(parent, _)| uid(parent)).into_iter().collect();
            entities.push(Entity::new(uid(id), attrs, parents).map_err(drop)?);
        }
        let entities = Entities::from_entities(entities, schema.as_ref()).map_err(drop)?;
        let mut pairs = record_fields(&ask.context, 0).map_err(drop)?;
        let amounts = ask
            .amounts
            .iter()
            .map(|(key, amount)| (key.clone(), RestrictedExpression::new_long(i64::try_from(*amount).unwrap())));
        pairs.insert("amounts".to_owned(), RestrictedExpression::new_record(amounts).unwrap());
        let chain = ask.chain.iter().map(|(id, _)| RestrictedExpression::new_string(id.to_string()));
        pairs.insert("chain".to_owned(), RestrictedExpression::new_set(chain));
        let type_name = |name: &str| EntityTypeName::from_str(name).unwrap();
        let request = Request::new(
            uid(&ask.chain[0].0),
            EntityUid::from_type_name_and_id(type_name(ACTION_ENTITY_TYPE), EntityId::new(ask.action)),
            EntityUid::from_type_name_and_id(type_name(RESOURCE_ENTITY_TYPE), EntityId::new(ask.resource)),
            Context::from_pairs(pairs).unwrap(),
            schema.as_ref(),
        )
        .map_err(drop)?;
        let response = Authorizer::new().is_authorized(&request, &cedar, &entities);

        let mut errors = Vec::new();
        let mut erroring_forbids = Vec::new();
        for error in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(error) = error;
            errors.push(PolicyEvaluationError {
                policy: error.policy_id().to_string(),
                message: error.inner().to_string(),
            });
            if cedar.policy(error.policy_id()).map(Policy::effect) != Some(Effect::Permit) {
                erroring_forbids.push(error.policy_id().to_string());
            }
        }
        errors.sort_by(|a, b| (&a.policy, &a.message).cmp(&(&b.policy, &b.message)));
        let satisfied = response.diagnostics().reason();
        let (decision, mut determining) = match response.decision() {
            Decision::Allow if erroring_forbids.is_empty() => {
                (PolicyDecision::Permit, satisfied.map(ToString::to_string).collect())
            }
            Decision::Allow => (PolicyDecision::Forbid, erroring_forbids),
            Decision::Deny => {
                let mut forbids: Vec<String> = satisfied.map(ToString::to_string).collect();
                forbids.extend(erroring_forbids);
                let decision = if forbids.is_empty() { PolicyDecision::NoPermit } else { PolicyDecision::Forbid };
                (decision, forbids)
            }
        };
        determining.sort_unstable();
        let approval_required = decision == PolicyDecision::Permit
            && determining.iter().any(|id| {
                cedar.policy(&PolicyId::new(id)).and_then(|policy| policy.annotation(APPROVAL_ANNOTATION))
                    == Some(APPROVAL_REQUIRED)
            });
        Ok(PolicyOutcome { decision, determining, errors, approval_required })
    }

    fn prepared(set: &PolicySet, ask: &Ask) -> Result<PolicyOutcome, ()> {
        let chain: Vec<(IdentityId, &Map<String, Value>)> =
            ask.chain.iter().map(|(id, attributes)| (id.clone(), attributes)).collect();
        let request = PolicyRequest {
            chain: &chain,
            action: ask.action,
            resource: ask.resource,
            context: &ask.context,
            amounts: &ask.amounts,
        };
        set.evaluate(&request).map_err(drop)
    }

    #[test]
    fn actions_are_split_out_only_when_scoped_by_equality() {
        let set = PolicySet::new(&CORPUS.concat(), None).unwrap();
        assert_eq!(set.len(), CORPUS.len());
        let mut split: Vec<(&str, usize)> =
            set.inner.by_action.iter().map(|(action, part)| (action.as_str(), part.num_of_policies())).collect();
        split.sort_unstable();
        assert_eq!(split, [("github.push", 2), ("payments.charge", 3), ("payments.refund", 2)]);
        assert_eq!(set.inner.every_action.num_of_policies(), 4);
        for part in set.inner.by_action.values() {
            assert!(part.policies().all(|policy| policy.action_constraint() == ActionConstraint::Any));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Same decision, determining policies, errors (messages included)
        /// and approval as Cedar given the whole text, or an error in both.
        #[test]
        fn prepared_evaluation_matches_cedar_given_everything(
            policies in prop::sample::subsequence(CORPUS.to_vec(), 0..=CORPUS.len()),
            asks in prop::collection::vec(ask(), 1..8),
        ) {
            let text = policies.join("\n");
            let set = PolicySet::new(&text, None).unwrap();
            for ask in &asks {
                prop_assert_eq!(prepared(&set, ask), reference(&text, None, ask), "{:?}", ask);
            }
        }

        #[test]
        fn prepared_evaluation_matches_cedar_with_a_schema(asks in prop::collection::vec(ask(), 1..8)) {
            let set = PolicySet::new(SCHEMA_POLICIES, Some(SCHEMA)).unwrap();
            for ask in &asks {
                prop_assert_eq!(prepared(&set, ask), reference(SCHEMA_POLICIES, Some(SCHEMA), ask), "{:?}", ask);
            }
        }
    }
}
