//! Static credentials and the region from the shared AWS files
//! (`~/.aws/credentials`, `~/.aws/config`, or where `AWS_SHARED_CREDENTIALS_FILE`
//! and `AWS_CONFIG_FILE` point), for the profile `AWS_PROFILE` names or
//! `default`.
//!
//! `object_store` reads credentials from the environment and from instance
//! metadata but leaves profiles to the AWS SDK, a dependency larger than
//! the rest of the store. A DBA's host usually has the files the `aws`
//! command line wrote, with static keys, and reading those is a few lines
//! of INI. SSO and `credential_process` profiles are not read: export
//! their credentials into the environment instead.

use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub credentials: Option<Credentials>,
    pub region: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

pub fn read() -> Profile {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let file = |var: &str, default: &str| {
        let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| home.join(default));
        std::fs::read_to_string(path).unwrap_or_default()
    };
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    from_files(&file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &file("AWS_CONFIG_FILE", ".aws/config"), &name)
}

fn from_files(credentials: &str, config: &str, name: &str) -> Profile {
    let creds = section(credentials, name);
    // The config file calls every profile but the default `[profile name]`.
    let conf_name = if name == "default" { "default".to_string() } else { format!("profile {name}") };
    let conf = section(config, &conf_name);
    let get = |k: &str| creds.get(k).or_else(|| conf.get(k)).cloned();
    let credentials = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(Credentials { access_key_id, secret_access_key, session_token: get("aws_session_token") })
        }
        _ => None,
    };
    Profile { credentials, region: conf.get("region").cloned() }
}

/// The `key = value` lines of one `[section]`.
fn section(text: &str, wanted: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == wanted;
        } else if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_named_profile_and_the_default() {
        let credentials = "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n\n\
                           [offsite]\n# a comment\naws_access_key_id=AK2\naws_secret_access_key=S2\naws_session_token=T2\n";
        let config = "[default]\nregion = eu-west-1\n[profile offsite]\nregion=us-east-2\n";
        let d = from_files(credentials, config, "default");
        assert_eq!(d.credentials.unwrap().access_key_id, "AK1");
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        let o = from_files(credentials, config, "offsite");
        let c = o.credentials.unwrap();
        assert_eq!((c.secret_access_key.as_str(), c.session_token.as_deref()), ("S2", Some("T2")));
        assert_eq!(o.region.as_deref(), Some("us-east-2"));
        assert_eq!(from_files("", "", "none"), Profile::default());
    }
}
