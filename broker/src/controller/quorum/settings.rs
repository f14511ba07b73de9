//! The quorum's settings, read once from the broker config and validated.
//!
//! Invariants: voter ids are unique; a node whose roles include `controller` is a voter; the
//! heartbeat is at most an eighth of the election timeout (a follower must hear several before it
//! gives up).
//! An empty `controller.quorum.voters` means no quorum: today's single node with its metadata file.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::{BrokerConfig, ConfigError};

/// One voter of `controller.quorum.voters` (`id@host:port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voter {
    pub id: u64,
    pub addr: SocketAddr,
}

/// What a node does (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// Everything the quorum needs to start.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub node_id: u64,
    pub roles: Roles,
    pub voters: Vec<Voter>,
    /// Where this node's controller listener binds.
    pub listen: SocketAddr,
    /// A follower that hears no leader for about this long (randomised between half and three
    /// quarters of it; openraft adds three quarters more once it saw a longer log) starts an
    /// election.
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Bound on one RPC (connect, send, answer).
    pub rpc_timeout_ms: u64,
    /// Bound on a proposal, forwarded or not.
    pub request_timeout_ms: u64,
    /// Largest RPC frame read or written.
    pub request_bytes_max: usize,
    /// Entries applied since the last snapshot that trigger the next one (bounds the log).
    pub snapshot_interval_entries: u64,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Parses `process.roles`: a comma list of `broker` and `controller`.
pub fn parse_roles(text: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles::default();
    for role in text.split(',').map(str::trim) {
        let seen = match role {
            "broker" => std::mem::replace(&mut roles.broker, true),
            "controller" => std::mem::replace(&mut roles.controller, true),
            other => {
                return Err(bad(
                    "process.roles",
                    format!("'{other}' is not a role (broker, controller)"),
                ))
            }
        };
        if seen {
            return Err(bad("process.roles", format!("'{role}' is named twice")));
        }
    }
    Ok(roles)
}

/// Parses `controller.quorum.voters`: `id@host:port,...` (empty: no quorum).
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, ConfigError> {
    const KEY: &str = "controller.quorum.voters";
    let mut voters: Vec<Voter> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| bad(KEY, format!("'{item}' is not id@host:port")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(KEY, format!("'{id}' in '{item}' is not a node id")))?;
        let addr =
            resolve(addr.trim()).map_err(|reason| bad(KEY, format!("'{item}': {reason}")))?;
        if voters.iter().any(|v| v.id == id) {
            return Err(bad(KEY, format!("node id {id} is named twice")));
        }
        voters.push(Voter { id, addr });
    }
    Ok(voters)
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("'{addr}' is not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("'{addr}' resolves to no address"))
}

impl QuorumSettings {
    /// The quorum settings of `config`, `None` without `controller.quorum.voters`.
    pub fn from_config(config: &BrokerConfig) -> Result<Option<QuorumSettings>, ConfigError> {
        let roles = parse_roles(config.get("process.roles"))?;
        let voters = parse_voters(config.get("controller.quorum.voters"))?;
        if voters.is_empty() {
            return Ok(None);
        }
        let node_id =
            u64::try_from(config.i64("node.id")).map_err(|_| bad("node.id", "negative"))?;
        let me = voters.iter().find(|v| v.id == node_id);
        if roles.controller && me.is_none() {
            return Err(bad(
                "controller.quorum.voters",
                format!("node.id {node_id} has the controller role but is not a voter"),
            ));
        }
        let listen = match config.get("controller.listener").trim() {
            "" => me.map(|v| v.addr).ok_or_else(|| {
                bad(
                    "controller.listener",
                    format!(
                        "node {node_id} is not a voter, so it needs its own controller listener"
                    ),
                )
            })?,
            text => resolve(text).map_err(|r| bad("controller.listener", r))?,
        };
        let settings = QuorumSettings::with_limits_of(config, node_id, roles, voters, listen);
        settings.validate()?;
        Ok(Some(settings))
    }

    /// Settings for `node_id` among `voters` with the defaults of the config table (tests, tools).
    pub fn new(node_id: u64, voters: Vec<Voter>, listen: SocketAddr) -> QuorumSettings {
        let roles = Roles {
            broker: true,
            controller: voters.iter().any(|v| v.id == node_id),
        };
        QuorumSettings::with_limits_of(&BrokerConfig::default(), node_id, roles, voters, listen)
    }

    /// The timeouts and limits of `config` for this node.
    pub fn with_limits_of(
        config: &BrokerConfig,
        node_id: u64,
        roles: Roles,
        voters: Vec<Voter>,
        listen: SocketAddr,
    ) -> QuorumSettings {
        let ms = |key: &str| config.i64(key) as u64;
        QuorumSettings {
            node_id,
            roles,
            voters,
            listen,
            election_timeout_ms: ms("controller.quorum.election.timeout.ms"),
            heartbeat_interval_ms: ms("controller.quorum.heartbeat.interval.ms"),
            rpc_timeout_ms: ms("controller.quorum.rpc.timeout.ms"),
            request_timeout_ms: ms("controller.quorum.request.timeout.ms"),
            request_bytes_max: config.i64("controller.socket.request.max.bytes") as usize,
            snapshot_interval_entries: ms("metadata.log.snapshot.interval.records"),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // The shortest election timeout openraft sees is a quarter of the key: leave room for two
        // heartbeats in it.
        if self.heartbeat_interval_ms * 8 > self.election_timeout_ms {
            return Err(bad(
                "controller.quorum.heartbeat.interval.ms",
                format!(
                    "{} ms is more than an eighth of controller.quorum.election.timeout.ms ({} ms)",
                    self.heartbeat_interval_ms, self.election_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_roles_and_their_mistakes() {
        let voters = parse_voters("1@127.0.0.1:9093, 2@127.0.0.1:9094,3@127.0.0.1:9095").unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[1].id, 2);
        assert_eq!(voters[1].addr, "127.0.0.1:9094".parse().unwrap());
        assert!(parse_voters("").unwrap().is_empty());
        for bad in [
            "1@",
            "x@127.0.0.1:1",
            "127.0.0.1:1",
            "1@127.0.0.1:1,1@127.0.0.1:2",
            "1@h",
        ] {
            let e = parse_voters(bad).unwrap_err();
            assert_eq!(e.key, "controller.quorum.voters", "{bad}");
        }
        assert_eq!(
            parse_roles("broker,controller").unwrap(),
            Roles {
                broker: true,
                controller: true
            }
        );
        assert!(parse_roles("broker,broker").is_err());
        assert!(parse_roles("brokers").is_err());
        assert!(parse_roles("").is_err());
    }

    #[test]
    fn config_keys_make_settings_or_name_the_bad_key() {
        let mut config = BrokerConfig::default();
        assert!(QuorumSettings::from_config(&config).unwrap().is_none());
        config
            .set(
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9094",
            )
            .unwrap();
        config.set("node.id", "2").unwrap();
        let s = QuorumSettings::from_config(&config).unwrap().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9094".parse().unwrap());
        assert!(s.roles.controller && s.roles.broker);

        config.set("node.id", "7").unwrap();
        let e = QuorumSettings::from_config(&config).unwrap_err();
        assert_eq!(e.key, "controller.quorum.voters");
        config.set("process.roles", "broker").unwrap();
        let e = QuorumSettings::from_config(&config).unwrap_err();
        assert_eq!(e.key, "controller.listener");
        config.set("controller.listener", "127.0.0.1:9099").unwrap();
        let s = QuorumSettings::from_config(&config).unwrap().unwrap();
        assert!(!s.roles.controller);

        config
            .set("controller.quorum.heartbeat.interval.ms", "900")
            .unwrap();
        let e = QuorumSettings::from_config(&config).unwrap_err();
        assert_eq!(e.key, "controller.quorum.heartbeat.interval.ms");
    }
}
