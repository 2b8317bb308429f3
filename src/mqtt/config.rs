//! What `--mqtt URL` and its companion options resolve to: the broker,
//! the credentials, TLS, the names and the spool.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable with the broker password (used when the URL has
/// no password and no `--mqtt-password-file` is given).
pub const PASSWORD_ENV: &str = "BVAE_MQTT_PASSWORD";
/// Environment variable with the broker user name (used when the URL has
/// none).
pub const USER_ENV: &str = "BVAE_MQTT_USER";
/// Longest password file read, in bytes.
const MAX_SECRET_FILE: u64 = 4096;
/// Longest camera name, in characters (it goes into topics and ids).
pub const MAX_NAME: usize = 64;
/// Default spool cap on disk, MB.
pub const DEFAULT_SPOOL_MB: f64 = 64.0;
/// Default Home Assistant discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// The broker, as a URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (1883 for mqtt, 8883 for mqtts by default).
    pub port: u16,
    /// User name from the URL.
    pub user: Option<String>,
    /// Password from the URL.
    pub password: Option<String>,
}

/// Decodes `%XX` escapes (user names and passwords in URLs).
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = hex else {
                bail!("the MQTT URL's {what} has a bad %-escape");
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("the MQTT URL's {what} is not UTF-8"))
}

impl BrokerUrl {
    /// Parses `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
    pub fn parse(url: &str) -> Result<BrokerUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            bail!("the MQTT URL must start with mqtt:// or mqtts://");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            bail!(
                "the MQTT URL takes no path, query or fragment (mqtt://[user[:password]@]host[:port])"
            );
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (
                    Some(percent_decode(n, "user")?),
                    Some(percent_decode(p, "password")?),
                ),
                None => (Some(percent_decode(u, "user")?), None),
            },
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                bail!("the MQTT URL's IPv6 address lacks its closing ]");
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => bail!("the MQTT URL has text after the IPv6 address"),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            bail!("the MQTT URL names no host");
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => bail!("the MQTT URL's port must be 1 to 65535, found {p:?}"),
            },
        };
        Ok(BrokerUrl {
            tls,
            host,
            port,
            user: user.filter(|u| !u.is_empty()),
            password,
        })
    }

    /// The URL without its password, for logs and `/api/config`.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let user = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, _) => String::new(),
        };
        format!("{scheme}://{user}{host}:{}", self.port)
    }
}

/// Reads a secret from a file: its first line, without the line end;
/// bounded in size. `what` names the file in errors ("password file").
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot open the {what} {}", path.display()))?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if s.len() as u64 > MAX_SECRET_FILE {
        bail!(
            "the {what} {} is larger than {MAX_SECRET_FILE} bytes",
            path.display()
        );
    }
    Ok(s.lines().next().unwrap_or("").to_string())
}

/// A camera name usable in topics and ids: letters, digits, `-` and
/// `_`, 1 to [`MAX_NAME`] characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        bail!("the camera name must have 1 to {MAX_NAME} characters, found {name:?}");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "the camera name {name:?} may only hold letters, digits, - and _ (it goes into MQTT topics)"
        );
    }
    Ok(())
}

/// This machine's host name, made into a camera name (characters other
/// than letters, digits, `-` and `_` become `_`); `bvae` if unknown.
pub fn default_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "bvae".to_string()
    } else {
        name
    }
}

/// A topic prefix: no wildcards, no empty level at either end.
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 200 {
        bail!("the MQTT topic prefix must have 1 to 200 bytes");
    }
    if prefix.contains(['+', '#', '\0']) || prefix.starts_with('/') || prefix.ends_with('/') {
        bail!(
            "the MQTT topic prefix {prefix:?} may not hold + # or a NUL, nor start or end with /"
        );
    }
    Ok(())
}

/// The MQTT options as given (flags or a configuration file).
#[derive(Debug, Clone, Default)]
pub struct MqttRequest<'a> {
    /// `--mqtt URL`.
    pub url: &'a str,
    /// `--name`.
    pub name: Option<&'a str>,
    /// `--mqtt-prefix`.
    pub prefix: Option<&'a str>,
    /// `--ha-discovery` (`off` = none).
    pub discovery: Option<&'a str>,
    /// `--mqtt-ca`.
    pub ca: Option<PathBuf>,
    /// `--mqtt-password-file`.
    pub password_file: Option<PathBuf>,
    /// `--mqtt-spool`.
    pub spool: Option<PathBuf>,
    /// `--mqtt-spool-mb` (0 = no spool: events wait in memory only).
    pub spool_mb: Option<f64>,
}

/// Everything the MQTT client runs with, resolved.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The broker.
    pub broker: BrokerUrl,
    /// User name (URL, else [`USER_ENV`]).
    pub user: Option<String>,
    /// Password (URL, else the password file, else [`PASSWORD_ENV`];
    /// [`MqttConfig::load_secrets`] fills it).
    pub password: Option<String>,
    /// `--mqtt-password-file`.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the broker's certificate
    /// (`mqtts://`; the system's roots otherwise).
    pub ca: Option<PathBuf>,
    /// Camera name (`--name`, default the host name).
    pub name: String,
    /// MQTT client id.
    pub client_id: String,
    /// Topic prefix (default `bvae/<name>`).
    pub prefix: String,
    /// Home Assistant discovery prefix; `None` = no discovery.
    pub discovery: Option<String>,
    /// Spool folder for events the broker has not taken yet; `None` =
    /// memory only.
    pub spool: Option<PathBuf>,
    /// Spool cap on disk, bytes.
    pub spool_bytes: u64,
    /// Keep-alive interval, seconds.
    pub keep_alive_s: u64,
}

impl MqttConfig {
    /// The settings of `--mqtt URL` and its companions, checked; the
    /// password is read later ([`MqttConfig::load_secrets`]). `name`
    /// defaults to the host name, `prefix` to `bvae/<name>`, the spool to
    /// [`default_spool`] (a cap of 0 MB turns it off).
    pub fn resolve(r: &MqttRequest<'_>) -> Result<MqttConfig> {
        let MqttRequest {
            url,
            name,
            prefix,
            discovery,
            ref ca,
            ref password_file,
            ref spool,
            spool_mb,
        } = *r;
        let (ca, password_file, spool) = (ca.clone(), password_file.clone(), spool.clone());
        let broker = BrokerUrl::parse(url)?;
        let name = name.map_or_else(default_name, str::to_string);
        check_name(&name)?;
        let prefix = prefix.map_or_else(|| format!("bvae/{name}"), str::to_string);
        check_prefix(&prefix)?;
        let discovery = match discovery {
            None => Some(DISCOVERY_PREFIX.to_string()),
            Some("off") | Some("") => None,
            Some(d) => {
                check_prefix(d)?;
                Some(d.to_string())
            }
        };
        if ca.is_some() && !broker.tls {
            bail!("--mqtt-ca is for mqtts:// brokers; the URL says mqtt://");
        }
        let mb = spool_mb.unwrap_or(DEFAULT_SPOOL_MB);
        if !(mb.is_finite() && (0.0..=1e6).contains(&mb)) {
            bail!("the MQTT spool cap must be a number of MB from 0 (no spool) to 1e6, found {mb}");
        }
        let spool = match spool {
            _ if mb == 0.0 => None,
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p),
            None => default_spool(&name),
        };
        Ok(MqttConfig {
            user: broker.user.clone(),
            password: broker.password.clone(),
            password_file,
            ca,
            client_id: format!("bvae-{name}"),
            name,
            prefix,
            discovery,
            spool,
            spool_bytes: (mb * 1e6) as u64,
            keep_alive_s: 15,
            broker,
        })
    }

    /// Fills the user and password the URL did not give: the user from
    /// [`USER_ENV`], the password from the password file, else
    /// [`PASSWORD_ENV`].
    pub fn load_secrets(&mut self) -> Result<()> {
        if self.user.is_none() {
            self.user = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty());
        }
        if self.password.is_none() {
            self.password = match &self.password_file {
                Some(p) => Some(read_secret(p, "password file")?),
                None => std::env::var(PASSWORD_ENV).ok(),
            };
        }
        if self.password.is_some() && self.user.is_none() {
            bail!("an MQTT password was given but no user (put it in the URL or {USER_ENV})");
        }
        Ok(())
    }

    /// Topic `<prefix>/<leaf>`.
    pub fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }
}

/// The default spool folder: `$XDG_STATE_HOME/bvae/mqtt-<name>`, else
/// `$HOME/.local/state/bvae/mqtt-<name>`, else `$STATE_DIRECTORY` (the
/// systemd unit's state folder) when set first.
pub fn default_spool(name: &str) -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let leaf = format!("mqtt-{name}");
    if let Some(d) = var("STATE_DIRECTORY") {
        return Some(d.join(leaf));
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Some(d.join("bvae").join(leaf));
    }
    var("HOME").map(|h| h.join(".local/state/bvae").join(leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_credentials() {
        let u = BrokerUrl::parse("mqtt://broker.lan").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.lan", 1883)
        );
        assert_eq!((u.user, u.password), (None, None));
        let u = BrokerUrl::parse("mqtts://cam:p%40ss%3Aw@10.0.0.2:8884/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.2", 8884));
        assert_eq!(u.user.as_deref(), Some("cam"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w"));
        assert_eq!(u.redacted(), "mqtts://cam:***@10.0.0.2:8884");
        let u = BrokerUrl::parse("mqtts://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
        assert_eq!(u.redacted(), "mqtts://[::1]:8883");
    }

    #[test]
    fn bad_urls_are_refused_by_name() {
        for (url, msg) in [
            ("http://x", "must start with mqtt://"),
            ("mqtt://", "names no host"),
            ("mqtt://x:0", "port must be 1 to 65535"),
            ("mqtt://x:70000", "port must be 1 to 65535"),
            ("mqtt://x/topic", "no path"),
            ("mqtt://u:%zz@x", "bad %-escape"),
            ("mqtt://[::1", "closing ]"),
        ] {
            let e = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(msg), "{url}: {e}");
        }
    }

    #[test]
    fn names_and_prefixes_are_checked() {
        check_name("front-door_1").unwrap();
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        let d = default_name();
        check_name(&d).unwrap();
        check_prefix("bvae/front").unwrap();
        for p in ["", "a/#", "+/x", "/a", "a/"] {
            assert!(check_prefix(p).is_err(), "{p}");
        }
    }

    #[test]
    fn a_password_file_gives_its_first_line_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        assert_eq!(read_secret(&p, "password file").unwrap(), "s3cret");
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        assert!(
            read_secret(&p, "password file")
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
        assert!(read_secret(&dir.path().join("none"), "password file").is_err());
    }
}
