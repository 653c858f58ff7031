//! Cedar policy sets: naming, limits, validation, the entity and context
//! mapping, and fail-closed evaluation (SPEC §2, §3 step 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use mandate_core::identity::IdentityId;
use mandate_core::policy::{
    POLICIES_MAX, POLICY_TEXT_BYTES_MAX, PolicyDecision, PolicyError, PolicyEvaluationError, PolicyOutcome,
    PolicyRequest, PolicySet, SCHEMA_TEXT_BYTES_MAX, VALUE_DEPTH_MAX, ValueError, ValueProblem, check_attributes,
};
use mandate_log::hash::Hash;
use serde_json::{Map, Value, json};

/// A schema for the tests' vocabulary, written the way the module
/// documentation tells users to.
const SCHEMA: &str = r#"
namespace Mandate {
    type Amounts = { usd_cents?: Long, tokens?: Long };
    entity Identity in [Identity] { department?: String, team?: String };
    entity Resource;
    action "payments";
    action "payments.charge" in ["payments"] appliesTo {
        principal: [Identity],
        resource: [Resource],
        context: { amounts: Amounts, chain: Set<String>, merchant?: String },
    };
}
"#;

/// One request, owning what `PolicyRequest` borrows.
struct Ask {
    chain: Vec<(IdentityId, Map<String, Value>)>,
    action: String,
    resource: String,
    context: Map<String, Value>,
    amounts: BTreeMap<String, u64>,
}

impl Ask {
    /// `agent:buyer` (team books) → `agent:team` → `user:alice` (finance)
    /// charging `merchant://books` with no context or amounts.
    fn new() -> Ask {
        Ask {
            chain: vec![
                identity("agent:buyer", json!({"team": "books"})),
                identity("agent:team", json!({})),
                identity("user:alice", json!({"department": "finance"})),
            ],
            action: "payments.charge".to_owned(),
            resource: "merchant://books".to_owned(),
            context: Map::new(),
            amounts: BTreeMap::new(),
        }
    }

    fn context(mut self, context: Value) -> Ask {
        self.context = object(context);
        self
    }

    fn amount(mut self, dimension: &str, amount: u64) -> Ask {
        self.amounts.insert(dimension.to_owned(), amount);
        self
    }

    fn chain(mut self, chain: Vec<(IdentityId, Map<String, Value>)>) -> Ask {
        self.chain = chain;
        self
    }

    fn action(mut self, action: &str) -> Ask {
        self.action = action.to_owned();
        self
    }

    fn to(&self, set: &PolicySet) -> Result<PolicyOutcome, PolicyError> {
        let chain: Vec<(IdentityId, &Map<String, Value>)> =
            self.chain.iter().map(|(id, attributes)| (id.clone(), attributes)).collect();
        set.evaluate(&PolicyRequest {
            chain: &chain,
            action: &self.action,
            resource: &self.resource,
            context: &self.context,
            amounts: &self.amounts,
        })
    }
}

fn identity(id: &str, attributes: Value) -> (IdentityId, Map<String, Value>) {
    (IdentityId::parse(id).unwrap(), object(attributes))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

fn policies(text: &str) -> PolicySet {
    PolicySet::new(text, None).unwrap()
}

fn permit_only(outcome: &PolicyOutcome, determining: &[&str]) {
    assert_eq!(outcome.decision, PolicyDecision::Permit, "{outcome:?}");
    assert_eq!(outcome.determining, determining);
}

const DEFAULT_PERMIT: &str = r#"@id("allow-all") permit(principal, action, resource);"#;

#[test]
fn policy_sets_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<PolicySet>();
    let set = PolicySet::default_for_new_tenant().unwrap();
    let shared = set.clone();
    let outcome = std::thread::spawn(move || Ask::new().to(&shared).unwrap()).join().unwrap();
    assert_eq!(outcome, Ask::new().to(&set).unwrap());
}

#[test]
fn default_for_new_tenant_permits_everything() {
    let set = PolicySet::default_for_new_tenant().unwrap();
    let outcome = Ask::new().amount("usd_cents", 1_000_000).to(&set).unwrap();
    assert_eq!(
        outcome,
        PolicyOutcome {
            decision: PolicyDecision::Permit,
            determining: vec!["default-permit".to_owned()],
            errors: vec![],
            approval_required: false,
        }
    );
    assert_eq!(set.len(), 1);
    assert!(!set.is_empty());
    assert_eq!(set.schema_text(), None);
}

#[test]
fn forbid_over_amount_denies_naming_it() {
    let set = policies(&format!(
        r#"{DEFAULT_PERMIT}
        @id("cap-50-usd")
        forbid(principal, action == Mandate::Action::"payments.charge", resource)
        when {{ context.amounts.usd_cents > 5000 }};"#
    ));
    let outcome = Ask::new().amount("usd_cents", 5001).to(&set).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::Forbid);
    assert_eq!(outcome.determining, ["cap-50-usd"]);
    assert!(outcome.errors.is_empty());
    permit_only(&Ask::new().amount("usd_cents", 5000).to(&set).unwrap(), &["allow-all"]);
}

#[test]
fn no_permit_denies_with_no_permit() {
    let set = policies(r#"@id("only-bob") permit(principal == Mandate::Identity::"user:bob", action, resource);"#);
    let outcome = Ask::new().to(&set).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::NoPermit);
    assert!(outcome.determining.is_empty());
    assert!(outcome.errors.is_empty());
    assert!(!outcome.approval_required);

    let empty = policies("");
    assert!(empty.is_empty());
    assert_eq!(Ask::new().to(&empty).unwrap().decision, PolicyDecision::NoPermit);
}

#[test]
fn policy_without_id_is_refused_naming_its_position() {
    let error = PolicySet::new(
        r#"@id("first") permit(principal, action, resource);
           forbid(principal, action, resource) when { context.amounts.usd_cents > 1 };"#,
        None,
    )
    .unwrap_err();
    let PolicyError::MissingId { position, excerpt } = &error else { panic!("{error:?}") };
    assert_eq!(*position, 2);
    assert!(excerpt.starts_with("forbid(principal, action, resource)"), "{excerpt}");
    assert!(error.to_string().contains("policy 2"), "{error}");
}

#[test]
fn other_annotations_do_not_stand_in_for_an_id() {
    let error = PolicySet::new(r#"@name("x") permit(principal, action, resource);"#, None).unwrap_err();
    assert!(matches!(error, PolicyError::MissingId { position: 1, .. }), "{error:?}");
}

#[test]
fn duplicate_ids_are_refused_naming_both() {
    let error = PolicySet::new(
        r#"@id("a") permit(principal, action, resource);
           @id("b") permit(principal, action, resource);
           @id("a") forbid(principal, action, resource);"#,
        None,
    )
    .unwrap_err();
    assert_eq!(error, PolicyError::DuplicateId { id: "a".to_owned(), first: 1, second: 3 });
    assert_eq!(error.to_string(), "policies 1 and 3 both have the id `a`");
}

#[test]
fn invalid_ids_are_refused() {
    for id in ["", &"x".repeat(129), "tab\there"] {
        let text = format!("@id({id:?}) permit(principal, action, resource);");
        let error = PolicySet::new(&text, None).unwrap_err();
        assert!(matches!(error, PolicyError::InvalidId { position: 1, .. }), "{id:?}: {error:?}");
    }
    // An id Cedar itself would have generated is just a name like any other.
    policies(
        r#"@id("policy1") permit(principal, action, resource);
           @id("policy0") permit(principal, action, resource);"#,
    );
}

#[test]
fn syntax_errors_are_reported() {
    let error =
        PolicySet::new(r#"@id("a") permit(principal, action, resource) when { principal. };"#, None).unwrap_err();
    let PolicyError::Syntax { messages } = &error else { panic!("{error:?}") };
    assert!(!messages.is_empty());
    assert!(error.to_string().starts_with("cannot parse the policies: "), "{error}");
}

#[test]
fn templates_are_refused() {
    let error = PolicySet::new(
        r#"@id("a") permit(principal, action, resource);
           @id("t") permit(principal == ?principal, action, resource);"#,
        None,
    )
    .unwrap_err();
    assert_eq!(error, PolicyError::Template { position: 2 });
}

#[test]
fn approval_annotation_is_checked() {
    let error =
        PolicySet::new(r#"@id("a") @approval("maybe") permit(principal, action, resource);"#, None).unwrap_err();
    assert_eq!(error, PolicyError::InvalidApproval { id: "a".to_owned(), value: "maybe".to_owned() });
    let error =
        PolicySet::new(r#"@id("f") @approval("required") forbid(principal, action, resource);"#, None).unwrap_err();
    assert_eq!(error, PolicyError::ApprovalOnForbid { id: "f".to_owned() });
}

#[test]
fn limits_are_enforced() {
    let long = " ".repeat(POLICY_TEXT_BYTES_MAX + 1);
    assert_eq!(PolicySet::new(&long, None).unwrap_err(), PolicyError::PolicyTextTooLong { bytes: long.len() });

    let long_schema = " ".repeat(SCHEMA_TEXT_BYTES_MAX + 1);
    assert_eq!(
        PolicySet::new(DEFAULT_PERMIT, Some(&long_schema)).unwrap_err(),
        PolicyError::SchemaTextTooLong { bytes: long_schema.len() }
    );

    let many: String =
        (0..=POLICIES_MAX).map(|i| format!("@id(\"p{i}\") permit(principal, action, resource);\n")).collect();
    assert_eq!(PolicySet::new(&many, None).unwrap_err(), PolicyError::TooManyPolicies { count: POLICIES_MAX + 1 });
    let at_limit: String =
        (0..POLICIES_MAX).map(|i| format!("@id(\"p{i}\") permit(principal, action, resource);\n")).collect();
    assert_eq!(PolicySet::new(&at_limit, None).unwrap().len(), POLICIES_MAX);
}

#[test]
fn schema_refuses_an_undeclared_attribute() {
    let error = PolicySet::new(
        r#"@id("ok") permit(principal, action, resource);
           @id("uses-undeclared") permit(principal, action == Mandate::Action::"payments.charge", resource)
           when { principal.clearance == "high" };"#,
        Some(SCHEMA),
    )
    .unwrap_err();
    let PolicyError::Validation { errors } = &error else { panic!("{error:?}") };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].policy, "uses-undeclared");
    assert!(errors[0].message.contains("clearance"), "{}", errors[0].message);
    assert!(error.to_string().contains("policy `uses-undeclared`: "), "{error}");
}

#[test]
fn schema_validation_reports_every_error_with_its_policy() {
    let error = PolicySet::new(
        r#"@id("b-undeclared-action") permit(principal, action == Mandate::Action::"payments.refund", resource);
           @id("a-optional-unguarded") forbid(principal, action, resource) when { context.amounts.usd_cents > 1 };"#,
        Some(SCHEMA),
    )
    .unwrap_err();
    let PolicyError::Validation { errors } = &error else { panic!("{error:?}") };
    let policies: Vec<&str> = errors.iter().map(|error| error.policy.as_str()).collect();
    assert_eq!(policies, ["a-optional-unguarded", "b-undeclared-action"], "{errors:?}");
}

#[test]
fn schema_refuses_bad_schema_text() {
    let error = PolicySet::new(DEFAULT_PERMIT, Some("namespace Mandate { entity ; }")).unwrap_err();
    assert!(matches!(error, PolicyError::Schema { .. }), "{error:?}");
    // Actions are declared with `action "…"`, never as an entity type.
    let error =
        PolicySet::new(DEFAULT_PERMIT, Some(r#"namespace Mandate { entity Action; action "x"; }"#)).unwrap_err();
    let PolicyError::Schema { message } = &error else { panic!("{error:?}") };
    assert!(message.contains("`Action`"), "{message}");
}

/// The policies of a valid pair with [`SCHEMA`]: an action group, ancestry,
/// attributes, the guarded optional amount and the context.
const SCHEMA_POLICIES: &str = r#"
@id("finance-pays")
permit(principal in Mandate::Identity::"user:alice", action in Mandate::Action::"payments", resource)
when { principal has team && principal.team == "books" };

@id("cap-50-usd")
forbid(principal, action == Mandate::Action::"payments.charge", resource)
when { context.amounts has usd_cents && context.amounts.usd_cents > 5000 };

@id("no-casino")
forbid(principal, action, resource)
when { context has merchant && context.merchant == "casino" && context.chain.contains("user:alice") };
"#;

#[test]
fn schema_accepts_a_valid_pair_and_evaluates_with_it() {
    let set = PolicySet::new(SCHEMA_POLICIES, Some(SCHEMA)).unwrap();
    assert_eq!(set.schema_text(), Some(SCHEMA));
    assert_eq!(set.len(), 3);

    permit_only(
        &Ask::new().amount("usd_cents", 4723).context(json!({"merchant": "books"})).to(&set).unwrap(),
        &["finance-pays"],
    );
    let over = Ask::new().amount("usd_cents", 5001).to(&set).unwrap();
    assert_eq!((over.decision, over.determining), (PolicyDecision::Forbid, vec!["cap-50-usd".to_owned()]));
    let casino = Ask::new().amount("usd_cents", 6000).context(json!({"merchant": "casino"})).to(&set).unwrap();
    assert_eq!(casino.determining, ["cap-50-usd", "no-casino"]);
    assert!(casino.errors.is_empty());
}

#[test]
fn schema_refuses_requests_that_do_not_conform() {
    let set = PolicySet::new(SCHEMA_POLICIES, Some(SCHEMA)).unwrap();
    // An action the schema does not declare.
    let error = Ask::new().action("payments.refund").to(&set).unwrap_err();
    assert!(matches!(error, PolicyError::Request { .. }), "{error:?}");
    // A context key the action's context does not declare.
    let error = Ask::new().context(json!({"tip": 5})).to(&set).unwrap_err();
    assert!(matches!(error, PolicyError::Request { .. }), "{error:?}");
    // A context value of the wrong type.
    let error = Ask::new().context(json!({"merchant": 7})).to(&set).unwrap_err();
    assert!(matches!(error, PolicyError::Request { .. }), "{error:?}");
    // An amount dimension the schema does not declare.
    let error = Ask::new().amount("calls", 1).to(&set).unwrap_err();
    assert!(matches!(error, PolicyError::Request { .. }), "{error:?}");
    // An identity attribute the schema does not declare.
    let chain = vec![identity("agent:buyer", json!({"clearance": "high"})), identity("user:alice", json!({}))];
    let error = Ask::new().chain(chain).to(&set).unwrap_err();
    let PolicyError::Entities { message } = &error else { panic!("{error:?}") };
    assert!(message.contains("clearance"), "{message}");
}

#[test]
fn erroring_forbid_denies_and_is_reported() {
    let set = policies(&format!(
        r#"{DEFAULT_PERMIT}
        @id("risky") forbid(principal, action, resource) when {{ principal.nonexistent > 1 }};"#
    ));
    let outcome = Ask::new().to(&set).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::Forbid);
    assert_eq!(outcome.determining, ["risky"]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].policy, "risky");
    assert!(outcome.errors[0].message.contains("nonexistent"), "{}", outcome.errors[0].message);
    assert!(!outcome.approval_required);
}

#[test]
fn erroring_forbid_joins_a_satisfied_forbid() {
    let set = policies(&format!(
        r#"{DEFAULT_PERMIT}
        @id("z-broken") forbid(principal, action, resource) when {{ context.missing == 1 }};
        @id("a-always") forbid(principal, action, resource);"#
    ));
    let outcome = Ask::new().to(&set).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::Forbid);
    assert_eq!(outcome.determining, ["a-always", "z-broken"]);
    let policies: Vec<&str> = outcome.errors.iter().map(|error| error.policy.as_str()).collect();
    assert_eq!(policies, ["z-broken"]);
}

#[test]
fn erroring_forbid_beats_no_permit() {
    let set = policies(r#"@id("risky") forbid(principal, action, resource) when { principal.nonexistent > 1 };"#);
    let outcome = Ask::new().to(&set).unwrap();
    assert_eq!((outcome.decision, outcome.determining), (PolicyDecision::Forbid, vec!["risky".to_owned()]));
}

#[test]
fn erroring_permit_does_not_permit_and_is_reported() {
    let broken = r#"@id("broken-permit") permit(principal, action, resource) when { principal.nonexistent > 1 };"#;
    let outcome = Ask::new().to(&policies(broken)).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::NoPermit);
    assert!(outcome.determining.is_empty());
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].policy, "broken-permit");

    let outcome = Ask::new().to(&policies(&format!("{broken}\n{DEFAULT_PERMIT}"))).unwrap();
    permit_only(&outcome, &["allow-all"]);
    let reported: Vec<&PolicyEvaluationError> = outcome.errors.iter().collect();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].policy, "broken-permit");
}

#[test]
fn approval_required_when_a_determining_permit_asks() {
    let set = policies(
        r#"
        @id("big-needs-approval") @approval("required")
        permit(principal, action, resource) when { context.amounts.usd_cents > 10000 };
        @id("small") permit(principal, action, resource) when { context.amounts.usd_cents <= 10000 };
    "#,
    );
    let big = Ask::new().amount("usd_cents", 20000).to(&set).unwrap();
    permit_only(&big, &["big-needs-approval"]);
    assert!(big.approval_required);
    let small = Ask::new().amount("usd_cents", 100).to(&set).unwrap();
    permit_only(&small, &["small"]);
    assert!(!small.approval_required);
}

#[test]
fn approval_is_not_required_when_forbidden() {
    let set = policies(
        r#"
        @id("ask") @approval("required") permit(principal, action, resource);
        @id("stop") forbid(principal, action, resource) when { context.merchant == "casino" };
    "#,
    );
    let outcome = Ask::new().context(json!({"merchant": "casino"})).to(&set).unwrap();
    assert_eq!(outcome.decision, PolicyDecision::Forbid);
    assert!(!outcome.approval_required);
    assert!(Ask::new().context(json!({"merchant": "books"})).to(&set).unwrap().approval_required);
}

#[test]
fn reserved_context_keys_are_refused() {
    let set = PolicySet::default_for_new_tenant().unwrap();
    for key in ["amounts", "chain"] {
        let error = Ask::new().context(json!({ key: {} })).to(&set).unwrap_err();
        assert_eq!(error, PolicyError::ReservedContextKey { key: key.to_owned() });
        assert!(error.to_string().contains(&format!("`{key}`")), "{error}");
    }
}

#[test]
fn context_merchant_chain_and_ancestry_are_visible() {
    let set = policies(
        r#"
        @id("books-for-alice")
        permit(principal in Mandate::Identity::"user:alice", action == Mandate::Action::"payments.charge",
               resource == Mandate::Resource::"merchant://books")
        when { context.merchant == "books" && context.chain.contains("agent:team")
               && context.chain.contains("user:alice") && principal.team == "books" };
    "#,
    );
    permit_only(&Ask::new().context(json!({"merchant": "books"})).to(&set).unwrap(), &["books-for-alice"]);
    // Another merchant, or a chain that does not end at alice, is not permitted.
    assert_eq!(Ask::new().context(json!({"merchant": "casino"})).to(&set).unwrap().decision, PolicyDecision::NoPermit);
    let bobs = vec![
        identity("agent:buyer", json!({"team": "books"})),
        identity("agent:team", json!({})),
        identity("user:bob", json!({})),
    ];
    assert_eq!(
        Ask::new().chain(bobs).context(json!({"merchant": "books"})).to(&set).unwrap().decision,
        PolicyDecision::NoPermit
    );
}

#[test]
fn every_ancestor_is_a_parent_and_carries_its_attributes() {
    let set = policies(
        r#"
        @id("via-team") permit(principal in Mandate::Identity::"agent:team", action, resource);
        @id("finance-human") forbid(principal, action, resource)
        when { Mandate::Identity::"user:alice".department != "finance" };
    "#,
    );
    permit_only(&Ask::new().to(&set).unwrap(), &["via-team"]);
    let elsewhere = vec![
        identity("agent:buyer", json!({"team": "books"})),
        identity("agent:team", json!({})),
        identity("user:alice", json!({"department": "sales"})),
    ];
    assert_eq!(Ask::new().chain(elsewhere).to(&set).unwrap().determining, ["finance-human"]);
    // The acting identity is itself `in` nothing above it but its ancestors.
    let alone = vec![identity("user:alice", json!({"department": "finance"}))];
    assert_eq!(Ask::new().chain(alone).to(&set).unwrap().decision, PolicyDecision::NoPermit);
}

#[test]
fn json_values_map_to_cedar_values() {
    let set = policies(
        r#"
        @id("shapes") permit(principal, action, resource)
        when { context.count == -3 && context.flag && context.tags.contains("x") && context.tags.containsAll(["y"])
               && context.nested.inner.depth == 2 && context["odd key"] == "ok" && context.tags == ["y", "x", "x"] };
    "#,
    );
    let context = json!({
        "count": -3, "flag": true, "tags": ["x", "y", "x"], "nested": {"inner": {"depth": 2}}, "odd key": "ok",
    });
    permit_only(&Ask::new().context(context).to(&set).unwrap(), &["shapes"]);
}

#[test]
fn values_without_a_cedar_counterpart_are_refused_with_their_path() {
    let set = PolicySet::default_for_new_tenant().unwrap();
    let cases = [
        (json!({"price": 1.5}), "context.price", ValueProblem::NotAnInteger),
        (json!({"price": 1.0}), "context.price", ValueProblem::NotAnInteger),
        (json!({"big": u64::MAX}), "context.big", ValueProblem::NotAnInteger),
        (json!({"items": [{"note": null}]}), "context.items[0].note", ValueProblem::Null),
        (json!({"odd key": null}), "context[\"odd key\"]", ValueProblem::Null),
    ];
    for (context, path, problem) in cases {
        let error = Ask::new().context(context).to(&set).unwrap_err();
        assert_eq!(error, PolicyError::ContextValue(ValueError { path: path.to_owned(), problem }));
    }
    let chain = vec![identity("agent:buyer", json!({"score": 0.5})), identity("user:alice", json!({}))];
    let error = Ask::new().chain(chain).to(&set).unwrap_err();
    assert_eq!(
        error,
        PolicyError::AttributeValue {
            identity: IdentityId::parse("agent:buyer").unwrap(),
            error: ValueError { path: "attributes.score".to_owned(), problem: ValueProblem::NotAnInteger },
        }
    );
    assert_eq!(
        error.to_string(),
        "identity `agent:buyer`: the attribute `attributes.score` is not an integer between -2^63 and 2^63-1, \
         the only numbers Cedar has"
    );
}

#[test]
fn deep_values_are_refused() {
    let mut deep = json!(1);
    for _ in 0..VALUE_DEPTH_MAX {
        deep = json!([deep]);
    }
    let error = check_attributes(&object(json!({ "deep": deep }))).unwrap_err();
    assert_eq!(error.problem, ValueProblem::TooDeep);
    assert!(error.path.starts_with("attributes.deep[0][0]"), "{}", error.path);

    let mut shallow = json!(1);
    for _ in 0..VALUE_DEPTH_MAX - 2 {
        shallow = json!([shallow]);
    }
    check_attributes(&object(json!({ "shallow": shallow }))).unwrap();
}

#[test]
fn check_attributes_refuses_what_evaluation_would() {
    check_attributes(&object(json!({"team": "books", "level": 3, "tags": ["a"], "limits": {"max": 5}}))).unwrap();
    let error = check_attributes(&object(json!({"limits": {"max": null}}))).unwrap_err();
    assert_eq!(error, ValueError { path: "attributes.limits.max".to_owned(), problem: ValueProblem::Null });
}

#[test]
fn amounts_beyond_cedar_integers_are_refused() {
    let set = PolicySet::default_for_new_tenant().unwrap();
    let error = Ask::new().amount("usd_cents", u64::MAX).to(&set).unwrap_err();
    assert_eq!(error, PolicyError::AmountTooLarge { dimension: "usd_cents".to_owned(), amount: u64::MAX });
    Ask::new().amount("usd_cents", i64::MAX as u64).to(&set).unwrap();
}

#[test]
fn malformed_chains_are_refused() {
    let set = PolicySet::default_for_new_tenant().unwrap();
    assert_eq!(Ask::new().chain(vec![]).to(&set).unwrap_err(), PolicyError::EmptyChain);
    let looped = vec![identity("agent:a", json!({})), identity("agent:b", json!({})), identity("agent:a", json!({}))];
    assert_eq!(
        Ask::new().chain(looped).to(&set).unwrap_err(),
        PolicyError::ChainRepeats { id: IdentityId::parse("agent:a").unwrap() }
    );
}

#[test]
fn outcomes_are_deterministic() {
    let text: String = (0..20)
        .map(|i| format!("@id(\"p{i:02}\") permit(principal, action, resource) when {{ context.missing{i} }};\n"))
        .chain((0..20).map(|i| format!("@id(\"q{i:02}\") permit(principal, action, resource);\n")))
        .collect();
    let set = policies(&text);
    let first = Ask::new().to(&set).unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("q{i:02}")).collect();
    assert_eq!(first.determining, expected);
    let errors: Vec<String> = first.errors.iter().map(|error| error.policy.clone()).collect();
    assert_eq!(errors, (0..20).map(|i| format!("p{i:02}")).collect::<Vec<_>>());
    for _ in 0..5 {
        assert_eq!(Ask::new().to(&set.clone()).unwrap(), first);
    }
}

#[test]
fn version_hash_is_the_digest_of_the_canonical_body() {
    let text = r#"@id("a") permit(principal, action, resource);"#;
    let expected = Hash::digest(br#"{"policies":"@id(\"a\") permit(principal, action, resource);"}"#).to_hex();
    let set = policies(text);
    assert_eq!(set.version_hash(), expected);
    assert_eq!(set.policies_text(), text);

    let schema = "namespace Mandate { entity Resource; }";
    let with_schema = PolicySet::new(text, Some(schema)).unwrap();
    let expected = Hash::digest(
        br#"{"policies":"@id(\"a\") permit(principal, action, resource);","schema":"namespace Mandate { entity Resource; }"}"#,
    )
    .to_hex();
    assert_eq!(with_schema.version_hash(), expected);
}

#[test]
fn version_hash_changes_with_the_text_and_only_with_it() {
    let a = policies(DEFAULT_PERMIT).version_hash();
    assert_eq!(a, policies(DEFAULT_PERMIT).version_hash());
    assert_eq!(a.len(), 64);
    // Any change of text changes the version, even one Cedar ignores.
    assert_ne!(a, policies(&format!("{DEFAULT_PERMIT} ")).version_hash());
    assert_ne!(a, policies(r#"@id("allow-everything") permit(principal, action, resource);"#).version_hash());
    let with_schema = PolicySet::new(DEFAULT_PERMIT, Some(SCHEMA)).unwrap().version_hash();
    assert_ne!(a, with_schema);
    assert_ne!(with_schema, PolicySet::new(DEFAULT_PERMIT, Some(&format!("{SCHEMA}\n"))).unwrap().version_hash());
    // An empty schema is a schema, not the absence of one.
    assert_ne!(a, PolicySet::new(DEFAULT_PERMIT, Some("")).unwrap().version_hash());
}
