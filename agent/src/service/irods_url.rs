//! The iRODS HTTP API's collection URL as vespa-service.toml writes it,
//! `irods+https://host/irods-http-api/<X.Y.Z>/<logical path>`: read by the service's validation
//! and by the iRODS source alike, so it imports nothing of the agent.

use reqwest::Url;

pub const SCHEME: &str = "irods+";

/// Splits `irods+https://host/irods-http-api/0.7.0/zone/home/u/c` into the API URL and the
/// logical path.
pub fn split(source: &str) -> Result<(Url, String), String> {
    let rest = source
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("`{source}` does not start with {SCHEME}"))?;
    // URL parsing would resolve `..` quietly, into another collection than the one written.
    if rest
        .split(['/', '?', '#'])
        .any(|seg| seg == ".." || seg.eq_ignore_ascii_case("%2e%2e"))
    {
        return Err(format!("`{source}`: `..` is not allowed in a logical path"));
    }
    let url = Url::parse(rest).map_err(|e| format!("`{source}`: {e}"))?;
    let path = url.path().to_owned();
    let marker = "/irods-http-api/";
    let at = path.find(marker).ok_or_else(|| {
        format!("`{source}`: the path must contain {marker}<X.Y.Z>/<logical path>")
    })?;
    let after = &path[at + marker.len()..];
    let (version, lpath) = after.split_once('/').unwrap_or((after, ""));
    let numeric = version.split('.').count() == 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !numeric {
        return Err(format!(
            "`{source}`: `{version}` is not an API version like 0.7.0"
        ));
    }
    let lpath = percent_encoding::percent_decode_str(lpath)
        .decode_utf8()
        .map_err(|_| format!("`{source}`: the logical path is not UTF-8"))?;
    let lpath = format!("/{}", lpath.trim_matches('/'));
    // The path goes into a GenQuery string: no quote may end it early.
    if lpath == "/" || lpath.contains(['\'', '\0']) || lpath.split('/').any(|s| s == "..") {
        return Err(format!(
            "`{source}`: `{lpath}` is not a collection's logical path"
        ));
    }
    let mut api = url.clone();
    api.set_path(&path[..at + marker.len() + version.len()]);
    api.set_query(None);
    api.set_fragment(None);
    Ok((api, lpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_names_the_api_and_the_logical_path() {
        let (api, lpath) =
            split("irods+https://b2safe.eu/irods-http-api/0.7.0/EUDAT/home/vespa/epn%20lab/")
                .unwrap();
        assert_eq!(api.as_str(), "https://b2safe.eu/irods-http-api/0.7.0");
        assert_eq!(lpath, "/EUDAT/home/vespa/epn lab");
        for bad in [
            "https://b2safe.eu/irods-http-api/0.7.0/z/c",
            "irods+https://b2safe.eu/api/0.7.0/z/c",
            "irods+https://b2safe.eu/irods-http-api/latest/z/c",
            "irods+https://b2safe.eu/irods-http-api/0.7.0/",
            "irods+https://b2safe.eu/irods-http-api/0.7.0/z/it's",
            "irods+https://b2safe.eu/irods-http-api/0.7.0/z/../other",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
