//! `strata group`: list, describe, reset the offsets of, and delete consumer groups, in the words
//! of Kafka's `kafka-consumer-groups`.
//!
//! Output goes to stdout; every failure is one line returned as `Err` (main prints it as
//! `error: <line>` and exits 1). `reset-offsets` only prints its plan unless `--execute`, and
//! refuses (as Kafka does) while the group has active members: their next commit would undo it.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use kafka_protocol::ResponseError;
use strata_client::admin::Admin;
use strata_client::consumer::{Consumer, ConsumerConfig, SeekTo};
use strata_client::group::admin::GroupDescription;
use strata_client::ClientError;

use super::ConnectionArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups, one per line (with `--state`: GROUP and STATE columns).
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, CompletingRebalance,
        /// Dead); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show a group: its state and members, and per partition the committed offset, the log end
    /// offset, the lag and the member that reads it.
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Set a group's committed offsets for a topic. Prints the plan; applies it with --execute.
    /// The group must have no active members.
    ResetOffsets(ResetArgs),
    /// Delete a group with no active members, and its committed offsets.
    Delete {
        /// Group id.
        group: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// The topic whose offsets are reset (every partition).
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub target: ResetTarget,
    /// Apply the plan (default: only print it, a dry run).
    #[arg(long, conflicts_with = "dry_run")]
    pub execute: bool,
    /// Only print the plan (the default; for symmetry with kafka-consumer-groups).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// To the log start of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end of each partition.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped into each partition's log, as Kafka does).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time: YYYY-MM-DDTHH:MM:SS[.mmm][Z] (UTC), or
    /// milliseconds since the epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<i64>,
}

pub async fn run(command: GroupCommand) -> Result<(), String> {
    match command {
        GroupCommand::List { states, connection } => {
            let admin = connect(&connection).await?;
            let groups = admin
                .list_groups(&states)
                .await
                .map_err(|e| explain(e, "", &connection))?;
            if states.is_empty() {
                for g in groups {
                    println!("{}", g.group_id);
                }
            } else {
                let rows: Vec<Vec<String>> = groups
                    .into_iter()
                    .map(|g| vec![g.group_id, g.state.unwrap_or_default()])
                    .collect();
                print_table(&["GROUP", "STATE"], &rows);
            }
            Ok(())
        }
        GroupCommand::Describe { group, connection } => {
            let admin = connect(&connection).await?;
            describe(&admin, &group, &connection).await
        }
        GroupCommand::ResetOffsets(args) => reset_offsets(args).await,
        GroupCommand::Delete { group, connection } => {
            let admin = connect(&connection).await?;
            admin
                .delete_group(&group)
                .await
                .map_err(|e| explain(e, &group, &connection))?;
            println!("deleted group '{group}'");
            Ok(())
        }
    }
}

async fn connect(args: &ConnectionArgs) -> Result<Admin, String> {
    super::connect_admin(args, explain).await
}

/// One line for a client error, naming the group where the error is about it.
fn explain(e: ClientError, group: &str, args: &ConnectionArgs) -> String {
    match e {
        ClientError::NoBrokerReachable { timeout_ms, .. } => {
            super::no_broker_line(args, timeout_ms)
        }
        ClientError::Kafka {
            error: ResponseError::GroupIdNotFound,
            ..
        } if !group.is_empty() => format!("group '{group}' does not exist"),
        ClientError::Kafka {
            error: ResponseError::NonEmptyGroup,
            ..
        } if !group.is_empty() => format!("group '{group}' has active members"),
        ClientError::Unsupported { api } => {
            format!("the broker does not support {api} (is its group coordinator enabled?)")
        }
        other => other.to_string(),
    }
}

/// The group's description, or "does not exist" for a Dead group without offsets.
async fn load_group(
    admin: &Admin,
    group: &str,
    connection: &ConnectionArgs,
) -> Result<(GroupDescription, BTreeMap<(String, i32), i64>), String> {
    let description = admin
        .describe_group(group)
        .await
        .map_err(|e| explain(e, group, connection))?;
    let offsets = admin
        .list_group_offsets(group)
        .await
        .map_err(|e| explain(e, group, connection))?;
    if description.state == "Dead" && description.members.is_empty() && offsets.is_empty() {
        return Err(format!("group '{group}' does not exist"));
    }
    Ok((description, offsets))
}

async fn describe(admin: &Admin, group: &str, connection: &ConnectionArgs) -> Result<(), String> {
    let (d, offsets) = load_group(admin, group, connection).await?;
    println!(
        "group: {}  state: {}  assignor: {}  members: {}",
        d.group_id,
        d.state,
        if d.protocol.is_empty() {
            "-"
        } else {
            &d.protocol
        },
        d.members.len()
    );
    // Every partition the group has an offset for or a member reads.
    let mut owner: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (i, m) in d.members.iter().enumerate() {
        for tp in &m.assignment {
            owner.insert(tp.clone(), i);
        }
    }
    let partitions: BTreeSet<(String, i32)> = offsets.keys().chain(owner.keys()).cloned().collect();
    let topics: BTreeSet<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let mut log_end: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in topics {
        // A topic deleted since the commit has no log end; its rows show "-".
        if let Ok(t) = admin.describe_topic(topic).await {
            for p in t.partitions {
                if let Some(end) = p.latest_offset {
                    log_end.insert((topic.to_string(), p.partition), end);
                }
            }
        }
    }
    let dash = || "-".to_string();
    let mut rows = Vec::new();
    for tp in &partitions {
        let current = offsets.get(tp).copied();
        let end = log_end.get(tp).copied();
        let lag = match (current, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => dash(),
        };
        let member = owner.get(tp).map(|i| &d.members[*i]);
        rows.push(vec![
            tp.0.clone(),
            tp.1.to_string(),
            current.map_or_else(dash, |c| c.to_string()),
            end.map_or_else(dash, |e| e.to_string()),
            lag,
            member.map_or_else(dash, |m| m.member_id.clone()),
            member.map_or_else(dash, |m| m.client_host.clone()),
            member.map_or_else(dash, |m| m.client_id.clone()),
        ]);
    }
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    );
    // Members with nothing assigned still show up, as kafka-consumer-groups --members does.
    for m in d.members.iter().filter(|m| m.assignment.is_empty()) {
        println!(
            "member {} ({}, {}) has no partitions",
            m.member_id, m.client_host, m.client_id
        );
    }
    Ok(())
}

async fn reset_offsets(args: ResetArgs) -> Result<(), String> {
    let admin = connect(&args.connection).await?;
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    let description = admin
        .describe_group(group)
        .await
        .map_err(|e| explain(e, group, &args.connection))?;
    if !description.members.is_empty() {
        return Err(format!(
            "offsets of group '{group}' can only be reset while it is inactive, but it has {} \
             active member(s) (state {})",
            description.members.len(),
            description.state
        ));
    }
    let info = super::existing_topic(admin.cluster(), topic).await?;
    let partitions: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    let described = admin
        .describe_topic(topic)
        .await
        .map_err(|e| e.to_string())?;
    let bounds: BTreeMap<i32, (i64, i64)> = described
        .partitions
        .iter()
        .filter_map(|p| Some((p.partition, (p.earliest_offset?, p.latest_offset?))))
        .collect();
    let mut plan: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut by_time = None;
    for p in &partitions {
        let (earliest, latest) = *bounds
            .get(p)
            .ok_or_else(|| format!("cannot read the offsets of {topic}/{p}"))?;
        let target = if args.target.to_earliest {
            earliest
        } else if args.target.to_latest {
            latest
        } else if let Some(n) = args.target.to_offset {
            n.clamp(earliest, latest)
        } else if let Some(ts) = args.target.to_datetime {
            let consumer = match by_time.as_mut() {
                Some(c) => c,
                None => {
                    let mut c = Consumer::new(
                        std::sync::Arc::clone(admin.cluster()),
                        ConsumerConfig::default(),
                    );
                    let all: Vec<(String, i32)> =
                        partitions.iter().map(|q| (topic.to_string(), *q)).collect();
                    c.assign(&all);
                    by_time.insert(c)
                }
            };
            consumer
                .seek(topic, *p, SeekTo::Timestamp(ts))
                .await
                .map_err(|e| format!("cannot find the offset of {topic}/{p} at {ts}: {e}"))?
        } else {
            return Err(
                "give one of --to-earliest, --to-latest, --to-offset, --to-datetime".into(),
            );
        };
        plan.insert((topic.to_string(), *p), target);
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((t, p), o)| vec![group.to_string(), t.clone(), p.to_string(), o.to_string()])
        .collect();
    print_table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
    if args.execute {
        admin
            .alter_group_offsets(group, &plan)
            .await
            .map_err(|e| explain(e, group, &args.connection))?;
    }
    Ok(())
}

/// A header and its rows as left-aligned columns (see [`super::table`]).
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut all = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows.iter().cloned());
    print!("{}", super::table(&all));
}

/// `--to-datetime`: milliseconds since the epoch, or YYYY-MM-DDTHH:MM:SS[.mmm][Z] in UTC.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("'{s}' is not YYYY-MM-DDTHH:MM:SS[.mmm] (UTC) or epoch milliseconds");
    let text = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => {
            if frac.is_empty() || frac.len() > 3 || !frac.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let ms: i64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
            (hms, ms)
        }
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute, second) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..61).contains(&second)
        || !(0..=9999).contains(&year)
    {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_utc_milliseconds() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5Z"), Ok(1_500));
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(parse_datetime("1700000000000"), Ok(1_700_000_000_000));
        for bad in [
            "2024-13-01T00:00:00",
            "yesterday",
            "2024-01-01",
            "2024-01-01T00:00:00.1234",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
