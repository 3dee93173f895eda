//! The CLI side of the API: finds the gateway and the admin credential.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::config::Config;

/// An authenticated API client.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `SLUICE_URL` / `SLUICE_TOKEN` win; then the credential `sluice
    /// login` keeps; otherwise the config's API address and the admin
    /// credential in its data directory.
    pub fn from_env_or_config(cfg: &Config) -> Result<ApiClient> {
        let base = match std::env::var("SLUICE_URL") {
            Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
            _ => format!("http://{}", cfg.gateway.api_listen),
        };
        let signed_in = crate::login_cli::credential_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let token = match std::env::var("SLUICE_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ if signed_in.is_some() => signed_in.unwrap_or_default(),
            _ => {
                let path = cfg.data_dir().join(crate::gateway::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin credential: {} is not readable (start the gateway once, pass --config, or set SLUICE_TOKEN)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(ApiClient {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// A client without a credential, for the one route that takes none
    /// (token exchange: the subject token is the credential).
    pub fn anonymous(cfg: &Config) -> ApiClient {
        let base = match std::env::var("SLUICE_URL") {
            Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
            _ => format!("http://{}", cfg.gateway.api_listen),
        };
        ApiClient {
            base,
            token: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// POST a form (OAuth endpoints); errors carry the OAuth description.
    pub async fn post_form(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let body = self.send_raw(req).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the gateway API at {}: {e}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("cannot read the gateway's answer: {e}"))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        // OAuth errors put the words in error_description.
        let msg = body
            .get("error_description")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        bail!("{msg} (HTTP {})", status.as_u16());
    }

    /// GET a file as it is (a recording).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        self.send_raw(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}
