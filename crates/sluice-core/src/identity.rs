//! Trust rules for workload identity: which verified tokens of which
//! issuers become which sluice principal, on which connections, for how
//! long. A token that matches no rule is refused with the reasons of the
//! rules that came closest, so a CI job's log says what to fix.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// One rule: an issuer, the claims a token must carry, and what it gets.
#[derive(Debug, Clone)]
pub struct TrustRule {
    /// Cited in records and refusals.
    pub name: String,
    /// The configured issuer's name.
    pub issuer: String,
    /// Claim name to accepted values (globs: `*`, `?`); all must match.
    pub claims: BTreeMap<String, Vec<String>>,
    /// The principal, with `{claim}` placeholders; always `workload:...`.
    pub principal: String,
    /// Connections a matching token may get.
    pub connections: Vec<String>,
    /// Groups the workload is in (policy reads them as `principal in Group`).
    pub groups: Vec<String>,
    /// Longest lifetime of the token issued.
    pub max_ttl: Duration,
}

/// What a matching rule grants.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The rule's name.
    pub rule: String,
    /// The principal, rendered from the claims.
    pub principal: String,
    /// Connections it may get.
    pub connections: Vec<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Longest lifetime.
    pub max_ttl: Duration,
}

/// The first rule of `issuer` whose claim conditions the claims meet.
pub fn match_trust(rules: &[TrustRule], issuer: &str, claims: &Value) -> Result<Trusted, String> {
    let mut why = Vec::new();
    for rule in rules.iter().filter(|r| r.issuer == issuer) {
        match check(rule, claims) {
            Ok(principal) => {
                return Ok(Trusted {
                    rule: rule.name.clone(),
                    principal,
                    connections: rule.connections.clone(),
                    groups: rule.groups.clone(),
                    max_ttl: rule.max_ttl,
                })
            }
            Err(e) => why.push(format!("rule {:?}: {e}", rule.name)),
        }
    }
    if why.is_empty() {
        return Err(format!("no trust rule covers issuer {issuer:?}"));
    }
    Err(format!("no trust rule matches: {}", why.join("; ")))
}

fn check(rule: &TrustRule, claims: &Value) -> Result<String, String> {
    for (name, accepted) in &rule.claims {
        let Some(value) = claim_text(claims, name) else {
            return Err(format!("the token has no {name:?} claim"));
        };
        if !accepted
            .iter()
            .any(|pattern| crate::masking::glob(pattern, &value))
        {
            return Err(format!(
                "{name} is {value:?}, not {}",
                accepted
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    render(&rule.principal, claims)
}

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(claims: &Value, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Fills `{claim}` placeholders; claim values may only hold characters
/// safe in a principal name.
pub fn render(template: &str, claims: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("principal template {template:?}: unclosed '{{'"))?
            + open;
        let name = &rest[open + 1..close];
        let value = claim_text(claims, name)
            .ok_or_else(|| format!("the token has no {name:?} claim for the principal name"))?;
        if value.is_empty()
            || value.len() > 200
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b))
        {
            return Err(format!(
                "claim {name} ({value:?}) has characters a principal name may not hold"
            ));
        }
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    if out.contains("/agent:") {
        // The shape policy gives delegated agents.
        return Err(format!(
            "the principal {out:?} would look like a delegated agent"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule() -> TrustRule {
        TrustRule {
            name: "deploy".into(),
            issuer: "github".into(),
            claims: BTreeMap::from([
                ("repository".into(), vec!["acme/shop".into()]),
                (
                    "ref".into(),
                    vec!["refs/heads/main".into(), "refs/tags/v*".into()],
                ),
            ]),
            principal: "workload:github:{repository}".into(),
            connections: vec!["shop".into()],
            groups: vec!["ci".into()],
            max_ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn claims_decide_the_principal_or_the_refusal_says_why() {
        let rules = [rule()];
        let ok = json!({"repository": "acme/shop", "ref": "refs/tags/v1.2"});
        let t = match_trust(&rules, "github", &ok).unwrap();
        assert_eq!(t.principal, "workload:github:acme/shop");
        let branch = json!({"repository": "acme/shop", "ref": "refs/heads/feature"});
        let e = match_trust(&rules, "github", &branch).unwrap_err();
        assert!(e.contains("ref is \"refs/heads/feature\""), "{e}");
        assert!(match_trust(&rules, "gitlab", &ok)
            .unwrap_err()
            .contains("no trust rule covers"));
        let weird = json!({"repository": "acme/shop\n", "ref": "refs/heads/main"});
        assert!(match_trust(&rules, "github", &weird).is_err());
        let missing = json!({"ref": "refs/heads/main"});
        assert!(match_trust(&rules, "github", &missing)
            .unwrap_err()
            .contains("no \"repository\" claim"));
    }
}
