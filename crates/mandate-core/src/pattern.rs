//! Action and resource patterns (SPEC §2, Grant): what a grant allows.
//!
//! Both kinds of pattern are either an exact string or a prefix followed by a
//! single trailing `*`; `*` alone is the empty prefix and matches everything.
//! That one shape makes the two questions a grant asks exact and cheap:
//!
//! - *does a pattern match a string?* — equality, or `starts_with`;
//! - *does pattern `a` cover pattern `b`* (every string `b` matches, `a`
//!   matches too)? — see [`ActionPattern::covers`]; the rule is a complete
//!   case analysis over the two shapes, so it never over- or under-approximates.
//!
//! The kinds differ only in what they accept when parsed:
//!
//! - an **action** pattern is `*`, an exact action such as `payments.charge`,
//!   or a prefix ending in a whole segment `.*`, such as `github.*`, which
//!   matches every action that starts with `github.` (and nothing else: not
//!   `github` and not `githubx.y`). `git*` is refused, so that a prefix never
//!   cuts a segment of a dotted action name in half by accident.
//! - a **resource** pattern is `*`, an exact resource, or any prefix followed
//!   by `*`, such as `repo://acme/*`, which matches everything that starts with
//!   `repo://acme/`.
//!
//! A `*` anywhere but at the end is refused in both: there is no escape, so an
//! exact action or resource never contains `*`.

use std::fmt;
use std::str::FromStr;

/// The longest action pattern, in bytes.
pub const ACTION_PATTERN_BYTES_MAX: usize = 256;

/// The longest resource pattern, in bytes.
pub const RESOURCE_PATTERN_BYTES_MAX: usize = 1024;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string, which would match nothing useful.
    #[error("a pattern cannot be empty")]
    Empty,
    /// The pattern is longer than its kind allows.
    #[error("pattern `{pattern}…` is longer than {bytes_max} bytes")]
    TooLong {
        /// The first characters of the pattern.
        pattern: String,
        /// [`ACTION_PATTERN_BYTES_MAX`] or [`RESOURCE_PATTERN_BYTES_MAX`].
        bytes_max: usize,
    },
    /// A `*` somewhere other than at the very end.
    #[error("pattern `{pattern}` has `*` before its end; `*` is allowed only as the last character")]
    InteriorWildcard {
        /// The pattern.
        pattern: String,
    },
    /// An action prefix whose `*` is not a whole segment after a `.`.
    #[error("action pattern `{pattern}` must end in `.*` to be a prefix (such as `github.*`), or be `*` alone")]
    PartialSegment {
        /// The pattern.
        pattern: String,
    },
}

/// A pattern over actions: `*`, `payments.charge` or `github.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionPattern(Glob);

/// A pattern over resources: `*`, `acct://42` or `repo://acme/*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePattern(Glob);

impl ActionPattern {
    /// The pattern that matches every action.
    pub const ANY: ActionPattern = ActionPattern(Glob::ANY);

    /// Parses an action pattern; see the module documentation for the forms.
    pub fn parse(pattern: &str) -> Result<ActionPattern, PatternError> {
        let glob = Glob::parse(pattern, ACTION_PATTERN_BYTES_MAX)?;
        if let Some(prefix) = glob.prefix()
            && !prefix.is_empty()
            && !prefix.ends_with('.')
        {
            return Err(PatternError::PartialSegment { pattern: pattern.to_owned() });
        }
        Ok(ActionPattern(glob))
    }

    /// Whether `action` is one of the actions this pattern names.
    pub fn matches(&self, action: &str) -> bool {
        self.0.matches(action)
    }

    /// Whether every action `other` matches, this pattern matches too.
    ///
    /// Exact: `*` covers everything; `p.*` covers `q.*` and exact `q` when `q`
    /// starts with `p.`; an exact action covers only itself. (A prefix pattern
    /// matches infinitely many actions, so no exact pattern covers it, and
    /// `*` matches the empty string, which no longer prefix matches.)
    pub fn covers(&self, other: &ActionPattern) -> bool {
        self.0.covers(&other.0)
    }

    /// Whether the pattern matches every action.
    pub fn is_any(&self) -> bool {
        self.0.is_any()
    }
}

impl ResourcePattern {
    /// The pattern that matches every resource.
    pub const ANY: ResourcePattern = ResourcePattern(Glob::ANY);

    /// Parses a resource pattern; see the module documentation for the forms.
    pub fn parse(pattern: &str) -> Result<ResourcePattern, PatternError> {
        Glob::parse(pattern, RESOURCE_PATTERN_BYTES_MAX).map(ResourcePattern)
    }

    /// Whether `resource` is one of the resources this pattern names.
    pub fn matches(&self, resource: &str) -> bool {
        self.0.matches(resource)
    }

    /// Whether every resource `other` matches, this pattern matches too.
    ///
    /// Exact: a prefix `p*` covers `q*` and exact `q` when `q` starts with
    /// `p` (`*` is the empty prefix, so it covers everything); an exact
    /// resource covers only itself.
    pub fn covers(&self, other: &ResourcePattern) -> bool {
        self.0.covers(&other.0)
    }

    /// Whether the pattern matches every resource.
    pub fn is_any(&self) -> bool {
        self.0.is_any()
    }
}

/// The shape both kinds share: the pattern's text, which is a prefix pattern
/// exactly when it ends in `*` (`*` alone is the empty prefix).
///
/// INVARIANT (one-trailing-star): `*` alone is held as the empty text (so
/// that it can be a constant, [`Glob::ANY`]); any other text holds at most
/// one `*`, as its last character. Set by [`Glob::parse`]; so an exact
/// pattern never contains `*`, and one pattern has one representation (24
/// bytes, which keeps errors that carry patterns small).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Glob(String);

impl Glob {
    /// `*`: the empty prefix.
    const ANY: Glob = Glob(String::new());

    fn parse(pattern: &str, bytes_max: usize) -> Result<Glob, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > bytes_max {
            let pattern = pattern.chars().take(64).collect();
            return Err(PatternError::TooLong { pattern, bytes_max });
        }
        if pattern.strip_suffix('*').unwrap_or(pattern).contains('*') {
            return Err(PatternError::InteriorWildcard { pattern: pattern.to_owned() });
        }
        if pattern == "*" {
            return Ok(Glob::ANY);
        }
        Ok(Glob(pattern.to_owned()))
    }

    /// The text before the `*` of a prefix pattern; `None` for an exact one.
    fn prefix(&self) -> Option<&str> {
        if self.0.is_empty() { Some("") } else { self.0.strip_suffix('*') }
    }

    fn matches(&self, text: &str) -> bool {
        match self.prefix() {
            Some(prefix) => text.starts_with(prefix),
            None => text == self.0,
        }
    }

    /// Language inclusion, `L(other) ⊆ L(self)`, by cases:
    ///
    /// - `p*` ⊇ `q*` iff `q` starts with `p`: if it does, every `q·s` is
    ///   `p·(rest)·s`; if not, `q` itself is in `L(q*)` but not in `L(p*)`.
    /// - `p*` ⊇ exact `e` iff `p*` matches `e`.
    /// - exact `e` ⊇ exact `f` iff `e = f`.
    /// - exact `e` ⊇ `q*` never: `L(q*)` is infinite.
    fn covers(&self, other: &Glob) -> bool {
        match (self.prefix(), other.prefix()) {
            (Some(p), Some(q)) => q.starts_with(p),
            (Some(p), None) => other.0.starts_with(p),
            (None, None) => self.0 == other.0,
            (None, Some(_)) => false,
        }
    }

    fn is_any(&self) -> bool {
        self.prefix() == Some("")
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "*" } else { &self.0 })
    }
}

impl fmt::Display for ActionPattern {
    /// The pattern as written: `Display` then `parse` gives the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ResourcePattern {
    /// The pattern as written: `Display` then `parse` gives the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ActionPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<ActionPattern, PatternError> {
        ActionPattern::parse(pattern)
    }
}

impl FromStr for ResourcePattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<ResourcePattern, PatternError> {
        ResourcePattern::parse(pattern)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn action_forms() {
        let exact = ActionPattern::parse("payments.charge").unwrap();
        assert!(exact.matches("payments.charge"));
        assert!(!exact.matches("payments.charge.x"));
        assert!(!exact.matches("payments"));

        let prefix = ActionPattern::parse("github.*").unwrap();
        assert!(prefix.matches("github.push"));
        assert!(prefix.matches("github.repo.delete"));
        assert!(prefix.matches("github."), "the suffix may be empty");
        assert!(!prefix.matches("github"));
        assert!(!prefix.matches("githubx.push"));

        let any = ActionPattern::parse("*").unwrap();
        assert!(any.is_any() && any == ActionPattern::ANY);
        assert!(any.matches("") && any.matches("anything.at.all"));
    }

    #[test]
    fn action_refusals() {
        assert_eq!(ActionPattern::parse(""), Err(PatternError::Empty));
        for bad in ["git*", "github*", "a.b*"] {
            assert!(matches!(ActionPattern::parse(bad), Err(PatternError::PartialSegment { .. })), "{bad}");
        }
        for bad in ["*.charge", "pay*.x", "a.*.*", "**"] {
            assert!(matches!(ActionPattern::parse(bad), Err(PatternError::InteriorWildcard { .. })), "{bad}");
        }
        let longest = format!("{}.*", "a".repeat(ACTION_PATTERN_BYTES_MAX - 2));
        assert!(ActionPattern::parse(&longest).is_ok());
        let error = ActionPattern::parse(&format!("a{longest}")).unwrap_err();
        assert!(matches!(error, PatternError::TooLong { bytes_max: ACTION_PATTERN_BYTES_MAX, .. }));
    }

    #[test]
    fn resource_forms_and_refusals() {
        let prefix = ResourcePattern::parse("repo://acme/*").unwrap();
        assert!(prefix.matches("repo://acme/") && prefix.matches("repo://acme/api"));
        assert!(!prefix.matches("repo://acme") && !prefix.matches("repo://acmex/api"));
        assert!(ResourcePattern::parse("repo://ac*").unwrap().matches("repo://acme/api"));
        assert!(ResourcePattern::parse("*").unwrap().is_any());
        assert!(ResourcePattern::parse("acct://42").unwrap().matches("acct://42"));

        assert_eq!(ResourcePattern::parse(""), Err(PatternError::Empty));
        for bad in ["repo://*/x", "*x", "a**"] {
            assert!(matches!(ResourcePattern::parse(bad), Err(PatternError::InteriorWildcard { .. })), "{bad}");
        }
        let long = "r".repeat(RESOURCE_PATTERN_BYTES_MAX + 1);
        let error = ResourcePattern::parse(&long).unwrap_err();
        assert!(matches!(error, PatternError::TooLong { bytes_max: RESOURCE_PATTERN_BYTES_MAX, .. }));
        assert!(error.to_string().contains(&"r".repeat(64)));
        assert!(!error.to_string().contains(&"r".repeat(65)), "the message quotes only the start");
    }

    #[test]
    fn covers_cases() {
        let a = |p: &str| ActionPattern::parse(p).unwrap();
        assert!(a("*").covers(&a("*")) && a("*").covers(&a("github.*")) && a("*").covers(&a("x")));
        assert!(a("github.*").covers(&a("github.repo.*")) && a("github.*").covers(&a("github.push")));
        assert!(!a("github.*").covers(&a("*")) && !a("github.repo.*").covers(&a("github.*")));
        assert!(!a("github.*").covers(&a("github")));
        assert!(a("github.push").covers(&a("github.push")));
        assert!(!a("github.push").covers(&a("github.*")) && !a("github.push").covers(&a("github.pull")));

        let r = |p: &str| ResourcePattern::parse(p).unwrap();
        assert!(r("repo://*").covers(&r("repo://acme/*")) && r("repo://acme/*").covers(&r("repo://acme/api")));
        assert!(!r("repo://acme/*").covers(&r("repo://*")) && !r("repo://acme").covers(&r("repo://acme*")));
        assert!(r("repo://acme*").covers(&r("repo://acme")), "a prefix covers the exact prefix itself");
    }

    #[test]
    fn display_round_trips() {
        for text in ["*", "github.*", "payments.charge"] {
            assert_eq!(ActionPattern::parse(text).unwrap().to_string(), text);
        }
        for text in ["*", "repo://acme/*", "acct://42"] {
            assert_eq!(text.parse::<ResourcePattern>().unwrap().to_string(), text);
        }
    }

    /// Resource patterns over a two-letter alphabet and `.`, short enough that
    /// random pairs often relate.
    fn resource_pattern() -> impl Strategy<Value = ResourcePattern> {
        ("[ab.]{0,3}", any::<bool>()).prop_filter_map("empty exact", |(text, prefix)| {
            ResourcePattern::parse(&if prefix { format!("{text}*") } else { text }).ok()
        })
    }

    fn action_pattern() -> impl Strategy<Value = ActionPattern> {
        prop_oneof![
            Just(ActionPattern::ANY),
            "[ab.]{1,3}".prop_map(|text| ActionPattern::parse(&text).unwrap()),
            "[ab.]{0,2}".prop_map(|text| ActionPattern::parse(&format!("{text}.*")).unwrap()),
        ]
    }

    /// A string the pattern matches that no pattern over the alphabet matches
    /// unless it covers this one: the exact string, or the prefix followed by
    /// a character outside the alphabet.
    fn witness(glob: &Glob) -> String {
        match glob.prefix() {
            None => glob.0.clone(),
            Some(prefix) => format!("{prefix}~"),
        }
    }

    proptest! {
        /// Soundness: when `a` covers `b`, every sampled string `b` matches,
        /// `a` matches. Exactness: when it does not, a witness shows why.
        #[test]
        fn resource_covers_is_language_inclusion(
            a in resource_pattern(),
            b in resource_pattern(),
            samples in prop::collection::vec("[ab.~]{0,5}", 0..32),
        ) {
            if a.covers(&b) {
                for sample in &samples {
                    prop_assert!(!b.matches(sample) || a.matches(sample), "{a} covers {b} but not {sample:?}");
                }
                prop_assert!(a.matches(&witness(&b.0)));
            } else {
                let witness = witness(&b.0);
                prop_assert!(b.matches(&witness) && !a.matches(&witness), "{a} vs {b}: {witness:?}");
            }
        }

        #[test]
        fn action_covers_is_language_inclusion(
            a in action_pattern(),
            b in action_pattern(),
            samples in prop::collection::vec("[ab.~]{0,5}", 0..32),
        ) {
            if a.covers(&b) {
                for sample in &samples {
                    prop_assert!(!b.matches(sample) || a.matches(sample), "{a} covers {b} but not {sample:?}");
                }
            } else {
                let witness = witness(&b.0);
                prop_assert!(b.matches(&witness) && !a.matches(&witness), "{a} vs {b}: {witness:?}");
            }
        }

        /// `covers` is reflexive and transitive, as inclusion must be.
        #[test]
        fn covers_is_a_preorder(a in resource_pattern(), b in resource_pattern(), c in resource_pattern()) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
        }

        #[test]
        fn parse_display_round_trip(text in "[ab.*]{0,4}") {
            if let Ok(pattern) = ResourcePattern::parse(&text) {
                prop_assert_eq!(pattern.to_string(), text.clone());
            }
            if let Ok(pattern) = ActionPattern::parse(&text) {
                prop_assert_eq!(pattern.to_string(), text);
            }
        }
    }
}
