//! `vespa-agent rebuild --vm`, level 2: ask OpenStack Nova to rebuild this VM from its image,
//! with the user data it was created with (Nova keeps it), so that cloud-init installs the node
//! again from nothing. Written from the Nova, Keystone and metadata-service API references.
//!
//! Before acting it checks, and refuses with the reason when one fails:
//! - the metadata service names the server id of the configuration (a copied configuration must
//!   not rebuild another VM), in the project the credential is for;
//! - the server is not locked and no task runs on it;
//! - a boot-from-volume server is rebuilt only where compute 2.93 is supported (before it, a
//!   rebuild leaves the root volume as it is, which repairs nothing);
//! - the last rebuild, recorded in the server's metadata in Nova (it survives the rebuild), is
//!   older than `openstack.rebuild-interval`: a broken image cannot cause a rebuild loop.
//!
//! It records the attempt in that metadata before it asks for the rebuild.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::OpenstackSettings;

/// Where the last rebuild is recorded, in the server's metadata.
pub const LAST_REBUILD: &str = "vespa-agent:last-rebuild";
pub const LAST_REASON: &str = "vespa-agent:last-rebuild-reason";
/// The microversion that rebuilds a boot-from-volume server's root volume.
const VOLUME_REBUILD: (u32, u32) = (2, 93);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {message}")]
    Api { what: String, message: String },
}

/// What the checks found, and what was (or would be) asked of Nova.
#[derive(Debug)]
pub struct Plan {
    pub server_id: String,
    pub image: String,
    pub microversion: String,
    pub volume_backed: bool,
}

fn api(what: &str, message: impl ToString) -> VmError {
    VmError::Api {
        what: what.to_owned(),
        message: message.to_string(),
    }
}

fn version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn json_of(what: &str, resp: reqwest::Response) -> Result<Value, VmError> {
    let status = resp.status();
    let body = resp.text().await.map_err(|e| api(what, e))?;
    if !status.is_success() {
        let short: String = body.chars().take(300).collect();
        return Err(api(what, format!("HTTP {}: {short}", status.as_u16())));
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body).map_err(|e| api(what, format!("not JSON: {e}")))
}

pub async fn rebuild(o: &OpenstackSettings, reason: &str, dry_run: bool) -> Result<Plan, VmError> {
    let http = crate::outbound::client(Duration::from_secs(30), Duration::from_secs(5))
        .map_err(|e| api("HTTP client", e))?;

    // 1. Who am I: the metadata service, reachable only from inside the VM.
    let url = format!("{}/openstack/latest/meta_data.json", o.metadata_url);
    let meta = json_of(
        "the metadata service",
        http.get(&url).send().await.map_err(|e| api(&url, e))?,
    )
    .await?;
    let uuid = meta["uuid"].as_str().ok_or_else(|| {
        api(
            "the metadata service",
            "its answer names no server id (uuid): is metadata-url the OpenStack metadata service?",
        )
    })?;
    if uuid != o.server_id {
        return Err(VmError::Refused(format!(
            "the metadata service says this VM is `{uuid}`, the configuration names `{}` \
             (openstack.server-id): refusing to rebuild another server",
            o.server_id
        )));
    }

    // 2. A token for the application credential, and where Nova is.
    let secret = o
        .credential_file
        .read()
        .map_err(|m| api("openstack.credential-file", m))?;
    let (id, key) = crate::granules::user_password(secret.expose()).ok_or_else(|| {
        api(
            "openstack.credential-file",
            "must hold `id:secret` of an application credential",
        )
    })?;
    let body = json!({"auth": {"identity": {
        "methods": ["application_credential"],
        "application_credential": {"id": id, "secret": key},
    }}});
    let url = format!("{}/auth/tokens", o.auth_url);
    let resp = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| api(&url, e))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(api(
            "Keystone",
            "the application credential was refused (HTTP 401): check openstack.credential-file",
        ));
    }
    let token = resp
        .headers()
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth = json_of("Keystone", resp).await?;
    let token = token.ok_or_else(|| api("Keystone", "no X-Subject-Token in the answer"))?;
    let project = auth["token"]["project"]["id"].as_str().unwrap_or_default();
    if let Some(p) = meta["project_id"].as_str()
        && p != project
    {
        return Err(VmError::Refused(format!(
            "this VM is in project `{p}`, the credential in `{project}`: refusing"
        )));
    }
    let compute = auth["token"]["catalog"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["type"] == "compute")
        .and_then(|s| {
            s["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["interface"] == "public")?["url"]
                .as_str()
        })
        .ok_or_else(|| api("Keystone", "no public compute endpoint in the catalog"))?
        .trim_end_matches('/')
        .to_owned();

    // 3. The microversion: the newest up to the one that rebuilds a root volume.
    let root = json_of(
        "Nova",
        http.get(format!("{compute}/"))
            .header("X-Auth-Token", &token)
            .send()
            .await
            .map_err(|e| api(&compute, e))?,
    )
    .await?;
    let max = root["version"]["version"]
        .as_str()
        .and_then(version)
        .ok_or_else(|| {
            api(
                "Nova",
                "no version in Nova's version document (GET of the compute endpoint)",
            )
        })?;
    let micro = max.min(VOLUME_REBUILD);
    let microversion = format!("{}.{}", micro.0, micro.1);
    let header = format!("compute {microversion}");

    // 4. The server: not locked, not busy, and what it boots from.
    let server_url = format!("{compute}/servers/{}", o.server_id);
    let server = json_of(
        "Nova: the server",
        http.get(&server_url)
            .header("X-Auth-Token", &token)
            .header("OpenStack-API-Version", &header)
            .send()
            .await
            .map_err(|e| api(&server_url, e))?,
    )
    .await?;
    let s = &server["server"];
    if s["locked"].as_bool() == Some(true) {
        return Err(VmError::Refused(
            "the server is locked in Nova: refusing to rebuild it".into(),
        ));
    }
    if let Some(task) = s["OS-EXT-STS:task_state"].as_str() {
        return Err(VmError::Refused(format!(
            "Nova is busy with the server (task_state `{task}`): try later"
        )));
    }
    let status = s["status"]
        .as_str()
        .ok_or_else(|| api("Nova: the server", "the answer has no status"))?;
    if !matches!(status, "ACTIVE" | "ERROR" | "SHUTOFF") {
        return Err(VmError::Refused(format!(
            "the server is {status}: Nova rebuilds only an ACTIVE, ERROR or SHUTOFF server"
        )));
    }
    // A boot-from-volume server shows no image (an empty string).
    let current_image = s["image"]["id"].as_str().map(str::to_owned);
    let volume_backed = current_image.is_none();
    if volume_backed && micro < VOLUME_REBUILD {
        return Err(VmError::Refused(format!(
            "the server boots from a volume and this Nova supports compute {microversion}: \
             before 2.93 a rebuild does not re-image the root volume, so it would repair nothing"
        )));
    }
    let image = o.image.clone().or(current_image).ok_or_else(|| {
        VmError::Refused(
            "the server boots from a volume: set openstack.image to the image to rebuild from"
                .into(),
        )
    })?;

    // 5. At most one rebuild per interval, counted in Nova, where it survives the rebuild.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Some(last) = s["metadata"][LAST_REBUILD]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let since = now.saturating_sub(last);
        if since < o.rebuild_interval.as_secs() {
            return Err(VmError::Refused(format!(
                "this VM was rebuilt {} ago; openstack.rebuild-interval allows one per {}",
                humantime::format_duration(Duration::from_secs(since)),
                humantime::format_duration(o.rebuild_interval)
            )));
        }
    }
    let plan = Plan {
        server_id: o.server_id.clone(),
        image,
        microversion,
        volume_backed,
    };
    if dry_run {
        return Ok(plan);
    }

    // 6. Record the attempt, then ask for it.
    let reason: String = reason.chars().take(255).collect();
    json_of(
        "Nova: recording the rebuild",
        http.post(format!("{server_url}/metadata"))
            .header("X-Auth-Token", &token)
            .header("OpenStack-API-Version", &header)
            .json(&json!({"metadata": {LAST_REBUILD: now.to_string(), LAST_REASON: reason}}))
            .send()
            .await
            .map_err(|e| api(&server_url, e))?,
    )
    .await?;
    let resp = http
        .post(format!("{server_url}/action"))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", &header)
        .json(&json!({"rebuild": {"imageRef": plan.image}}))
        .send()
        .await
        .map_err(|e| api(&server_url, e))?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        json_of("Nova: the rebuild", resp).await?;
        return Err(api("Nova: the rebuild", "answered without 202 Accepted"));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_compare_as_numbers() {
        assert_eq!(version("2.93"), Some((2, 93)));
        assert_eq!(version("2.100"), Some((2, 100)));
        assert!(version("2.100").unwrap() > VOLUME_REBUILD);
        assert!(version("2.9").unwrap() < VOLUME_REBUILD);
        assert_eq!(version("two"), None);
    }
}
