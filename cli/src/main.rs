//! The `strata` binary: parses the flags, sets up logging, and hands over to the broker
//! (`strata_broker::serve`) or to a client subcommand (this crate's library). `strata serve` with
//! no flags is a working single-node broker on 127.0.0.1:9092 with its data in ./strata-data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata_broker::serve::ServeOptions;
use strata_cli as cli;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a Kafka-compatible, replicated log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no flags: node 1 on 127.0.0.1:9092, data in ./strata-data.
    Serve(ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// The cluster: brokers, controller quorum, metadata log offsets.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Produce records read from stdin, one per line.
    Produce(cli::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Measure produce or consume throughput and latency (like kafka-*-perf-test).
    #[command(subcommand)]
    Perf(cli::perf::PerfCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// This broker's node id (`node.id`).
    #[arg(long, value_name = "N")]
    node_id: Option<u32>,
    /// Address to accept Kafka clients on (`listeners`); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (`advertised.listeners`); defaults to the listener.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Directory for all data (`log.dirs`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A Kafka-style properties file of `key=value` lines.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sets one configuration key, overriding the file; repeat as needed.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// What this node is: `broker,controller`, `broker` or `controller` (`process.roles`).
    #[arg(long, value_name = "ROLES")]
    roles: Option<String>,
    /// The controller voters, `ID@HOST:PORT,...` (`controller.quorum.voters`); unset: a single
    /// node that is its own controller.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// Address of this node's controller listener (`controller.listener`); defaults to its
    /// entry in the voters.
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics (`metrics.listener`); off by default.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// This broker's rack (`broker.rack`): replicas of a partition go to different racks.
    #[arg(long, value_name = "NAME")]
    rack: Option<String>,
}

/// Colour only for a person at a terminal: logs written to a file or pipe stay plain text, and
/// `NO_COLOR` (set and not empty, per no-color.org) turns colour off everywhere.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .init();
    match cli.command {
        Command::Serve(args) => strata_broker::serve::serve(args.into()),
        Command::Topic(command) => cli::run_client(cli::topic::run(command)),
        Command::Cluster(command) => cli::run_client(cli::cluster::run(command)),
        Command::Produce(args) => cli::run_client(cli::produce::run(args)),
        Command::Consume(args) => cli::run_client(cli::consume::run(args)),
        Command::Perf(command) => cli::run_client(cli::perf::run(command)),
        Command::Group(command) => cli::run_client(cli::group::run(command)),
    }
}

impl From<ServeArgs> for ServeOptions {
    fn from(args: ServeArgs) -> Self {
        ServeOptions {
            node_id: args.node_id,
            listen: args.listen,
            advertise: args.advertise,
            data_dir: args.data_dir,
            config: args.config,
            set: args.set,
            roles: args.roles,
            voters: args.voters,
            controller_listen: args.controller_listen,
            rack: args.rack,
            metrics_listen: args.metrics_listen,
        }
    }
}
