//! `strata topic`: create, list, describe and delete topics through the admin client.
//!
//! Output goes to stdout; every failure is one line returned as `Err` (main prints it as
//! `error: <line>` and exits 1). These commands never auto-create a topic: the client is
//! configured with `allow.auto.create.topics=false` and the admin client never asks for it.

use clap::Subcommand;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

use strata_client::admin::{Admin, ConfigResource, NewTopic, ReplicaLog, TopicDescription};
use strata_client::ClientError;

use super::ConnectionArgs;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (default: the broker's `num.partitions`).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's `default.replication.factor`).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        replication_factor: Option<i16>,
        /// A topic configuration override, KEY=VALUE (e.g. retention.ms=86400000); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// List topics, one name per line, sorted.
    List {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show a topic: id, overridden configs, and per partition its leader, replicas, ISR and
    /// earliest and latest offsets.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

pub async fn run(command: TopicCommand) -> Result<(), String> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            connection,
        } => {
            let mut topic = NewTopic::new(name.clone())
                .with_partitions(partitions.unwrap_or(-1))
                .with_replication_factor(replication_factor.unwrap_or(-1));
            for kv in &configs {
                let (k, v) = parse_config(kv)?;
                topic = topic.with_config(k, v);
            }
            let admin = connect(&connection).await?;
            admin
                .create_topic(topic)
                .await
                .map_err(|e| explain(e, &name, &connection))?;
            println!("created topic '{name}'");
            Ok(())
        }
        TopicCommand::List { connection } => {
            let admin = connect(&connection).await?;
            let names = admin
                .list_topics()
                .await
                .map_err(|e| explain(e, "", &connection))?;
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
        TopicCommand::Describe { name, connection } => {
            let admin = connect(&connection).await?;
            let description = admin
                .describe_topic(&name)
                .await
                .map_err(|e| explain(e, &name, &connection))?;
            let configs = admin
                .describe_configs(ConfigResource::Topic(name.clone()))
                .await
                .map_err(|e| explain(e, &name, &connection))?;
            let overrides: Vec<(String, String)> = configs
                .into_iter()
                .filter(|c| c.source.is_topic_override())
                .map(|c| (c.name, c.value.unwrap_or_else(|| "(hidden)".to_string())))
                .collect();
            print!("{}", render_description(&description, &overrides));
            // Each replica's lag, asked of the broker that hosts it.
            let partitions: Vec<i32> = description.partitions.iter().map(|p| p.partition).collect();
            let mut brokers: Vec<i32> = description
                .partitions
                .iter()
                .flat_map(|p| p.replicas.iter().copied())
                .collect();
            brokers.sort_unstable();
            brokers.dedup();
            let logs = admin
                .replica_logs(&name, &partitions, &brokers)
                .await
                .map_err(|e| explain(e, &name, &connection))?;
            print!("{}", render_replicas(&description, &logs));
            Ok(())
        }
        TopicCommand::Delete { name, connection } => {
            let admin = connect(&connection).await?;
            admin
                .delete_topic(&name)
                .await
                .map_err(|e| explain(e, &name, &connection))?;
            println!("deleted topic '{name}'");
            Ok(())
        }
    }
}

/// `KEY=VALUE`, both sides trimmed, the key non-empty.
fn parse_config(kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("invalid config '{kv}': expected KEY=VALUE")),
    }
}

async fn connect(args: &ConnectionArgs) -> Result<Admin, String> {
    super::connect_admin(args, explain).await
}

/// One line for a client error, naming the topic where the error is about it.
fn explain(e: ClientError, topic: &str, args: &ConnectionArgs) -> String {
    let line = match e {
        ClientError::NoBrokerReachable { timeout_ms, .. } => {
            super::no_broker_line(args, timeout_ms)
        }
        ClientError::Kafka {
            error: ResponseError::UnknownTopicOrPartition,
            ..
        } if !topic.is_empty() => format!("topic '{topic}' does not exist"),
        ClientError::Kafka {
            error: ResponseError::TopicAlreadyExists,
            ..
        } if !topic.is_empty() => format!("topic '{topic}' already exists"),
        ClientError::Kafka {
            error: ResponseError::InvalidConfig,
            context,
            ..
        } => {
            // The context is "create topic 'NAME': <the broker's message>".
            let detail = context
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(context);
            format!("invalid config for topic '{topic}': {detail}")
        }
        ClientError::Kafka { error, context, .. } => format!("{context} ({error:?})"),
        other => other.to_string(),
    };
    // One line, whatever the broker sent.
    line.lines().collect::<Vec<_>>().join(" ")
}

fn render_description(d: &TopicDescription, overrides: &[(String, String)]) -> String {
    let mut out = String::new();
    out.push_str(&format!("Topic: {}\n", d.name));
    out.push_str(&format!("Topic id: {}\n", d.id.as_deref().unwrap_or("-")));
    out.push_str(&format!("Partitions: {}\n", d.partitions.len()));
    if overrides.is_empty() {
        out.push_str("Configs: (no overrides)\n");
    } else {
        let kvs: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Configs: {}\n", kvs.join(", ")));
    }
    out.push('\n');
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let offset = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    let mut rows = vec![[
        "PARTITION".to_string(),
        "LEADER".to_string(),
        "REPLICAS".to_string(),
        "ISR".to_string(),
        "EARLIEST".to_string(),
        "LATEST".to_string(),
    ]];
    for p in &d.partitions {
        rows.push([
            p.partition.to_string(),
            if p.leader < 0 {
                "none".to_string()
            } else {
                p.leader.to_string()
            },
            ids(&p.replicas),
            ids(&p.isr),
            offset(p.earliest_offset),
            offset(p.latest_offset),
        ]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    out.push_str(&super::table(&rows));
    for p in &d.partitions {
        if let Some(e) = &p.offsets_error {
            out.push_str(&format!(
                "partition {}: offsets unavailable: {e}\n",
                p.partition
            ));
        }
    }
    out
}

/// Per partition, each replica with its role, whether it is in the ISR (Metadata's), its lag
/// behind the high watermark and its log size (DescribeLogDirs from its broker; `-` where the
/// broker did not answer, with a line saying why).
fn render_replicas(
    d: &TopicDescription,
    logs: &BTreeMap<i32, Result<Vec<ReplicaLog>, String>>,
) -> String {
    let mut rows = vec![vec![
        "PARTITION".to_string(),
        "REPLICA".to_string(),
        "STATE".to_string(),
        "LAG".to_string(),
        "SIZE".to_string(),
    ]];
    for p in &d.partitions {
        for &r in &p.replicas {
            let log = logs
                .get(&r)
                .and_then(|l| l.as_ref().ok())
                .and_then(|l| l.iter().find(|l| l.partition == p.partition));
            let replica = if r == p.leader {
                format!("{r} (leader)")
            } else {
                r.to_string()
            };
            let state = if p.isr.contains(&r) {
                "in-sync"
            } else {
                "out of sync"
            };
            rows.push(vec![
                p.partition.to_string(),
                replica,
                state.to_string(),
                log.map_or_else(|| "-".to_string(), |l| l.offset_lag.to_string()),
                log.map_or_else(|| "-".to_string(), |l| l.size_bytes.to_string()),
            ]);
        }
    }
    let mut out = String::from("\n");
    out.push_str(&super::table(&rows));
    for (broker, outcome) in logs {
        if let Err(e) = outcome {
            out.push_str(&format!("broker {broker}: replica logs unavailable: {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::admin::PartitionDescription;

    fn args() -> ConnectionArgs {
        ConnectionArgs {
            bootstrap: "127.0.0.1:1".to_string(),
            timeout_ms: 2000,
        }
    }

    #[test]
    fn configs_must_be_key_equals_value() {
        assert_eq!(
            parse_config("retention.ms=1000").unwrap(),
            ("retention.ms".to_string(), "1000".to_string())
        );
        assert_eq!(parse_config("k=a=b").unwrap().1, "a=b");
        for bad in ["foo", "=1", ""] {
            let e = parse_config(bad).unwrap_err();
            assert!(e.starts_with(&format!("invalid config '{bad}'")), "{e}");
        }
    }

    #[test]
    fn errors_are_one_line_and_name_the_topic() {
        let unreachable = ClientError::NoBrokerReachable {
            tried: "127.0.0.1:1".into(),
            timeout_ms: 2000,
        };
        assert_eq!(
            explain(unreachable, "", &args()),
            "no broker reachable at 127.0.0.1:1 within 2000 ms"
        );
        let kafka =
            |code: i16, context: &str| ClientError::from_code(code, context.to_string()).unwrap();
        assert_eq!(
            explain(kafka(3, "topic 'x'"), "x", &args()),
            "topic 'x' does not exist"
        );
        assert_eq!(
            explain(
                kafka(36, "create topic 'x': topic 'x' already exists"),
                "x",
                &args()
            ),
            "topic 'x' already exists"
        );
        assert_eq!(
            explain(
                kafka(40, "create topic 'x': config 'foo': unknown topic config"),
                "x",
                &args()
            ),
            "invalid config for topic 'x': config 'foo': unknown topic config"
        );
        let multi = explain(kafka(37, "grow topic 'x'\nsecond line"), "x", &args());
        assert!(!multi.contains('\n'), "{multi}");
    }

    #[test]
    fn the_description_is_a_table() {
        let d = TopicDescription {
            name: "t".into(),
            id: Some("abc".into()),
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    earliest_offset: Some(0),
                    latest_offset: Some(12345),
                    offsets_error: None,
                },
                PartitionDescription {
                    partition: 1,
                    leader: -1,
                    replicas: vec![1, 2],
                    isr: vec![],
                    earliest_offset: None,
                    latest_offset: None,
                    offsets_error: Some("no leader".into()),
                },
            ],
        };
        let text = render_description(&d, &[("retention.ms".into(), "1000".into())]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Topic: t");
        assert_eq!(lines[1], "Topic id: abc");
        assert_eq!(lines[3], "Configs: retention.ms=1000");
        assert_eq!(
            lines[5],
            "PARTITION  LEADER  REPLICAS  ISR  EARLIEST  LATEST"
        );
        assert_eq!(
            lines[6],
            "0          1       1         1    0         12345"
        );
        assert_eq!(lines[7], "1          none    1,2            -         -");
        assert_eq!(lines[8], "partition 1: offsets unavailable: no leader");
    }

    #[test]
    fn each_replica_is_shown_with_its_role_isr_state_and_lag() {
        let d = TopicDescription {
            name: "t".into(),
            id: None,
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: 1,
                replicas: vec![1, 3, 4],
                isr: vec![1, 3],
                earliest_offset: Some(0),
                latest_offset: Some(10),
                offsets_error: None,
            }],
        };
        let log = |lag, size| {
            Ok(vec![ReplicaLog {
                partition: 0,
                size_bytes: size,
                offset_lag: lag,
            }])
        };
        let logs = BTreeMap::from([
            (1, log(0, 500)),
            (3, log(0, 500)),
            (4, Err("connection refused".to_string())),
        ]);
        let text = render_replicas(&d, &logs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(lines[1], "PARTITION  REPLICA     STATE        LAG  SIZE");
        assert_eq!(lines[2], "0          1 (leader)  in-sync      0    500");
        assert_eq!(lines[3], "0          3           in-sync      0    500");
        assert_eq!(lines[4], "0          4           out of sync  -    -");
        assert_eq!(
            lines[5],
            "broker 4: replica logs unavailable: connection refused"
        );
    }
}
