//! Policy decisions with Cedar: every command class (and `connect`) is a
//! Cedar action, the connection is the resource, and what the classifier
//! found is the context. Cedar answers allow or deny; sluice reads the
//! deciding policies' annotations to tell a block from a review, and keeps
//! `@shadow` policies out of enforcement while recording what they decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Class, Classification};
use crate::Connection;

/// The Cedar schema policies are validated against.
pub const SCHEMA: &str = include_str!("../policies/sluice.cedarschema");
/// The policies loaded when the config names none.
pub const DEFAULT_POLICIES: &str = include_str!("../policies/default.cedar");

/// What policy decided, most permissive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let it through.
    Allow,
    /// Hold it for a human approver.
    Review,
    /// Refuse it.
    Block,
}

impl Effect {
    /// The name used in output and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Review => "review",
            Effect::Block => "block",
        }
    }
}

impl FromStr for Effect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Effect::Allow),
            "review" => Ok(Effect::Review),
            "block" => Ok(Effect::Block),
            _ => Err(format!(
                "unknown decision \"{s}\" (one of: allow, review, block)"
            )),
        }
    }
}

/// A decision with what caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The enforced outcome.
    pub effect: Effect,
    /// The action (command class, or `connect`) whose evaluation decided.
    pub action: String,
    /// Ids of the policies that decided; empty when nothing permitted it.
    pub policies: Vec<String>,
    /// The deciding policies' reasons, for the client and the record.
    pub reason: String,
    /// What shadow policies or a shadow connection would have decided,
    /// when that differs from what was enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<Decision>>,
}

impl Decision {
    /// The reason, citing the deciding policies: for messages and output.
    pub fn explain(&self) -> String {
        if self.policies.is_empty() {
            self.reason.clone()
        } else {
            format!("{} (policy {})", self.reason, self.policies.join(", "))
        }
    }
}

/// Who is asking, as policy sees them.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The accountable principal (a token's principal).
    pub name: String,
    /// The agent acting for it, if any.
    pub actor: Option<String>,
    /// Groups its identity provider says it is in (already mapped to
    /// sluice groups), on top of `[policy.groups]`; an agent never
    /// inherits them.
    pub groups: Vec<String>,
    /// The agent's name was chosen by whoever delegated to it, not by an
    /// administrator: policy must not take it for the agent of that name.
    pub delegated: bool,
}

/// Where policies come from.
#[derive(Debug, Clone, Default)]
pub enum PolicySource {
    /// The policies shipped with sluice.
    #[default]
    Default,
    /// Files, or directories whose `*.cedar` files are read in name order.
    Files(Vec<PathBuf>),
}

/// A validated policy set, ready to decide.
pub struct PolicyEngine {
    enforced: PolicySet,
    /// Enforced plus shadow policies, when there are shadow policies.
    with_shadow: Option<PolicySet>,
    annotations: HashMap<PolicyId, Annotations>,
    groups: HashMap<String, Vec<String>>,
    authorizer: Authorizer,
    /// SHA-256 of the policy text, to tell versions apart in records.
    pub digest: String,
    /// Ids of the loaded policies, in load order.
    pub ids: Vec<String>,
}

#[derive(Debug, Clone)]
struct Annotations {
    reason: Option<String>,
    review: bool,
}

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("schema type names are valid")
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

fn str_set<'a>(items: impl IntoIterator<Item = &'a String>) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .into_iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

impl PolicyEngine {
    /// Loads and validates policies; the error names the file and policy.
    /// `groups` maps a group name to its members (principal or agent names).
    pub fn load(
        source: &PolicySource,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<PolicyEngine, String> {
        let texts: Vec<(String, String)> = match source {
            PolicySource::Default => {
                vec![("default policies".into(), DEFAULT_POLICIES.to_string())]
            }
            PolicySource::Files(paths) => read_policy_files(paths)?,
        };
        Self::from_texts(&texts, groups)
    }

    /// Builds an engine from `(origin, Cedar text)` pairs.
    pub fn from_texts(
        texts: &[(String, String)],
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<PolicyEngine, String> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| format!("built-in policy schema: {e}"))?;
        let mut enforced = PolicySet::new();
        let mut all = PolicySet::new();
        let mut annotations = HashMap::new();
        let mut ids = Vec::new();
        let mut any_shadow = false;
        let mut digest = Sha256::new();
        for (origin, text) in texts {
            digest.update(text.as_bytes());
            let parsed =
                PolicySet::from_str(text).map_err(|e| format!("{origin}: {}", describe(&e)))?;
            if parsed.templates().next().is_some() {
                return Err(format!("{origin}: policy templates are not supported"));
            }
            for (i, p) in parsed.policies().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{origin}#{i}"));
                let pid = PolicyId::new(&id);
                if annotations.contains_key(&pid) {
                    return Err(format!("{origin}: two policies have the id \"{id}\""));
                }
                let review = match p.annotation("decision") {
                    None => false,
                    Some("review") if p.effect() == cedar_policy::Effect::Forbid => true,
                    Some("review") => {
                        return Err(format!(
                            "{origin}: policy \"{id}\": @decision(\"review\") only applies to forbid policies"
                        ))
                    }
                    Some(other) => {
                        return Err(format!(
                            "{origin}: policy \"{id}\": unknown @decision(\"{other}\"); the only value is \"review\" (a forbid without it blocks)"
                        ))
                    }
                };
                let shadow = match p.annotation("shadow") {
                    None => false,
                    Some("" | "true") => true,
                    Some(other) => {
                        return Err(format!(
                            "{origin}: policy \"{id}\": @shadow takes no value (or \"true\"), not \"{other}\"; remove it to enforce the policy"
                        ))
                    }
                };
                let policy: Policy = p.new_id(pid.clone());
                if shadow {
                    any_shadow = true;
                } else {
                    enforced
                        .add(policy.clone())
                        .map_err(|e| format!("{origin}: {e}"))?;
                }
                all.add(policy).map_err(|e| format!("{origin}: {e}"))?;
                annotations.insert(
                    pid,
                    Annotations {
                        reason: p.annotation("reason").map(str::to_string),
                        review,
                    },
                );
                ids.push(id);
            }
        }
        let result = Validator::new(schema).validate(&all, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result
                .validation_errors()
                .map(|e| format!("policy \"{}\": {}", e.policy_id(), describe(e)))
                .collect();
            return Err(format!(
                "policies do not match the sluice schema:\n  {}",
                errors.join("\n  ")
            ));
        }
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in groups {
            for m in members {
                member_of.entry(m.clone()).or_default().push(group.clone());
            }
        }
        Ok(PolicyEngine {
            enforced,
            with_shadow: any_shadow.then_some(all),
            annotations,
            groups: member_of,
            authorizer: Authorizer::new(),
            digest: hex::encode(digest.finalize()),
            ids,
        })
    }

    /// The Cedar entities for one principal on one connection; build once
    /// per session and pass to [`PolicyEngine::decide`].
    pub fn entities(&self, who: &Principal, conn: &Connection) -> PolicyEntities {
        let (principal, mut entities) = self.principal_entity(who);
        let resource = uid("Sluice::Connection", &conn.name);
        let tags: Vec<(String, RestrictedExpression)> = conn
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
            .collect();
        let attrs = [
            (
                "name".to_string(),
                RestrictedExpression::new_string(conn.name.clone()),
            ),
            (
                "protocol".to_string(),
                RestrictedExpression::new_string(conn.kind.clone()),
            ),
        ];
        entities.push(
            Entity::new_with_tags(resource.clone(), attrs, [], tags)
                .expect("connection attributes are literals"),
        );
        PolicyEntities {
            principal,
            resource,
            protocol: conn.kind.clone(),
            shadow_connection: conn.shadow,
            entities: Entities::from_entities(entities, None)
                .expect("one principal and one connection are not duplicates"),
            role: None,
        }
    }

    fn principal_entity(&self, who: &Principal) -> (EntityUid, Vec<Entity>) {
        // A delegated agent is known as "<principal>/<agent>": a name any
        // delegator can pick grants nothing policy or the groups give the
        // agent of that name.
        let delegated_name;
        let (ty, name) = match &who.actor {
            Some(actor) if who.delegated => {
                delegated_name = format!("{}/{actor}", who.name);
                ("Sluice::Agent", delegated_name.as_str())
            }
            Some(actor) => ("Sluice::Agent", actor.as_str()),
            None if who.name.starts_with("workload:") => ("Sluice::Workload", who.name.as_str()),
            None => ("Sluice::Human", who.name.as_str()),
        };
        let id = uid(ty, name);
        let mut attrs = vec![(
            "name".to_string(),
            RestrictedExpression::new_string(name.to_string()),
        )];
        if who.actor.is_some() {
            attrs.push((
                "on_behalf_of".to_string(),
                RestrictedExpression::new_string(who.name.clone()),
            ));
        }
        // An agent's groups come from the configuration only: what its
        // principal's identity provider says is not the agent's.
        let from_identity = if who.actor.is_none() {
            who.groups.as_slice()
        } else {
            &[]
        };
        let parents: HashSet<EntityUid> = self
            .groups
            .get(name)
            .into_iter()
            .flatten()
            .chain(from_identity)
            .map(|g| uid("Sluice::Group", g))
            .collect();
        let mut out: Vec<Entity> = parents.iter().cloned().map(Entity::with_uid).collect();
        out.push(
            Entity::new(id.clone(), attrs.into_iter().collect(), parents)
                .expect("principal attributes are literals"),
        );
        (id, out)
    }

    /// Decides whether the principal may open a session.
    pub fn decide_connect(&self, ent: &PolicyEntities, now_ms: i64) -> Decision {
        let mut nothing = Classification::default();
        nothing.flags.statements = 0;
        let ctx = command_context(ent, "connect", &nothing, now_ms);
        self.decide_actions(ent, &["connect"], || ctx.clone())
    }

    /// Decides whether the principal sees clear values. Only a permit that
    /// names the `unmask` action counts: a catch-all `permit (principal,
    /// action, resource)` written for commands must not switch masking off.
    pub fn decide_unmask(&self, ent: &PolicyEntities, now_ms: i64) -> Decision {
        let mut nothing = Classification::default();
        nothing.flags.statements = 0;
        let ctx = command_context(ent, "unmask", &nothing, now_ms);
        self.decide_named(
            ent,
            "unmask",
            ctx,
            "no policy grants \"unmask\" by name, so values are masked",
        )
    }

    /// Decides whether the principal may open an interactive terminal.
    pub fn decide_shell(&self, ent: &PolicyEntities, now_ms: i64) -> Decision {
        let mut nothing = Classification::default();
        nothing.flags.statements = 0;
        let ctx = command_context(ent, "shell", &nothing, now_ms);
        self.decide_actions(ent, &["shell"], || ctx.clone())
    }

    /// Decides whether the principal may open a tunnel of a kind (`local`,
    /// `remote`, `agent`, `x11`). As for `unmask`, only a permit naming
    /// the `tunnel` action counts: a tunnel bypasses inspection.
    pub fn decide_tunnel(
        &self,
        ent: &PolicyEntities,
        kind: &str,
        destination: Option<&str>,
        now_ms: i64,
    ) -> Decision {
        let mut nothing = Classification::default();
        nothing.flags.statements = 0;
        let mut ctx = command_context(ent, "tunnel", &nothing, now_ms);
        ctx.push((
            "tunnel".into(),
            RestrictedExpression::new_string(kind.to_string()),
        ));
        if let Some(d) = destination {
            ctx.push((
                "destination".into(),
                RestrictedExpression::new_string(d.to_string()),
            ));
        }
        self.decide_named(
            ent,
            "tunnel",
            ctx,
            "tunnels bypass inspection and no policy allows this one by name",
        )
    }

    /// Decides whether a review is approved by policy instead of a human.
    /// As for `unmask`, only a permit naming the `approve` action counts.
    pub fn decide_approve(
        &self,
        ent: &PolicyEntities,
        class: &str,
        c: &Classification,
        approval: &ApprovalContext,
        now_ms: i64,
    ) -> Decision {
        let mut ctx = command_context(ent, class, c, now_ms);
        ctx.push((
            "review".into(),
            RestrictedExpression::new_string(approval.review.clone()),
        ));
        if let Some(n) = approval.estimated_rows {
            ctx.push(("estimated_rows".into(), RestrictedExpression::new_long(n)));
        }
        if let Some(s) = approval.duration_secs {
            ctx.push((
                "duration_secs".into(),
                RestrictedExpression::new_long(s.min(i64::MAX as u64) as i64),
            ));
        }
        self.decide_named(
            ent,
            "approve",
            ctx,
            "no policy approves this by name, so a human decides",
        )
    }

    /// Evaluates an action that only a permit naming it can allow: a
    /// catch-all permit written for commands must not grant it.
    fn decide_named(
        &self,
        ent: &PolicyEntities,
        action: &str,
        ctx: Vec<(String, RestrictedExpression)>,
        otherwise: &str,
    ) -> Decision {
        let mut d = self.evaluate(&self.enforced, ent, action, ctx);
        if d.effect == Effect::Allow {
            let named: Vec<String> = d
                .policies
                .iter()
                .filter(|id| {
                    self.enforced
                        .policy(&PolicyId::new(id.as_str()))
                        .is_some_and(|p| !matches!(p.action_constraint(), ActionConstraint::Any))
                })
                .cloned()
                .collect();
            if named.is_empty() {
                d.effect = Effect::Block;
                d.reason = otherwise.into();
                d.policies.clear();
            } else {
                d.reason = named
                    .iter()
                    .filter_map(|id| {
                        self.annotations
                            .get(&PolicyId::new(id.as_str()))?
                            .reason
                            .clone()
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                d.policies = named;
            }
        }
        d
    }

    /// Decides a classified command: each effect is evaluated as an action
    /// and the strictest result wins.
    pub fn decide(&self, ent: &PolicyEntities, c: &Classification, now_ms: i64) -> Decision {
        let pairs = command_context(ent, c.class().as_str(), c, now_ms);
        let actions: Vec<&str> = if c.effects.is_empty() {
            vec![Class::Read.as_str()]
        } else {
            c.effects.iter().map(|e| e.as_str()).collect()
        };
        self.decide_actions(ent, &actions, || pairs.clone())
    }

    fn decide_actions(
        &self,
        ent: &PolicyEntities,
        actions: &[&str],
        ctx: impl Fn() -> Vec<(String, RestrictedExpression)>,
    ) -> Decision {
        let strictest = |set: &PolicySet| {
            actions
                .iter()
                .map(|a| self.evaluate(set, ent, a, ctx()))
                .max_by_key(|d| d.effect)
                .expect("at least one action")
        };
        let mut decision = strictest(&self.enforced);
        if let Some(all) = &self.with_shadow {
            let would = strictest(all);
            if would.effect > decision.effect {
                decision.shadow = Some(Box::new(would));
            }
        }
        if ent.shadow_connection && decision.effect != Effect::Allow {
            let would = std::mem::replace(
                &mut decision,
                Decision {
                    effect: Effect::Allow,
                    action: String::new(),
                    policies: vec![],
                    reason: "shadow mode: recorded, not enforced".into(),
                    shadow: None,
                },
            );
            decision.action = would.action.clone();
            decision.shadow = Some(Box::new(would));
        }
        decision
    }

    fn evaluate(
        &self,
        set: &PolicySet,
        ent: &PolicyEntities,
        action: &str,
        ctx: Vec<(String, RestrictedExpression)>,
    ) -> Decision {
        let block = |reason: String| Decision {
            effect: Effect::Block,
            action: action.to_string(),
            policies: vec![],
            reason,
            shadow: None,
        };
        let context = match Context::from_pairs(ctx) {
            Ok(c) => c,
            Err(e) => return block(format!("policy context could not be built: {e}")),
        };
        let request = match Request::new(
            ent.principal.clone(),
            uid("Sluice::Action", action),
            ent.resource.clone(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return block(format!("policy request could not be built: {e}")),
        };
        let response = self.authorizer.is_authorized(&request, set, &ent.entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        let deciding: Vec<&PolicyId> = response.diagnostics().reason().collect();
        let policies: Vec<String> = deciding.iter().map(|p| p.to_string()).collect();
        let reasons: Vec<String> = deciding
            .iter()
            .filter_map(|p| self.annotations.get(*p)?.reason.clone())
            .collect();
        let reason = if reasons.is_empty() {
            policies.join(", ")
        } else {
            reasons.join("; ")
        };
        match response.decision() {
            // A policy that failed to evaluate may have been a forbid: fail closed.
            _ if !errors.is_empty() => block(format!(
                "a policy failed to evaluate, so the command is refused: {}",
                errors.join("; ")
            )),
            CedarDecision::Allow => Decision {
                effect: Effect::Allow,
                action: action.to_string(),
                policies,
                reason,
                shadow: None,
            },
            CedarDecision::Deny if deciding.is_empty() => {
                block(format!("no policy permits \"{action}\" on this connection"))
            }
            CedarDecision::Deny => {
                let review = deciding
                    .iter()
                    .all(|p| self.annotations.get(*p).is_some_and(|a| a.review));
                Decision {
                    effect: if review {
                        Effect::Review
                    } else {
                        Effect::Block
                    },
                    action: action.to_string(),
                    policies,
                    reason,
                    shadow: None,
                }
            }
        }
    }
}

/// Decides for one principal on one connection, remembering decisions by
/// what was decided and the hour: the principal and connection are fixed,
/// and time enters policy only by hour and weekday.
pub struct SessionDecider {
    engine: Arc<PolicyEngine>,
    entities: PolicyEntities,
    decisions: HashMap<(Arc<Classification>, i64), Arc<Decision>>,
}

/// Decisions a session remembers before starting over.
const MAX_SESSION_DECISIONS: usize = 512;

impl SessionDecider {
    /// A decider over `entities` (from [`PolicyEngine::entities`]).
    pub fn new(engine: Arc<PolicyEngine>, entities: PolicyEntities) -> Self {
        SessionDecider {
            engine,
            entities,
            decisions: HashMap::new(),
        }
    }

    /// The engine it decides with.
    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }

    /// Decides a classified command at `now_ms`.
    pub fn decide(&mut self, c: &Arc<Classification>, now_ms: i64) -> Arc<Decision> {
        // Arc hashes and compares by content: equal classifications share
        // a decision, without copying them.
        let key = (c.clone(), now_ms.div_euclid(3_600_000));
        if let Some(d) = self.decisions.get(&key) {
            return d.clone();
        }
        let decision = Arc::new(self.engine.decide(&self.entities, c, now_ms));
        if self.decisions.len() >= MAX_SESSION_DECISIONS {
            self.decisions.clear();
        }
        self.decisions.insert(key, decision.clone());
        decision
    }
}

/// The per-session Cedar entities.
pub struct PolicyEntities {
    principal: EntityUid,
    resource: EntityUid,
    protocol: String,
    shadow_connection: bool,
    entities: Entities,
    role: Option<String>,
}

impl PolicyEntities {
    /// Adds the token's role, which policies read as `context.role`.
    pub fn with_role(mut self, role: Option<String>) -> Self {
        self.role = role;
        self
    }

    /// The role policies see.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }
}

/// What an auto-approval is decided on, besides the command itself.
#[derive(Debug, Clone, Default)]
pub struct ApprovalContext {
    /// `command` or `access`.
    pub review: String,
    /// The planner's estimate of rows changed, when known.
    pub estimated_rows: Option<i64>,
    /// For access requests: the window asked for.
    pub duration_secs: Option<u64>,
}

/// UTC hour (0-23) and ISO weekday (1 = Monday).
fn hour_weekday(now_ms: i64) -> (i64, i64) {
    let secs = now_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    // 1970-01-01 was a Thursday (ISO weekday 4).
    (secs.rem_euclid(86_400) / 3600, (days + 3).rem_euclid(7) + 1)
}

fn time_context(protocol: &str, now_ms: i64) -> Vec<(String, RestrictedExpression)> {
    let (hour, weekday) = hour_weekday(now_ms);
    vec![
        (
            "protocol".to_string(),
            RestrictedExpression::new_string(protocol.to_string()),
        ),
        ("hour".to_string(), RestrictedExpression::new_long(hour)),
        (
            "weekday".to_string(),
            RestrictedExpression::new_long(weekday),
        ),
    ]
}

/// The context of every request: time, and what the classifier found.
fn command_context(
    ent: &PolicyEntities,
    class: &str,
    c: &Classification,
    now_ms: i64,
) -> Vec<(String, RestrictedExpression)> {
    let mut pairs = time_context(&ent.protocol, now_ms);
    if let Some(role) = &ent.role {
        pairs.push((
            "role".to_string(),
            RestrictedExpression::new_string(role.clone()),
        ));
    }
    pairs.extend([
        (
            "class".to_string(),
            RestrictedExpression::new_string(class.to_string()),
        ),
        ("tables".to_string(), str_set(&c.tables)),
        ("functions".to_string(), str_set(&c.functions)),
        ("programs".to_string(), str_set(&c.programs)),
        ("paths".to_string(), str_set(&c.paths)),
        ("schemas".to_string(), str_set(&c.schemas)),
        (
            "statements".to_string(),
            RestrictedExpression::new_long(c.flags.statements as i64),
        ),
        (
            "has_where".to_string(),
            RestrictedExpression::new_bool(c.flags.has_where),
        ),
        (
            "multi_statement".to_string(),
            RestrictedExpression::new_bool(c.flags.multi_statement),
        ),
        (
            "dynamic_sql".to_string(),
            RestrictedExpression::new_bool(c.flags.dynamic_sql),
        ),
    ]);
    pairs
}

/// Cedar errors carry their detail in related errors, sources and help:
/// show all of it on one line.
fn describe(e: &dyn Diagnostic) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(related) = e.related() {
        for r in related {
            out.push_str("; ");
            out.push_str(&describe(r));
        }
    }
    if let Some(help) = e.help() {
        out.push_str(&format!(" (help: {help})"));
    }
    out
}

fn read_policy_files(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("policy directory {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "cedar"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!(
                    "policy directory {} has no .cedar files",
                    p.display()
                ));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files
        .iter()
        .map(|f: &PathBuf| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("policy file {}: {e}", f.display()))?;
            Ok((display(f), text))
        })
        .collect()
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(tags: &[(&str, &str)], shadow: bool) -> Connection {
        Connection {
            name: "db".into(),
            kind: "postgres".into(),
            address: "127.0.0.1:5432".into(),
            database: "db".into(),
            user: "u".into(),
            password: None,
            tls: crate::TargetTls::Disable,
            tls_ca_file: None,
            allow_cleartext_password: false,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            shadow,
            review_mode: None,
        }
    }

    #[test]
    fn approval_by_policy_needs_a_permit_naming_it_and_reads_the_estimate_and_role() {
        let text = r#"
            @id("small-writes") @reason("small writes by etl")
            permit (principal == Sluice::Workload::"workload:etl", action == Sluice::Action::"approve", resource)
              when { context has estimated_rows && context.estimated_rows <= 5 };
            @id("no-approval-for-ops") forbid (principal, action == Sluice::Action::"approve", resource)
              when { context has role && context.role == "ops" };
            permit (principal, action, resource);
        "#;
        let engine =
            PolicyEngine::from_texts(&[("t".into(), text.into())], &BTreeMap::new()).unwrap();
        let c = conn(&[], false);
        let who = |name: &str| Principal {
            name: name.into(),
            actor: None,
            groups: Vec::new(),
            delegated: false,
        };
        let etl = engine.entities(&who("workload:etl"), &c);
        let write = Classification::of(Class::Write);
        let ctx = |rows: Option<i64>| ApprovalContext {
            review: "command".into(),
            estimated_rows: rows,
            duration_secs: None,
        };
        let d = engine.decide_approve(&etl, "write", &write, &ctx(Some(3)), 0);
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.policies, vec!["small-writes"]);
        assert_eq!(d.reason, "small writes by etl");
        // No estimate, a large one, or another principal: a human decides,
        // even though a catch-all permit exists.
        for (ent, rows) in [
            (&etl, None),
            (&etl, Some(50)),
            (&engine.entities(&who("alice"), &c), Some(1)),
        ] {
            let d = engine.decide_approve(ent, "write", &write, &ctx(rows), 0);
            assert_eq!(d.effect, Effect::Block, "{rows:?}");
        }
        let ops = engine
            .entities(&who("workload:etl"), &c)
            .with_role(Some("ops".into()));
        let d = engine.decide_approve(&ops, "write", &write, &ctx(Some(1)), 0);
        assert_eq!(d.effect, Effect::Block);
    }

    fn who() -> Principal {
        Principal {
            name: "alice".into(),
            actor: Some("agent:claude".into()),
            groups: Vec::new(),
            delegated: false,
        }
    }

    #[test]
    fn defaults_block_review_and_allow_by_class_on_prod_only() {
        let engine = PolicyEngine::load(&PolicySource::Default, &BTreeMap::new()).unwrap();
        let prod = engine.entities(&who(), &conn(&[("env", "prod")], false));
        let dev = engine.entities(&who(), &conn(&[("env", "dev")], false));
        let d = engine.decide(&prod, &Classification::of(Class::Destructive), 0);
        assert_eq!(d.effect, Effect::Block);
        assert_eq!(d.policies, vec!["prod-block-risky"]);
        assert!(
            d.reason.contains("not allowed on production"),
            "{}",
            d.reason
        );
        let d = engine.decide(&prod, &Classification::of(Class::Write), 0);
        assert_eq!(d.effect, Effect::Review);
        assert_eq!(d.policies, vec!["prod-review-changes"]);
        assert_eq!(
            engine
                .decide(&prod, &Classification::of(Class::Read), 0)
                .effect,
            Effect::Allow
        );
        assert_eq!(
            engine
                .decide(&prod, &Classification::unknown("x"), 0)
                .effect,
            Effect::Block
        );
        assert_eq!(
            engine
                .decide(&dev, &Classification::of(Class::Destructive), 0)
                .effect,
            Effect::Allow
        );
        // A read with a hidden write is decided by its strictest effect.
        let mut c = Classification::of(Class::Read);
        c.merge(&Classification::of(Class::Write));
        assert_eq!(engine.decide(&prod, &c, 0).effect, Effect::Review);
        assert_eq!(engine.decide_connect(&prod, 0).effect, Effect::Allow);
    }

    #[test]
    fn shadow_connections_and_shadow_policies_record_without_enforcing() {
        let engine = PolicyEngine::load(&PolicySource::Default, &BTreeMap::new()).unwrap();
        let shadow = engine.entities(&who(), &conn(&[("env", "prod")], true));
        let d = engine.decide(&shadow, &Classification::of(Class::Destructive), 0);
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.shadow.as_ref().unwrap().effect, Effect::Block);

        let text = r#"
            permit (principal, action, resource);
            @id("no-ddl-for-agents") @shadow
            forbid (principal is Sluice::Agent, action == Sluice::Action::"ddl", resource);
        "#;
        let engine =
            PolicyEngine::from_texts(&[("t".into(), text.into())], &BTreeMap::new()).unwrap();
        let ent = engine.entities(&who(), &conn(&[], false));
        let d = engine.decide(&ent, &Classification::of(Class::Ddl), 0);
        assert_eq!(d.effect, Effect::Allow);
        let s = d.shadow.unwrap();
        assert_eq!(
            (s.effect, s.policies.as_slice()),
            (Effect::Block, &["no-ddl-for-agents".to_string()][..])
        );
    }

    #[test]
    fn clear_values_need_a_permit_that_names_unmask() {
        let human = |name: &str| Principal {
            name: name.into(),
            actor: None,
            groups: Vec::new(),
            delegated: false,
        };
        let groups = BTreeMap::from([("pii-readers".to_string(), vec!["carol".to_string()])]);
        let engine = PolicyEngine::load(&PolicySource::Default, &groups).unwrap();
        let c = conn(&[("env", "prod")], false);
        let carol = engine.decide_unmask(&engine.entities(&human("carol"), &c), 0);
        assert_eq!(carol.effect, Effect::Allow);
        assert_eq!(
            carol.policies,
            vec!["clear-values-for-pii-readers".to_string()]
        );
        assert_eq!(
            engine
                .decide_unmask(&engine.entities(&human("dave"), &c), 0)
                .effect,
            Effect::Block
        );
        // An agent acting for a cleared human is still masked.
        let agent = Principal {
            name: "carol".into(),
            actor: Some("agent:claude".into()),
            groups: Vec::new(),
            delegated: false,
        };
        assert_eq!(
            engine.decide_unmask(&engine.entities(&agent, &c), 0).effect,
            Effect::Block
        );
        // A catch-all permit written for commands does not unmask.
        let engine = PolicyEngine::from_texts(
            &[("t".into(), "permit (principal, action, resource);".into())],
            &BTreeMap::new(),
        )
        .unwrap();
        let d = engine.decide_unmask(&engine.entities(&human("dave"), &c), 0);
        assert_eq!(d.effect, Effect::Block, "{}", d.reason);
    }

    #[test]
    fn groups_context_and_default_deny() {
        let text = r#"
            @id("dba-admin") permit (principal in Sluice::Group::"dba", action == Sluice::Action::"admin", resource);
            @id("reads-on-orders") permit (principal, action == Sluice::Action::"read", resource)
              when { context.tables.contains("orders") && context.hour >= 0 };
        "#;
        let groups = BTreeMap::from([("dba".to_string(), vec!["bob".to_string()])]);
        let engine = PolicyEngine::from_texts(&[("t".into(), text.into())], &groups).unwrap();
        let c = conn(&[], false);
        let bob = engine.entities(
            &Principal {
                name: "bob".into(),
                actor: None,
                groups: Vec::new(),
                delegated: false,
            },
            &c,
        );
        let alice = engine.entities(
            &Principal {
                name: "alice".into(),
                actor: None,
                groups: Vec::new(),
                delegated: false,
            },
            &c,
        );
        assert_eq!(
            engine
                .decide(&bob, &Classification::of(Class::Admin), 0)
                .effect,
            Effect::Allow
        );
        let d = engine.decide(&alice, &Classification::of(Class::Admin), 0);
        assert_eq!(d.effect, Effect::Block);
        assert!(d.reason.contains("no policy permits"), "{}", d.reason);
        let mut read = Classification::of(Class::Read);
        read.tables.insert("orders".into());
        assert_eq!(engine.decide(&alice, &read, 0).effect, Effect::Allow);
        read.tables.clear();
        assert_eq!(engine.decide(&alice, &read, 0).effect, Effect::Block);
    }

    #[test]
    fn invalid_policies_are_refused_with_the_reason() {
        let groups = BTreeMap::new();
        let bad_syntax =
            PolicyEngine::from_texts(&[("p.cedar".into(), "permit (principal".into())], &groups);
        assert!(bad_syntax.err().unwrap().starts_with("p.cedar:"));
        let bad_action = PolicyEngine::from_texts(
            &[(
                "p.cedar".into(),
                r#"forbid (principal, action == Sluice::Action::"drop", resource);"#.into(),
            )],
            &groups,
        );
        assert!(bad_action.err().unwrap().contains("schema"));
        let bad_attr = PolicyEngine::from_texts(
            &[(
                "p.cedar".into(),
                "permit (principal, action, resource) when { context.nope };".into(),
            )],
            &groups,
        );
        assert!(bad_attr.is_err());
        let review_permit = PolicyEngine::from_texts(
            &[(
                "p.cedar".into(),
                "@decision(\"review\") permit (principal, action, resource);".into(),
            )],
            &groups,
        );
        assert!(review_permit
            .err()
            .unwrap()
            .contains("only applies to forbid"));
    }

    #[test]
    fn weekday_and_hour_are_utc() {
        // 2026-11-26 16:00 UTC is a Thursday.
        assert_eq!(hour_weekday(1_795_651_200_000 + 16 * 3_600_000), (16, 4));
    }
}
