//! The options of the live loop that `watch` and `demo` share, in two
//! stages (as ripgrep does it):
//!
//! 1. [`LiveOptions`], the raw options: declared once, they are both the
//!    command-line flags and the keys of a `watch --config` file. Every
//!    field is optional, so that flags can be merged over a file
//!    ([`LiveOptions::or`]).
//! 2. [`LiveSettings`], what the loop runs with, resolved over a
//!    calibration profile by [`LiveOptions::resolve`]: every value
//!    checked, every default applied, no `Option` left where a default
//!    exists. Resolving has no side effects; the run step applies the
//!    settings (threads, files, window).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::calibrate::Profile;
use crate::drift::{MAX_WINDOW, MIN_WINDOW};
use crate::live::LiveConfig;
use crate::live::refresh::RefreshConfig;
use crate::live::snapshot::SnapshotConfig;
use crate::model::MAX_THREADS;
use crate::mqtt::MqttConfig;
use crate::mqtt::config::MqttRequest;
use crate::score::Method;

/// Longest time any option in seconds takes (about 31 years): longer ones
/// would overflow the loop's clock arithmetic.
pub const MAX_SECONDS: f64 = 1e9;

/// Declares a struct of options (each an `Option`) together with its merge,
/// so that the list of fields is written once.
macro_rules! options {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[$field_attr:meta])* pub $field:ident: Option<$ty:ty>, )*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $( $(#[$field_attr])* pub $field: Option<$ty>, )*
        }

        impl $name {
            /// These options, with each one that is not given taken from
            /// `fallback` (flags over a configuration file).
            pub fn or(self, fallback: $name) -> $name {
                $name { $( $field: self.$field.or(fallback.$field), )* }
            }
        }
    };
}

options! {
    /// Options of the live loop, as flags of `watch` and `demo` and as keys
    /// of a `watch --config` file (the flag's name with `_`). Unknown keys
    /// are refused.
    #[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LiveOptions {
        /// Decide with this score instead of the profile's default.
        #[arg(long, value_enum)]
        pub method: Option<Method>,
        /// Frames above threshold before an anomaly starts [default: 3].
        #[arg(long)]
        pub enter_after: Option<u32>,
        /// Frames below threshold before it ends [default: 5].
        #[arg(long)]
        pub leave_after: Option<u32>,
        /// Identical consecutive frames that mean a frozen camera, 0 = off [default: 15].
        #[arg(long)]
        pub freeze_frames: Option<u32>,
        /// Seconds without a frame before the camera counts as lost [default: 2].
        #[arg(long)]
        pub stall_timeout: Option<f64>,
        /// Seconds between `stats` events [default: 5].
        #[arg(long)]
        pub stats_interval: Option<f64>,
        /// Least seconds between `anomaly_update` events of one episode [default: 1].
        #[arg(long)]
        pub update_interval: Option<f64>,
        /// Stop after this many processed frames.
        #[arg(long)]
        pub max_frames: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        pub duration: Option<f64>,
        /// Write events to this file (JSON Lines) instead of stdout.
        #[arg(long)]
        pub events: Option<PathBuf>,
        /// No live window (by default one opens when a display exists).
        // A bare flag on the command line (`--headless`), a boolean in a
        // file (`headless = true`): given or not, so that a file's `true`
        // is kept when the flag is absent.
        #[arg(long, num_args = 0, default_missing_value = "true")]
        pub headless: Option<bool>,
        /// Save each anomalous frame reported by `anomaly_start` / `anomaly_update`
        /// as a PNG with the anomaly heatmap in this folder (off by default).
        #[arg(long, value_name = "DIR")]
        pub snapshots: Option<PathBuf>,
        /// Disk budget of --snapshots in MB: the oldest snapshots are deleted
        /// to stay within it [default: 100].
        #[arg(long, value_name = "N")]
        pub snapshot_budget_mb: Option<f64>,
        /// Cores for inference: the convolutions of each frame are shared by
        /// this many threads [default: 1].
        // 64 bits, so that a huge value gets the range error below on
        // 32-bit boards too, not a type error.
        #[arg(long, value_name = "N")]
        pub threads: Option<u64>,
        /// Let the deciding score's threshold (each tile's, with tiles) follow
        /// the slow drift of the last N frames judged normal, refreshed every
        /// N/10 of them and logged as `threshold_refresh` events; 0 = off
        /// [default: 0].
        #[arg(long, value_name = "N")]
        pub refresh: Option<u64>,
        /// Publish events, state and Home Assistant discovery to this MQTT
        /// broker: mqtt://[user[:password]@]host[:port] or mqtts://… (TLS).
        /// The password may instead come from --mqtt-password-file or
        /// BVAE_MQTT_PASSWORD (and the user from BVAE_MQTT_USER), so that
        /// `ps` does not show it.
        #[arg(long, value_name = "URL")]
        pub mqtt: Option<String>,
        /// File whose first line is the MQTT password.
        #[arg(long, value_name = "FILE")]
        pub mqtt_password_file: Option<PathBuf>,
        /// PEM file of the CA that signed an mqtts:// broker's certificate
        /// [default: the system's CAs].
        #[arg(long, value_name = "FILE")]
        pub mqtt_ca: Option<PathBuf>,
        /// Name of this camera in topics, the client id and Home Assistant
        /// (letters, digits, - and _) [default: the host name].
        #[arg(long)]
        pub name: Option<String>,
        /// MQTT topic prefix [default: bvae/<name>].
        #[arg(long, value_name = "TOPIC")]
        pub mqtt_prefix: Option<String>,
        /// Home Assistant discovery prefix, or `off` [default: homeassistant].
        #[arg(long, value_name = "PREFIX")]
        pub ha_discovery: Option<String>,
        /// Folder where events wait on disk while the broker is away
        /// [default: $STATE_DIRECTORY/mqtt-<name>, else
        /// $XDG_STATE_HOME/bvae/mqtt-<name>, else ~/.local/state/bvae/mqtt-<name>].
        #[arg(long, value_name = "DIR")]
        pub mqtt_spool: Option<PathBuf>,
        /// Disk cap of the MQTT spool in MB; past it the oldest events are
        /// dropped and counted (`mqtt_dropped`); 0 = no spool, events wait
        /// in memory only [default: 64].
        #[arg(long, value_name = "MB")]
        pub mqtt_spool_mb: Option<f64>,
        /// Serve the web view (live picture, MJPEG, JSON API, Prometheus
        /// metrics) on PORT (127.0.0.1) or ADDRESS:PORT (e.g. 0.0.0.0:8080
        /// for the whole network); off by default.
        #[arg(long, value_name = "ADDR:PORT")]
        pub http: Option<String>,
        /// File whose first line is the token the web view asks for (else
        /// BVAE_HTTP_TOKEN; no token by default).
        #[arg(long, value_name = "FILE")]
        pub http_token_file: Option<PathBuf>,
    }
}

/// Where a value of [`LiveOptions`] was given, which decides how an error
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// On the command line: `--stall-timeout`.
    Flags,
    /// In a `--config` file: `` `stall_timeout` ``.
    File,
}

impl Origin {
    /// The option `key` (a field of [`LiveOptions`]) as this origin spells it.
    fn name(self, key: &str) -> String {
        match self {
            Origin::Flags => format!("--{}", key.replace('_', "-")),
            Origin::File => format!("`{key}`"),
        }
    }
}

/// Where the loop's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTo {
    /// JSON Lines on stdout (the default).
    Stdout,
    /// JSON Lines appended to this file (created if missing).
    File(PathBuf),
}

/// The live loop's settings, resolved from [`LiveOptions`] over a
/// calibration profile: nothing left to check or default.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// The loop itself: score, threshold, hysteresis, watchdog, periods, limits.
    pub live: LiveConfig,
    /// Where events go.
    pub events: EventsTo,
    /// Run without the live window.
    pub headless: bool,
    /// Snapshots of anomalous frames, if asked for.
    pub snapshots: Option<SnapshotConfig>,
    /// Inference threads (1 to [`MAX_THREADS`]).
    pub threads: usize,
    /// `--mqtt`: the client's settings (secrets not read yet).
    pub mqtt: Option<MqttConfig>,
    /// `--http`: the address to serve the web view on (checked when it
    /// starts) and the token file.
    pub http: Option<(String, Option<PathBuf>)>,
}

/// `v` seconds as a duration, if it is finite, ≥ 0 and at most
/// [`MAX_SECONDS`]; `what` names the option in the error.
fn secs(what: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)) {
        let found = if v.abs() >= 1e6 {
            format!("{v:e}")
        } else {
            v.to_string()
        };
        bail!("{what} must be a number of seconds from 0 to {MAX_SECONDS:e}, found {found}");
    }
    Ok(Duration::from_secs_f64(v))
}

impl LiveOptions {
    /// Checks every value that is given, naming it as `origin` spells it:
    /// seconds finite, ≥ 0 and at most [`MAX_SECONDS`], threads 1 to
    /// [`MAX_THREADS`], a snapshot budget > 0, a refresh window of 0 or
    /// [`MIN_WINDOW`] to [`MAX_WINDOW`] frames.
    pub fn check(&self, origin: Origin) -> Result<()> {
        for (key, v) in [
            ("stall_timeout", self.stall_timeout),
            ("stats_interval", self.stats_interval),
            ("update_interval", self.update_interval),
            ("duration", self.duration),
        ] {
            if let Some(v) = v {
                secs(&origin.name(key), v)?;
            }
        }
        if let Some(n) = self.threads {
            match origin {
                Origin::Flags => {
                    super::threads_flag(n)?;
                }
                Origin::File if !(1..=MAX_THREADS as u64).contains(&n) => {
                    bail!("`threads` is {n}: expected 1 to {MAX_THREADS}")
                }
                Origin::File => {}
            }
        }
        if let Some(n) = self.refresh
            && n != 0
            && !(MIN_WINDOW as u64..=MAX_WINDOW as u64).contains(&n)
        {
            bail!(
                "{} is {n} frames: expected 0 (off) or {MIN_WINDOW} to {MAX_WINDOW}",
                origin.name("refresh")
            );
        }
        if let Some(mb) = self.snapshot_budget_mb
            && !(mb.is_finite() && mb > 0.0)
        {
            bail!(
                "{} must be a number of MB > 0, found {mb}",
                origin.name("snapshot_budget_mb")
            );
        }
        Ok(())
    }

    /// Resolves these options (flags already merged over a file, whose
    /// values were checked as it was read) over `profile`'s defaults.
    /// Values are checked as flags ([`LiveOptions::check`]). Nothing is
    /// opened or set: the run step applies the settings.
    pub fn resolve(&self, profile: &Profile) -> Result<LiveSettings> {
        self.check(Origin::Flags)?;
        let name = |key| Origin::Flags.name(key);
        let mut c = LiveConfig::for_profile(profile);
        if let Some(m) = self.method {
            c.method = m;
            c.threshold = profile
                .decision_threshold(m)
                .with_context(|| format!("the profile has no threshold for {m}"))?;
        }
        if let Some(v) = self.enter_after {
            c.enter_after = v.max(1);
        }
        if let Some(v) = self.leave_after {
            c.leave_after = v.max(1);
        }
        if let Some(v) = self.freeze_frames {
            c.freeze_frames = v;
        }
        if let Some(v) = self.stall_timeout {
            c.stall_timeout = secs(&name("stall_timeout"), v)?;
        }
        if let Some(v) = self.stats_interval {
            c.stats_interval = secs(&name("stats_interval"), v)?;
        }
        if let Some(v) = self.update_interval {
            c.update_interval = secs(&name("update_interval"), v)?;
        }
        c.refresh = match self.refresh {
            None | Some(0) => None,
            Some(n) => Some(RefreshConfig::new(n as usize)?),
        };
        c.max_frames = self.max_frames;
        c.max_duration = self
            .duration
            .map(|d| secs(&name("duration"), d))
            .transpose()?;
        let snapshots = match (&self.snapshots, self.snapshot_budget_mb) {
            (None, None) => None,
            (None, Some(_)) => bail!("--snapshot-budget-mb needs --snapshots DIR"),
            (Some(dir), mb) => {
                let mut cfg = SnapshotConfig::new(dir);
                if let Some(mb) = mb {
                    cfg.budget_bytes = ((mb * 1e6) as u64).max(1);
                }
                Some(cfg)
            }
        };
        let mqtt = match &self.mqtt {
            Some(url) => Some(
                MqttConfig::resolve(&MqttRequest {
                    url,
                    name: self.name.as_deref(),
                    prefix: self.mqtt_prefix.as_deref(),
                    discovery: self.ha_discovery.as_deref(),
                    ca: self.mqtt_ca.clone(),
                    password_file: self.mqtt_password_file.clone(),
                    spool: self.mqtt_spool.clone(),
                    spool_mb: self.mqtt_spool_mb,
                })
                .context("--mqtt")?,
            ),
            None => {
                for (given, flag) in [
                    (self.mqtt_password_file.is_some(), "--mqtt-password-file"),
                    (self.mqtt_ca.is_some(), "--mqtt-ca"),
                    (self.mqtt_prefix.is_some(), "--mqtt-prefix"),
                    (self.ha_discovery.is_some(), "--ha-discovery"),
                    (self.mqtt_spool.is_some(), "--mqtt-spool"),
                    (self.mqtt_spool_mb.is_some(), "--mqtt-spool-mb"),
                ] {
                    if given {
                        bail!("{flag} needs --mqtt URL");
                    }
                }
                None
            }
        };
        let http = match (&self.http, &self.http_token_file) {
            (Some(a), f) => Some((a.clone(), f.clone())),
            (None, Some(_)) => bail!("--http-token-file needs --http ADDR:PORT"),
            (None, None) => None,
        };
        Ok(LiveSettings {
            http,
            mqtt,
            live: c,
            events: self.events.clone().map_or(EventsTo::Stdout, EventsTo::File),
            headless: self.headless.unwrap_or(false),
            snapshots,
            threads: self
                .threads
                .map(super::threads_flag)
                .transpose()?
                .unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_a_file_one_option_at_a_time() {
        let flags = LiveOptions {
            max_frames: Some(25),
            headless: None,
            ..LiveOptions::default()
        };
        let file = LiveOptions {
            max_frames: Some(40),
            stats_interval: Some(0.05),
            headless: Some(true),
            ..LiveOptions::default()
        };
        let o = flags.or(file);
        assert_eq!(o.max_frames, Some(25));
        assert_eq!(o.stats_interval, Some(0.05));
        assert_eq!(o.headless, Some(true));
        assert_eq!(o.threads, None);
    }

    #[test]
    fn errors_name_the_option_as_it_was_given() {
        let o = LiveOptions {
            stall_timeout: Some(1e300),
            ..LiveOptions::default()
        };
        let flag = o.check(Origin::Flags).unwrap_err().to_string();
        assert_eq!(
            flag,
            "--stall-timeout must be a number of seconds from 0 to 1e9, found 1e300"
        );
        let key = o.check(Origin::File).unwrap_err().to_string();
        assert!(key.starts_with("`stall_timeout` must be"), "{key}");
        for (n, flag, key) in [
            (
                0,
                "--threads must be at least 1",
                "`threads` is 0: expected 1 to 256",
            ),
            (
                100_000_000_000,
                "100000000000 inference threads: expected 1 to 256",
                "`threads` is 100000000000: expected 1 to 256",
            ),
        ] {
            let o = LiveOptions {
                threads: Some(n),
                ..LiveOptions::default()
            };
            let e = o.check(Origin::Flags).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
            assert_eq!(o.check(Origin::File).unwrap_err().to_string(), key);
        }
        for v in [-1.0, f64::NAN, f64::INFINITY, 1e9 + 1.0] {
            assert!(secs("x", v).is_err(), "{v}");
        }
        assert_eq!(secs("x", 1e9).unwrap(), Duration::from_secs(1_000_000_000));
        assert_eq!(secs("x", 0.0).unwrap(), Duration::ZERO);
    }
}
