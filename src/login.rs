//! People's sign-in with their identity provider: the gateway redeems the
//! authorization code (PKCE, from `sluice login`'s loopback redirect) or
//! the device code, verifies the ID token itself, and issues a short-lived
//! sluice API credential for the person, renewable with the provider's
//! refresh token while the provider allows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_core::audit::EventDraft;
use sluice_core::store::TokenRecord;
use sluice_core::{Core, IssueRequest, Secret};
use tokio::sync::Mutex;

use crate::oidc::{Issuer, Login, Verifier};

/// Sign-ins in progress and the refresh tokens of live ones. Kept in
/// memory: a restarted gateway asks people to sign in again.
#[derive(Default)]
pub struct Logins {
    devices: Mutex<HashMap<String, DeviceLogin>>,
    refresh: Mutex<HashMap<String, (String, Secret)>>,
}

struct DeviceLogin {
    issuer: String,
    device_code: Secret,
    until: Instant,
}

impl Logins {
    /// Forgets the refresh tokens of credentials that signed out.
    pub async fn forget(&self, ids: &[&str]) {
        let mut refresh = self.refresh.lock().await;
        for id in ids {
            refresh.remove(*id);
        }
    }
}

/// At most this many device sign-ins may be waiting at once.
const MAX_DEVICE_LOGINS: usize = 1000;

/// An authorization code from the loopback redirect, with what proves the
/// sign-in is the CLI's own.
#[derive(serde::Deserialize)]
pub struct CodeLogin {
    /// The provider's name.
    pub issuer: String,
    /// The authorization code.
    pub code: String,
    /// The PKCE verifier whose challenge the authorization request carried.
    pub code_verifier: String,
    /// The redirect URI the code was sent to.
    pub redirect_uri: String,
    /// The nonce the authorization request carried.
    pub nonce: String,
}

/// What a finished sign-in returns to the CLI.
pub struct SignedIn {
    /// The API credential (shown once).
    pub token: String,
    /// Its record.
    pub record: TokenRecord,
}

fn login_of<'a>(verifier: &'a Verifier, name: &str) -> Result<(&'a Issuer, &'a Login), String> {
    let issuer = verifier
        .issuer(name)
        .ok_or_else(|| format!("no identity provider named {:?}", crate::oidc::short(name)))?;
    let login = issuer
        .login
        .as_ref()
        .ok_or_else(|| format!("{name} is not configured for sign-in (no client_id)"))?;
    Ok((issuer, login))
}

/// Calls the provider's token endpoint; the answer on success, or its
/// OAuth error code and description.
async fn token_endpoint(
    verifier: &Verifier,
    issuer: &Issuer,
    login: &Login,
    grant: &[(&str, &str)],
) -> Result<Value, (String, String)> {
    let doc = verifier
        .discovery(issuer)
        .await
        .map_err(|e| ("server_error".to_string(), e))?;
    let url = doc["token_endpoint"]
        .as_str()
        .ok_or(("server_error".to_string(), "no token_endpoint".to_string()))?;
    let mut form: Vec<(&str, &str)> = grant.to_vec();
    form.push(("client_id", &login.client_id));
    if let Some(s) = &login.client_secret {
        form.push(("client_secret", s.expose()));
    }
    let (status, body) = verifier
        .post_form(url, &form)
        .await
        .map_err(|e| ("server_error".to_string(), e))?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err((
        body["error"]
            .as_str()
            .unwrap_or("invalid_grant")
            .to_string(),
        body["error_description"]
            .as_str()
            .unwrap_or("the provider refused")
            .to_string(),
    ))
}

impl Logins {
    /// Redeems an authorization code (with its PKCE verifier) and signs
    /// the person in.
    pub async fn code(
        &self,
        core: &Core,
        verifier: &Verifier,
        req: &CodeLogin,
    ) -> Result<SignedIn, String> {
        let (issuer, login) = login_of(verifier, &req.issuer)?;
        let (code, code_verifier, redirect_uri, nonce) = (
            req.code.as_str(),
            req.code_verifier.as_str(),
            req.redirect_uri.as_str(),
            req.nonce.as_str(),
        );
        if !is_loopback_redirect(redirect_uri) {
            return Err(
                "the redirect URI must be a loopback address (http://127.0.0.1:PORT/...)".into(),
            );
        }
        if nonce.len() < 16 || code_verifier.len() < 43 {
            return Err("a nonce and a PKCE code verifier (43+ characters) are required".into());
        }
        let answer = token_endpoint(
            verifier,
            issuer,
            login,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier),
            ],
        )
        .await
        .map_err(|(c, d)| format!("{c}: {d}"))?;
        self.finish(core, verifier, issuer, login, &answer, Some(nonce), None)
            .await
    }

    /// Starts a device sign-in; returns what the person is shown.
    pub async fn device_start(
        &self,
        verifier: &Verifier,
        issuer_name: &str,
    ) -> Result<Value, String> {
        let (issuer, login) = login_of(verifier, issuer_name)?;
        {
            let mut devices = self.devices.lock().await;
            devices.retain(|_, d| d.until > Instant::now());
            if devices.len() >= MAX_DEVICE_LOGINS {
                return Err("too many sign-ins in progress; try again shortly".into());
            }
        }
        let doc = verifier.discovery(issuer).await?;
        let url = doc["device_authorization_endpoint"]
            .as_str()
            .ok_or("the provider offers no device sign-in")?;
        let scope = login.scopes.join(" ");
        let mut form = vec![("client_id", login.client_id.as_str()), ("scope", &scope)];
        if let Some(s) = &login.client_secret {
            form.push(("client_secret", s.expose()));
        }
        let (status, body) = verifier.post_form(url, &form).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "the provider refused: {}",
                body["error_description"]
                    .as_str()
                    .unwrap_or("no reason given")
            ));
        }
        let device_code = body["device_code"].as_str().ok_or("no device_code")?;
        let expires_in = body["expires_in"].as_u64().unwrap_or(600).min(3600);
        // A bearer secret until the sign-in completes: as random as a token.
        let id = format!("login_{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut devices = self.devices.lock().await;
        devices.retain(|_, d| d.until > Instant::now());
        if devices.len() >= MAX_DEVICE_LOGINS {
            return Err("too many sign-ins in progress; try again shortly".into());
        }
        devices.insert(
            id.clone(),
            DeviceLogin {
                issuer: issuer.name.clone(),
                device_code: Secret::new(device_code),
                until: Instant::now() + Duration::from_secs(expires_in),
            },
        );
        Ok(json!({
            "login_id": id,
            "user_code": body["user_code"],
            "verification_uri": body["verification_uri"],
            "verification_uri_complete": body["verification_uri_complete"],
            "interval": body["interval"].as_u64().unwrap_or(5),
            "expires_in": expires_in,
        }))
    }

    /// Asks the provider whether a device sign-in is done: `Ok(None)`
    /// while the person has not finished.
    pub async fn device_poll(
        &self,
        core: &Core,
        verifier: &Verifier,
        login_id: &str,
    ) -> Result<Option<SignedIn>, String> {
        let (issuer_name, device_code) = {
            let devices = self.devices.lock().await;
            let d = devices
                .get(login_id)
                .filter(|d| d.until > Instant::now())
                .ok_or("no such sign-in in progress (it may have expired)")?;
            (d.issuer.clone(), d.device_code.clone())
        };
        let (issuer, login) = login_of(verifier, &issuer_name)?;
        let answer = token_endpoint(
            verifier,
            issuer,
            login,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code.expose()),
            ],
        )
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err((code, _)) if code == "authorization_pending" || code == "slow_down" => {
                return Ok(None)
            }
            Err((c, d)) => {
                self.devices.lock().await.remove(login_id);
                return Err(format!("{c}: {d}"));
            }
        };
        self.devices.lock().await.remove(login_id);
        self.finish(core, verifier, issuer, login, &answer, None, None)
            .await
            .map(Some)
    }

    /// Renews a sign-in with the provider's refresh token: a new credential
    /// for the same person, with groups as the provider says now.
    pub async fn refresh(
        &self,
        core: &Core,
        verifier: &Verifier,
        caller: &TokenRecord,
    ) -> Result<SignedIn, String> {
        let (issuer_name, refresh) = self
            .refresh
            .lock()
            .await
            .get(&caller.id)
            .cloned()
            .ok_or("this credential cannot be renewed here; sign in again (sluice login)")?;
        let (issuer, login) = login_of(verifier, &issuer_name)?;
        let answer = token_endpoint(
            verifier,
            issuer,
            login,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
            ],
        )
        .await
        .map_err(|(c, d)| {
            format!("the provider no longer renews this sign-in ({c}: {d}); sign in again")
        })?;
        let renewed = self
            .finish(core, verifier, issuer, login, &answer, None, Some(caller))
            .await?;
        self.refresh.lock().await.remove(&caller.id);
        Ok(renewed)
    }

    /// Verifies the ID token the provider returned and issues the
    /// person's API credential; records the sign-in.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        core: &Core,
        verifier: &Verifier,
        issuer: &Issuer,
        login: &Login,
        answer: &Value,
        nonce: Option<&str>,
        renewing: Option<&TokenRecord>,
    ) -> Result<SignedIn, String> {
        let id_token = answer["id_token"]
            .as_str()
            .ok_or("the provider returned no ID token")?;
        let (by, claims) = verifier
            .verify_for(id_token, Some(&login.client_id))
            .await?;
        if by != issuer.name {
            return Err("the ID token comes from another provider".into());
        }
        if let Some(n) = nonce {
            if claims["nonce"].as_str() != Some(n) {
                return Err("the ID token's nonce does not match this sign-in".into());
            }
        }
        let principal = claims[&login.principal_claim]
            .as_str()
            .ok_or_else(|| format!("the ID token has no {:?} claim", login.principal_claim))?
            .to_string();
        if login.principal_claim == "email"
            && claims["email_verified"] != json!(true)
            && claims["email_verified"] != json!("true")
        {
            return Err(
                "the provider does not say this email address is verified (email_verified)".into(),
            );
        }
        if principal.is_empty()
            || principal.len() > 200
            || principal.starts_with("workload:")
            || principal.starts_with("agent:")
            || principal
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
            || sluice_core::review::printable(&principal) != principal
            || principal.contains("/agent:")
        {
            return Err(format!(
                "{:?} cannot name a person in sluice",
                crate::oidc::short(&principal)
            ));
        }
        if let Some(old) = renewing {
            if old.principal != principal {
                return Err("the renewed sign-in names another person".into());
            }
        }
        let mut groups: Vec<String> = claims[&login.groups_claim]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|g| login.group_map.get(g))
            .flatten()
            .cloned()
            .collect();
        groups.sort();
        groups.dedup();
        let (token, record) = core
            .issue_token(
                IssueRequest {
                    principal: principal.clone(),
                    actor: None,
                    connections: login.connections.clone(),
                    ttl_secs: login.session_ttl.as_secs(),
                    uses: None,
                    role: None,
                    api: true,
                    groups: groups.clone(),
                    // Renewed from the old credential: revoking either
                    // end of the chain (or signing out) revokes it.
                    parent: renewing.map(|old| old.id.clone()),
                },
                &format!("login:{}", issuer.name),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(old) = renewing {
            // Signed out while the provider answered: the renewal must not
            // outlive the sign-out.
            let revoked = core
                .store()
                .token_by_id(&old.id)
                .await
                .map_err(|e| e.to_string())?
                .is_none_or(|t| t.revoked_at.is_some());
            if revoked {
                let _ = core.revoke_token(&record.id, "gateway").await;
                return Err("the sign-in was ended while it was being renewed".into());
            }
        }
        let mut ev = EventDraft::new(
            "login",
            json!({"issuer": issuer.name, "token_id": record.id, "groups": groups,
                   "subject": claims["sub"], "renewed": renewing.is_some()}),
        );
        ev.principal = Some(principal);
        core.record(ev).await.map_err(|e| e.to_string())?;
        if let Some(r) = answer["refresh_token"].as_str() {
            self.refresh
                .lock()
                .await
                .insert(record.id.clone(), (issuer.name.clone(), Secret::new(r)));
        }
        Ok(SignedIn { token, record })
    }
}

/// Whether a redirect URI points back at the signing-in machine.
fn is_loopback_redirect(uri: &str) -> bool {
    reqwest::Url::parse(uri).is_ok_and(|u| crate::oidc::loopback_http(&u))
}
