//! `strata cluster status`: the brokers (id, address, rack, alive or fenced, last heartbeat), the
//! controller voters and observers, which voter is active, and how far each node has the metadata
//! log (its offset, and its lag behind the active controller).

use clap::Subcommand;
use strata_client::admin::{QuorumDescription, RegisteredBroker};
use strata_client::ClientError;

use super::ConnectionArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the brokers, the controller quorum and how far each node has the metadata log.
    Status {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

pub async fn run(command: ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Status { connection } => {
            let admin = super::connect_admin(&connection, explain).await?;
            let cluster = admin
                .describe_cluster()
                .await
                .map_err(|e| explain(e, "", &connection))?;
            let brokers = admin
                .registered_brokers()
                .await
                .map_err(|e| explain(e, "", &connection))?;
            let quorum = admin
                .describe_quorum()
                .await
                .map_err(|e| explain(e, "", &connection))?;
            print!(
                "{}",
                render(cluster.cluster_id.as_deref(), &brokers, &quorum, now_ms())
            );
            Ok(())
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn explain(e: ClientError, _: &str, args: &ConnectionArgs) -> String {
    match e {
        ClientError::NoBrokerReachable { timeout_ms, .. } => {
            super::no_broker_line(args, timeout_ms)
        }
        other => other.to_string(),
    }
}

/// The report, as text (pure, for tests).
pub fn render(
    cluster_id: Option<&str>,
    brokers: &[RegisteredBroker],
    quorum: &QuorumDescription,
    now_ms: i64,
) -> String {
    use std::fmt::Write as _;
    let ago = |ms: i64| {
        if ms < 0 {
            "-".to_string()
        } else {
            format!("{:.1}s ago", (now_ms - ms).max(0) as f64 / 1000.0)
        }
    };
    let member = |id: i32| quorum.members.iter().find(|m| m.id == id);
    let mut out = String::new();
    let _ = writeln!(out, "cluster id: {}", cluster_id.unwrap_or("-"));
    let _ = writeln!(
        out,
        "active controller: {} (term {}, metadata offset {})",
        quorum.leader, quorum.term, quorum.high_watermark
    );
    let _ = writeln!(out, "\nbrokers:");
    let _ = writeln!(
        out,
        "  {:>4}  {:<22} {:<10} {:<7} last heartbeat",
        "id", "address", "rack", "state"
    );
    for b in brokers {
        let heard = member(b.id).map_or(-1, |m| m.last_heartbeat_ms);
        let _ = writeln!(
            out,
            "  {:>4}  {:<22} {:<10} {:<7} {}",
            b.id,
            format!("{}:{}", b.host, b.port),
            b.rack.as_deref().unwrap_or("-"),
            if b.fenced { "fenced" } else { "alive" },
            ago(heard)
        );
    }
    let _ = writeln!(out, "\ncontroller quorum:");
    let _ = writeln!(
        out,
        "  {:>4}  {:<9} {:>16} {:>6}",
        "id", "role", "metadata offset", "lag"
    );
    let leader_end = member(quorum.leader).map_or(-1, |m| m.log_end_offset);
    for m in &quorum.members {
        let role = match (m.voter, m.id == quorum.leader) {
            (true, true) => "active",
            (true, false) => "voter",
            (false, _) => "observer",
        };
        let (offset, lag) = if m.log_end_offset < 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                m.log_end_offset.to_string(),
                (leader_end - m.log_end_offset).max(0).to_string(),
            )
        };
        let _ = writeln!(out, "  {:>4}  {:<9} {:>16} {:>6}", m.id, role, offset, lag);
    }
    out
}

#[cfg(test)]
mod tests {
    use strata_client::admin::QuorumMember;

    use super::*;

    #[test]
    fn the_report_names_fenced_brokers_the_active_controller_and_each_nodes_lag() {
        let broker = |id: i32, fenced| RegisteredBroker {
            id,
            host: "127.0.0.1".into(),
            port: 9090 + id,
            rack: (id == 2).then(|| "r2".to_string()),
            fenced,
        };
        let member = |id, voter, end, heard| QuorumMember {
            id,
            voter,
            log_end_offset: end,
            last_heartbeat_ms: heard,
        };
        let quorum = QuorumDescription {
            leader: 2,
            term: 7,
            high_watermark: 40,
            members: vec![
                member(1, true, 38, 9_000),
                member(2, true, 40, 9_500),
                member(3, true, -1, -1),
                member(4, false, 35, 1_000),
            ],
        };
        let text = render(
            Some("abc"),
            &[broker(1, false), broker(2, false), broker(4, true)],
            &quorum,
            10_000,
        );
        assert!(
            text.contains("active controller: 2 (term 7, metadata offset 40)"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:9094"), "{text}");
        let line = |id: &str, section: &str| {
            text.split(section)
                .nth(1)
                .unwrap()
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id))
                .unwrap()
                .to_string()
        };
        assert!(line("4", "brokers:").contains("fenced"), "{text}");
        assert!(line("4", "brokers:").contains("9.0s ago"), "{text}");
        assert!(line("2", "brokers:").contains("r2"), "{text}");
        assert!(line("2", "quorum:").contains("active"), "{text}");
        assert!(
            line("1", "quorum:").trim_end().ends_with('2'),
            "lag 2: {text}"
        );
        assert!(line("3", "quorum:").contains('-'), "{text}");
        assert!(line("4", "quorum:").contains("observer"), "{text}");
    }
}
