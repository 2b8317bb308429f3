//! Home Assistant MQTT discovery: the retained config messages that make a
//! board appear in Home Assistant with no YAML.
//!
//! One device per camera (`bvae_<name>`) with five entities:
//!
//! | component | entity | reads |
//! | --- | --- | --- |
//! | `binary_sensor` | anomaly (device class `problem`) | `<prefix>/anomaly`, `ON` / `OFF` |
//! | `sensor` | score ratio | `<prefix>/stats`, `ratio` |
//! | `sensor` | frames per second | `<prefix>/stats`, `processed_fps` |
//! | `sensor` | most deviant latent | `<prefix>/stats`, `top_latent_name` (else `top_latent`) |
//! | `image` | last anomaly snapshot | `<prefix>/snapshot`, JPEG |
//!
//! Home Assistant's birth message (`<discovery prefix>/status` =
//! `online`, [`birth_topic`]) makes the client publish them again.
//!
//! Every entity is available while `<prefix>/available` says `online`
//! (the client's last will says `offline`). Topics follow Home
//! Assistant's `<discovery prefix>/<component>/<node id>/<object id>/config`
//! (<https://www.home-assistant.io/integrations/mqtt/#discovery-messages>).

use serde_json::{Value, json};

use super::config::MqttConfig;

/// One discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Its topic.
    pub topic: String,
    /// Its payload (JSON).
    pub payload: Value,
}

/// The topic of Home Assistant's birth message, when discovery is on.
pub fn birth_topic(cfg: &MqttConfig) -> Option<String> {
    cfg.discovery.as_deref().map(|d| format!("{d}/status"))
}

/// The discovery messages of a camera.
pub fn messages(cfg: &MqttConfig) -> Vec<Discovery> {
    let Some(dprefix) = cfg.discovery.as_deref() else {
        return vec![];
    };
    let node = format!("bvae_{}", cfg.name);
    let device = json!({
        "identifiers": [node],
        "name": format!("bvae {}", cfg.name),
        "manufacturer": "bvae",
        "model": "beta-VAE anomaly detector",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({
        "name": "bvae",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let stats = cfg.topic("stats");
    let entity = |component: &str, key: &str, name: &str, extra: Value| {
        let mut p = json!({
            "name": name,
            "unique_id": format!("{node}_{key}"),
            "default_entity_id": format!("{component}.{node}_{key}"),
            "availability_topic": cfg.topic("available"),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": origin,
        });
        if let (Value::Object(p), Value::Object(extra)) = (&mut p, extra) {
            p.extend(extra);
        }
        Discovery {
            topic: format!("{dprefix}/{component}/{node}/{key}/config"),
            payload: p,
        }
    };
    vec![
        entity(
            "binary_sensor",
            "anomaly",
            "Anomaly",
            json!({
                "state_topic": cfg.topic("anomaly"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "problem",
            }),
        ),
        entity(
            "sensor",
            "score_ratio",
            "Score ratio",
            json!({
                "state_topic": stats,
                "value_template": "{{ value_json.ratio }}",
                "state_class": "measurement",
                "icon": "mdi:chart-bell-curve",
            }),
        ),
        entity(
            "sensor",
            "fps",
            "Frames per second",
            json!({
                "state_topic": stats,
                "value_template": "{{ value_json.processed_fps }}",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "entity_category": "diagnostic",
                "icon": "mdi:speedometer",
            }),
        ),
        entity(
            "sensor",
            "top_latent",
            "Most deviant latent",
            json!({
                "state_topic": stats,
                "value_template": "{{ value_json.top_latent_name if value_json.top_latent_name is defined else value_json.top_latent }}",
                "icon": "mdi:axis-arrow",
            }),
        ),
        entity(
            "image",
            "snapshot",
            "Last anomaly",
            json!({
                "image_topic": cfg.topic("snapshot"),
                "content_type": "image/jpeg",
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::mqtt::config::BrokerUrl;

    /// The keys Home Assistant's discovery schemas accept, from Home
    /// Assistant Core 2026.11.0: `homeassistant/components/mqtt/config.py`
    /// (`MQTT_BASE_SCHEMA`, `MQTT_RO_SCHEMA`), `schemas.py` (availability,
    /// `MQTT_ENTITY_COMMON_SCHEMA`, the device and origin schemas) and the
    /// platforms' `binary_sensor.py`, `sensor.py` and `image.py`.
    const COMMON: &[&str] = &[
        "qos",
        "encoding",
        "group",
        "availability_topic",
        "availability_template",
        "payload_available",
        "payload_not_available",
        "availability_mode",
        "availability",
        "device",
        "entity_picture",
        "origin",
        "enabled_by_default",
        "entity_category",
        "icon",
        "json_attributes_topic",
        "json_attributes_template",
        "default_entity_id",
        "message_expiry_interval",
        "unique_id",
        "visible_by_default",
    ];
    const BINARY_SENSOR: &[&str] = &[
        "state_topic",
        "value_template",
        "device_class",
        "expire_after",
        "force_update",
        "name",
        "off_delay",
        "payload_off",
        "payload_on",
    ];
    const SENSOR: &[&str] = &[
        "state_topic",
        "value_template",
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "name",
        "options",
        "suggested_display_precision",
        "state_class",
        "unit_of_measurement",
    ];
    const IMAGE: &[&str] = &[
        "content_type",
        "name",
        "url_topic",
        "image_topic",
        "image_encoding",
        "url_template",
    ];
    /// Unknown keys here make Home Assistant refuse the whole message.
    const DEVICE: &[&str] = &[
        "identifiers",
        "connections",
        "manufacturer",
        "model",
        "model_id",
        "name",
        "hw_version",
        "serial_number",
        "sw_version",
        "via_device",
        "suggested_area",
        "configuration_url",
    ];
    const ORIGIN: &[&str] = &["name", "sw_version", "support_url"];
    /// `BinarySensorDeviceClass` (excerpt: the one used) and
    /// `SensorStateClass`.
    const STATE_CLASSES: &[&str] = &[
        "measurement",
        "measurement_angle",
        "total",
        "total_increasing",
    ];

    fn cfg(discovery: Option<&str>) -> MqttConfig {
        MqttConfig {
            broker: BrokerUrl::parse("mqtt://localhost").unwrap(),
            user: None,
            password: None,
            password_file: None,
            ca: None,
            name: "front-door".into(),
            client_id: "bvae-front-door".into(),
            prefix: "bvae/front-door".into(),
            discovery: discovery.map(str::to_string),
            spool: None,
            spool_bytes: 1 << 20,
            keep_alive_s: 15,
        }
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn is_topic_id(s: &str) -> bool {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn discovery_messages_follow_home_assistants_schemas() {
        let c = cfg(Some("homeassistant"));
        let msgs = messages(&c);
        let mut components = vec![];
        let mut ids = BTreeSet::new();
        for d in &msgs {
            // <prefix>/<component>/<node_id>/<object_id>/config, ids in
            // [a-zA-Z0-9_-] (discovery.py's TOPIC_MATCHER)
            let parts: Vec<&str> = d.topic.split('/').collect();
            assert_eq!(parts.len(), 5, "{}", d.topic);
            assert_eq!((parts[0], parts[4]), ("homeassistant", "config"));
            assert!(
                is_topic_id(parts[2]) && is_topic_id(parts[3]),
                "{}",
                d.topic
            );
            let component = parts[1];
            components.push(component);
            let own = match component {
                "binary_sensor" => BINARY_SENSOR,
                "sensor" => SENSOR,
                "image" => IMAGE,
                other => panic!("unexpected component {other}"),
            };
            let p = &d.payload;
            for k in keys(p) {
                assert!(
                    COMMON.contains(&k.as_str()) || own.contains(&k.as_str()),
                    "{component}: {k} is not a key Home Assistant knows"
                );
            }
            // required: state_topic (binary_sensor, sensor); exactly one of
            // image_topic / url_topic (image)
            match component {
                "image" => {
                    assert!(p.get("image_topic").is_some() != p.get("url_topic").is_some());
                    assert!(p.get("url_topic").is_none() || p.get("content_type").is_none());
                }
                _ => assert!(p["state_topic"].is_string(), "{component}"),
            }
            // the device is registered only with a unique id; at least one
            // identifier; no unknown device or origin key
            let uid = p["unique_id"].as_str().unwrap();
            assert!(ids.insert(uid.to_string()), "unique_id {uid} twice");
            for k in keys(&p["device"]) {
                assert!(DEVICE.contains(&k.as_str()), "device key {k}");
            }
            assert!(!p["device"]["identifiers"].as_array().unwrap().is_empty());
            for k in keys(&p["origin"]) {
                assert!(ORIGIN.contains(&k.as_str()), "origin key {k}");
            }
            assert!(p["origin"]["name"].is_string());
            // availability: one style only, on our topic
            assert!(p.get("availability").is_none());
            assert_eq!(p["availability_topic"], "bvae/front-door/available");
            assert_eq!(p["payload_available"], "online");
            assert_eq!(p["payload_not_available"], "offline");
            // values
            let domain_id = p["default_entity_id"].as_str().unwrap();
            assert!(
                domain_id.starts_with(&format!("{component}.")),
                "{domain_id}"
            );
            if let Some(sc) = p.get("state_class") {
                assert!(STATE_CLASSES.contains(&sc.as_str().unwrap()));
            }
            if let Some(ec) = p.get("entity_category") {
                // binary sensors and sensors refuse `config`
                assert_eq!(ec, "diagnostic");
            }
            if let Some(icon) = p.get("icon") {
                assert!(icon.as_str().unwrap().contains(':'));
            }
            for t in ["state_topic", "image_topic", "availability_topic"] {
                if let Some(t) = p.get(t).and_then(Value::as_str) {
                    assert!(t.starts_with("bvae/front-door/") && !t.contains(['+', '#']));
                }
            }
        }
        components.sort();
        assert_eq!(
            components,
            ["binary_sensor", "image", "sensor", "sensor", "sensor"]
        );
        let anomaly = &msgs[0].payload;
        assert_eq!(anomaly["device_class"], "problem");
        assert_eq!(
            (&anomaly["payload_on"], &anomaly["payload_off"]),
            (&json!("ON"), &json!("OFF"))
        );
        assert_eq!(birth_topic(&c).as_deref(), Some("homeassistant/status"));
    }

    #[test]
    fn no_discovery_prefix_means_no_messages() {
        assert!(messages(&cfg(None)).is_empty());
        assert!(birth_topic(&cfg(None)).is_none());
    }
}
