//! Verifying JWTs from the identity providers the configuration trusts:
//! OpenID discovery, JWKS with key rotation, and the checks a verifier must
//! not skip (issuer, audience, expiry, not-before, a known key of the right
//! type, asymmetric algorithms only: `none` and HMAC are refused, so a
//! public key can never be used as a shared secret).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The name trust rules refer to it by.
    pub name: String,
    /// The `iss` its tokens carry (and where discovery starts).
    pub issuer: String,
    /// The `aud` its tokens must carry for sluice.
    pub audience: String,
    /// Where its keys are, when not found by discovery.
    pub jwks_uri: Option<String>,
    /// Sign-in for people, when the issuer is also their identity provider.
    pub login: Option<Login>,
}

/// How people sign in with an issuer (OpenID Connect, as a confidential
/// client: the gateway holds the client secret and redeems the codes).
#[derive(Debug, Clone)]
pub struct Login {
    /// The client id registered with the provider (the ID tokens' audience).
    pub client_id: String,
    /// The client secret, if the client has one.
    pub client_secret: Option<sluice_core::Secret>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// The claim that names the person (`email` by default).
    pub principal_claim: String,
    /// The claim that lists the person's groups.
    pub groups_claim: String,
    /// Provider group to sluice groups; other provider groups are ignored.
    pub group_map: std::collections::BTreeMap<String, Vec<String>>,
    /// Connections a signed-in person may reach (and delegate).
    pub connections: Vec<String>,
    /// How long a sign-in lasts before it must be renewed.
    pub session_ttl: Duration,
}

/// Keys of one issuer, as last fetched.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// Verifies tokens of the configured issuers, caching their keys.
pub struct Verifier {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Keys>>,
    /// Discovery documents, by issuer, with when they were fetched.
    docs: Mutex<HashMap<String, (Instant, Value)>>,
}

/// Keys are refetched after this long, and at once (but not more often
/// than every [`REFETCH_AFTER`]) when a token names a key id not seen yet:
/// that is how a rotation reaches the gateway.
const KEYS_TTL: Duration = Duration::from_secs(600);
const REFETCH_AFTER: Duration = Duration::from_secs(2);

/// Tolerated clock difference for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

impl Verifier {
    /// A verifier for these issuers.
    pub fn new(issuers: Vec<Issuer>) -> Verifier {
        Verifier {
            issuers,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with defaults"),
            keys: Mutex::new(HashMap::new()),
            docs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies a token; returns the issuer's name and the claims, or why
    /// it is refused (in words a CI log can show).
    pub async fn verify(&self, token: &str) -> Result<(String, Value), String> {
        self.verify_for(token, None).await
    }

    /// The configured issuer of this name.
    pub fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// The issuers people can sign in with.
    pub fn login_issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.iter().filter(|i| i.login.is_some())
    }

    /// The issuer's discovery document.
    pub async fn discovery(&self, issuer: &Issuer) -> Result<Value, String> {
        // Cached: unauthenticated sign-in requests must not each become a
        // request to the provider.
        if let Some((at, doc)) = self.docs.lock().await.get(&issuer.issuer) {
            if at.elapsed() < KEYS_TTL {
                return Ok(doc.clone());
            }
        }
        let doc = self.fetch_discovery(issuer).await?;
        self.docs
            .lock()
            .await
            .insert(issuer.issuer.clone(), (Instant::now(), doc.clone()));
        Ok(doc)
    }

    async fn fetch_discovery(&self, issuer: &Issuer) -> Result<Value, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url).await?;
        if doc["issuer"].as_str() != Some(issuer.issuer.as_str()) {
            return Err(format!(
                "{}'s discovery document names another issuer",
                issuer.name
            ));
        }
        Ok(doc)
    }

    /// Posts a form to one of the issuer's endpoints; returns the JSON
    /// answer, also for an error status (OAuth errors are JSON bodies).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), String> {
        let resp = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let body = resp
            .json()
            .await
            .map_err(|e| format!("{url}: not JSON: {}", e.without_url()))?;
        Ok((status, body))
    }

    /// As [`Self::verify`], with the audience `audience` instead of the
    /// issuer's configured one (an ID token's audience is the client id).
    pub async fn verify_for(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<(String, Value), String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a signed JWT: {e}"))?;
        let alg = header.alg;
        if !(rsa_alg(alg) || ec_alg(alg)) {
            return Err(format!(
                "algorithm {alg:?} is not accepted (only RSA and ECDSA signatures)"
            ));
        }
        let kid = header
            .kid
            .ok_or("the token names no key id (kid)")?
            .to_string();
        // The issuer is read before the signature is checked only to pick
        // whose keys to check it with; it is verified again below.
        let claimed = unverified_issuer(token).ok_or("the token has no issuer (iss)")?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == claimed)
            .ok_or_else(|| format!("issuer {:?} is not trusted", short(&claimed)))?;
        let jwk = self.key(issuer, &kid).await?;
        let family_ok = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => rsa_alg(alg),
            AlgorithmParameters::EllipticCurve(_) => ec_alg(alg),
            _ => false,
        };
        if !family_ok {
            return Err(format!(
                "key {:?} is not a key for {alg:?} (only RSA and EC keys are used)",
                short(&kid)
            ));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {:?}: {e}", short(&kid)))?;
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&issuer.issuer]);
        let audience = audience.unwrap_or(&issuer.audience);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => "the token has expired".to_string(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                K::InvalidAudience => {
                    format!("the token's audience is not {audience:?}, the one sluice requires")
                }
                K::InvalidIssuer => "the token's issuer does not match".to_string(),
                K::InvalidSignature => "the signature does not verify".to_string(),
                K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
                other => format!("the token is invalid: {other:?}"),
            }
        })?;
        Ok((issuer.name.clone(), data.claims))
    }

    /// The issuer's key with this id, refetching the key set when the id
    /// is new to it.
    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<jsonwebtoken::jwk::Jwk, String> {
        let mut keys = self.keys.lock().await;
        let cached = keys.get(&issuer.issuer);
        let stale = cached.is_none_or(|k| k.fetched.elapsed() > KEYS_TTL);
        let missing = cached
            .is_some_and(|k| k.set.find(kid).is_none() && k.fetched.elapsed() > REFETCH_AFTER);
        if stale || missing {
            let set = self.fetch_keys(issuer).await?;
            keys.insert(
                issuer.issuer.clone(),
                Keys {
                    set,
                    fetched: Instant::now(),
                },
            );
        }
        keys.get(&issuer.issuer)
            .and_then(|k| k.set.find(kid).cloned())
            .ok_or_else(|| {
                format!(
                    "key id {:?} is not among {}'s keys",
                    short(kid),
                    issuer.name
                )
            })
    }

    async fn fetch_keys(&self, issuer: &Issuer) -> Result<JwkSet, String> {
        let jwks_uri = match &issuer.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let doc = self.discovery(issuer).await?;
                doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("{}'s discovery document has no jwks_uri", issuer.name))?
                    .to_string()
            }
        };
        let set: Value = self.get_json(&jwks_uri).await?;
        serde_json::from_value(set)
            .map_err(|e| format!("{}'s keys are unreadable: {e}", issuer.name))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered HTTP {}", resp.status().as_u16()));
        }
        resp.json()
            .await
            .map_err(|e| format!("{url}: not JSON: {}", e.without_url()))
    }
}

/// RSA signatures sluice accepts.
fn rsa_alg(a: Algorithm) -> bool {
    matches!(
        a,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    )
}

/// ECDSA signatures sluice accepts.
fn ec_alg(a: Algorithm) -> bool {
    matches!(a, Algorithm::ES256 | Algorithm::ES384)
}

/// Whether a URL is plain HTTP to this machine, with no user part.
pub fn loopback_http(u: &reqwest::Url) -> bool {
    let host = u.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    u.scheme() == "http" && u.username().is_empty() && u.password().is_none() && loopback
}

/// A refusal's reason, cut for the record and the answer.
pub fn short_reason(s: &str) -> String {
    let cut = &s[..s.floor_char_boundary(300)];
    if cut.len() < s.len() {
        format!("{cut}...")
    } else {
        cut.to_string()
    }
}

/// A value from an unverified token, cut for messages and records.
pub fn short(s: &str) -> &str {
    &s[..s.floor_char_boundary(100)]
}

/// The `iss` of a token, read without verifying it.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["iss"].as_str().map(str::to_string)
}
