//! [`Config::validate`]: unsafe or inconsistent settings refused with a
//! message that names the offending key.

use std::time::Duration;

use super::*;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 256 {
            return Err(invalid("workers", "must be between 1 and 256"));
        }
        if self.session_timeout < Duration::from_secs(1) {
            return Err(invalid("session_timeout_secs", "must be at least 1"));
        }
        if self.connect_timeout < Duration::from_secs(1) {
            return Err(invalid("connect_timeout_secs", "must be at least 1"));
        }
        if self.max_rooms == 0 {
            return Err(invalid("max_rooms", "must be at least 1"));
        }
        if self.max_participants_per_room == 0 {
            return Err(invalid("max_participants_per_room", "must be at least 1"));
        }
        if self.max_tracks_per_participant == 0 || self.max_tracks_per_participant > 32 {
            return Err(invalid(
                "max_tracks_per_participant",
                "must be between 1 and 32",
            ));
        }
        for url in &self.webhook_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "webhook_urls",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if let Some((rate, burst)) = self.http_rate_limit {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(invalid(
                    "http_rate_limit",
                    "must be a positive number (0 turns it off)",
                ));
            }
            if !(burst >= 1.0 && burst.is_finite()) {
                return Err(invalid("http_rate_burst", "must be at least 1"));
            }
        }
        if let Some(e) = &self.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    "otlp_endpoint",
                    format!("{e:?} is not an http(s) URL (e.g. http://collector:4318)"),
                ));
            }
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 253
            || self.node_id.chars().any(|c| c.is_control() || c == '"')
        {
            return Err(invalid(
                "node_id",
                "must be 1-253 printable characters without quotes",
            ));
        }
        if let Some(c) = &self.cluster {
            if !(c.redis_url.starts_with("redis://") || c.redis_url.starts_with("rediss://")) {
                return Err(invalid(
                    "redis_url",
                    "must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)",
                ));
            }
            let url = c.http_url.as_deref().unwrap_or("http://");
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "advertise_http_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            if c.http_url.is_none() && self.http_addr.ip().is_unspecified() {
                return Err(invalid(
                    "advertise_http_url",
                    "the HTTP address is a wildcard; set the URL other nodes reach this one at",
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.media_port != 0 && usize::from(self.media_port) + self.workers > 65536 {
            return Err(invalid("media_port", "media_port + workers exceeds 65535"));
        }
        if self.ice_tcp_port != 0 && usize::from(self.ice_tcp_port) + self.workers > 65536 {
            return Err(invalid(
                "ice_tcp_port",
                "ice_tcp_port + workers exceeds 65535",
            ));
        }
        for (k, s) in &self.api_keys {
            if k.is_empty() || s.is_empty() {
                return Err(invalid("api_keys", "keys and secrets must not be empty"));
            }
        }
        if self.media_addr.is_unspecified()
            && self.public_ip.is_none()
            && self.stun_server.is_none()
        {
            return Err(invalid(
                "public_ip",
                "media_addr is a wildcard address; set public_ip to the address clients reach \
                 (or stun_server to discover it)",
            ));
        }
        for (key, port) in [
            ("public_media_port", self.public_media_port),
            ("public_ice_tcp_port", self.public_ice_tcp_port),
        ] {
            match port {
                Some(0) => return Err(invalid(key, "must be a port between 1 and 65535")),
                Some(_) if self.workers != 1 => {
                    return Err(invalid(
                        key,
                        "one advertised port serves one media worker: set workers = 1 \
                         (and run more instances to use more cores)",
                    ))
                }
                _ => {}
            }
        }
        if let Some(server) = &self.stun_server {
            if server.rsplit_once(':').is_none_or(|(host, port)| {
                host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0)
            }) {
                return Err(invalid(
                    "stun_server",
                    format!("{server:?} is not host:port (e.g. stun.example.com:3478)"),
                ));
            }
        }
        if self.uses_dev_credentials() {
            let exposed = [
                ("http_addr", self.http_addr.ip()),
                ("media_addr", self.media_addr),
            ]
            .into_iter()
            .find(|(_, ip)| !ip.is_loopback());
            if let Some((key, ip)) = exposed {
                return Err(invalid(
                    key,
                    format!(
                        "{ip} is not a loopback address and the development credentials \
                         ({DEV_API_KEY}/{DEV_API_SECRET}) are enabled; configure real API keys \
                         (--api-key/--api-secret or [api_keys]) before exposing the server"
                    ),
                ));
            }
        }
        Ok(())
    }
}
