//! The quorum as controllers use it: real TCP on 127.0.0.1, one temp dir per node, several nodes
//! in one process. Every wait is bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Applied batches with their indexes, in order.
type Batches = Vec<(u64, Vec<u8>)>;

/// A test state machine: the ordered list of applied batches, shared with the test.
#[derive(Clone, Default)]
struct Applied {
    batches: Arc<Mutex<Batches>>,
    installs: Arc<AtomicUsize>,
}

impl Applied {
    fn list(&self) -> Batches {
        self.batches.lock().unwrap().clone()
    }
}

impl MetadataStateMachine for Applied {
    fn apply(&mut self, index: u64, batch: &[u8]) -> Result<super::Applied, Fatal> {
        if batch.starts_with(b"bad") {
            return Ok(Err(Rejected(format!("batch at {index} starts with 'bad'"))));
        }
        self.batches.lock().unwrap().push((index, batch.to_vec()));
        Ok(Ok(()))
    }

    fn fresh(&self) -> Box<dyn MetadataStateMachine> {
        // Shares the lists with the test: the test reads whatever state the node holds.
        Box::new(self.clone())
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.list()).unwrap()
    }

    fn install(&mut self, _index: u64, snapshot: &[u8]) -> Result<(), String> {
        let list = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        *self.batches.lock().unwrap() = list;
        self.installs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// One node of a test cluster: its settings, data dir and state machine, running or not.
struct TestNode {
    settings: QuorumSettings,
    dir: PathBuf,
    applied: Applied,
    quorum: Option<Quorum>,
}

impl TestNode {
    async fn start(&mut self) {
        self.applied = Applied::default();
        let quorum = Quorum::start(self.settings.clone(), &self.dir, self.applied.clone())
            .await
            .unwrap();
        self.quorum = Some(quorum);
    }

    async fn stop(&mut self) {
        if let Some(q) = self.quorum.take() {
            q.shutdown().await;
        }
    }

    fn q(&self) -> &Quorum {
        self.quorum.as_ref().expect("node is running")
    }
}

struct Cluster {
    _dirs: tempfile::TempDir,
    nodes: Vec<TestNode>,
}

impl Cluster {
    /// `voters` voters, started, with `tune` applied to every node's settings.
    async fn start(voters: usize, tune: impl Fn(&mut QuorumSettings)) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let addrs = free_addrs(voters);
        let voter_list: Vec<Voter> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| Voter {
                id: i as u64 + 1,
                addr,
            })
            .collect();
        let mut nodes = Vec::new();
        for v in &voter_list {
            let mut settings = QuorumSettings::new(v.id, voter_list.clone(), v.addr);
            tune(&mut settings);
            nodes.push(TestNode {
                settings,
                dir: dirs.path().join(format!("node-{}", v.id)),
                applied: Applied::default(),
                quorum: None,
            });
        }
        for node in &mut nodes {
            node.start().await;
        }
        Cluster { _dirs: dirs, nodes }
    }

    fn node(&self, id: u64) -> &TestNode {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: u64) -> &mut TestNode {
        &mut self.nodes[id as usize - 1]
    }

    fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes.iter().filter(|n| n.quorum.is_some())
    }

    /// The leader every running node agrees on.
    async fn agreed_leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut leaders = Vec::new();
            for n in self.running() {
                leaders.push(n.q().wait_for_leader(WAIT).await.unwrap());
            }
            let leader = leaders[0];
            if leaders.iter().all(|&l| l == leader)
                && self.running().any(|n| n.settings.node_id == leader)
            {
                return leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            let q = self.running().next().unwrap().q().clone();
            // Wait for the next change of any node's view rather than polling.
            let mut metrics = q.shared.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
    }

    /// Proposes on `node` until it succeeds (a new leader may not be known yet), within `WAIT`.
    async fn propose_retrying(&self, node: u64, batch: &[u8]) -> u64 {
        let q = self.node(node).q().clone();
        let deadline = Instant::now() + WAIT;
        loop {
            match q.propose(batch.to_vec()).await {
                Ok(index) => return index,
                Err(e) => assert!(Instant::now() < deadline, "proposal still fails: {e}"),
            }
            let mut metrics = q.shared.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
        }
    }

    /// Every running node applied `index` and holds the same batches.
    async fn assert_same_state(&self, index: u64) -> Batches {
        let mut states = Vec::new();
        for n in self.running() {
            n.q().wait_applied(index, WAIT).await.unwrap();
            states.push(n.applied.list());
        }
        for s in &states[1..] {
            assert_eq!(s, &states[0]);
        }
        states.swap_remove(0)
    }

    async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
    }
}

fn batches_of(state: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    state.iter().map(|(_, b)| b.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_proposes_restarts_and_has_the_same_state() {
    // Snapshots every 4 entries: the restart reads a snapshot plus the log after it.
    let mut cluster = Cluster::start(1, |s| s.snapshot_interval_entries = 4).await;
    assert_eq!(cluster.agreed_leader().await, 1);
    let mut last = 0;
    for i in 0..10u8 {
        last = cluster.node(1).q().propose(vec![i; 3]).await.unwrap();
    }
    let before = cluster.assert_same_state(last).await;
    assert_eq!(
        batches_of(&before),
        (0..10u8).map(|i| vec![i; 3]).collect::<Vec<_>>()
    );

    cluster.node_mut(1).stop().await;
    cluster.node_mut(1).start().await;
    cluster.agreed_leader().await;
    let after = cluster.assert_same_state(last).await;
    assert_eq!(after, before);
    assert!(cluster.node(1).applied.installs.load(Ordering::Relaxed) > 0);
    // And it goes on from there.
    let next = cluster.node(1).q().propose(b"more".to_vec()).await.unwrap();
    assert!(next > last);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_forward_fail_over_and_refuse_without_a_majority() {
    let mut cluster = Cluster::start(3, |s| s.request_timeout_ms = 3000).await;
    let leader = cluster.agreed_leader().await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();

    // A follower forwards to the leader; every node applies the same batch at the same index.
    let index = cluster
        .node(follower)
        .q()
        .propose(b"one".to_vec())
        .await
        .unwrap();
    let state = cluster.assert_same_state(index).await;
    assert_eq!(batches_of(&state), vec![b"one".to_vec()]);

    // The leader stops: the other two elect a new one and take proposals again.
    let stopped_at = Instant::now();
    cluster.node_mut(leader).stop().await;
    let index = cluster.propose_retrying(follower, b"two").await;
    let failover = stopped_at.elapsed();
    assert!(
        failover < Duration::from_secs(5),
        "fail-over took {failover:?}"
    );
    let new_leader = cluster.agreed_leader().await;
    assert_ne!(new_leader, leader);
    cluster.assert_same_state(index).await;

    // Two of three stopped: a proposal fails within its bound, on either side of the old pair.
    let other = (1..=3).find(|&n| n != leader && n != new_leader).unwrap();
    cluster.node_mut(new_leader).stop().await;
    let started = Instant::now();
    let refused = cluster.node(other).q().propose(b"lonely".to_vec()).await;
    assert!(refused.is_err(), "a lone voter committed: {refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // One comes back: a majority again, proposals commit, and all three agree afterwards.
    cluster.node_mut(leader).start().await;
    let index = cluster.propose_retrying(other, b"three").await;
    cluster.node_mut(new_leader).start().await;
    let state = cluster.assert_same_state(index).await;
    let batches = batches_of(&state);
    assert_eq!(&batches[..2], &[b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(batches.last().unwrap(), b"three");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_the_log_was_purged_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3, |s| s.snapshot_interval_entries = 10).await;
    let leader = cluster.agreed_leader().await;
    let mut last = 0;
    for i in 0..40u32 {
        last = cluster
            .node(leader)
            .q()
            .propose(i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    cluster.assert_same_state(last).await;
    // Bounded wait for the leader to snapshot and purge past the first entries.
    let mut metrics = cluster.node(leader).q().shared.raft.metrics();
    tokio::time::timeout(WAIT, async {
        while metrics.borrow().purged.is_none_or(|p| p.index < 10) {
            metrics.changed().await.unwrap();
        }
    })
    .await
    .expect("the leader purged its log");

    let addr = free_addrs(1)[0];
    let voters = cluster.node(1).settings.voters.clone();
    let mut learner = TestNode {
        settings: QuorumSettings::new(4, voters, addr),
        dir: cluster._dirs.path().join("node-4"),
        applied: Applied::default(),
        quorum: None,
    };
    learner.start().await;
    cluster.node(leader).q().add_learner(4, addr).await.unwrap();
    learner.q().wait_applied(last, WAIT).await.unwrap();
    assert!(learner.applied.installs.load(Ordering::Relaxed) > 0);
    assert_eq!(learner.applied.list(), cluster.node(leader).applied.list());
    // It keeps following after the snapshot.
    let next = cluster
        .node(leader)
        .q()
        .propose(b"after".to_vec())
        .await
        .unwrap();
    learner.q().wait_applied(next, WAIT).await.unwrap();
    assert_eq!(learner.applied.list(), cluster.node(leader).applied.list());
    learner.stop().await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_state_machine_refuses_changes_nothing_and_the_quorum_goes_on() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader().await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    cluster
        .node(leader)
        .q()
        .propose(b"one".to_vec())
        .await
        .unwrap();

    // Refused on the leader and when forwarded; both are committed entries every voter skips.
    let refused = cluster.node(leader).q().propose(b"bad 1".to_vec()).await;
    assert!(
        matches!(&refused, Err(QuorumError::Rejected { reason, .. }) if reason.contains("bad")),
        "{refused:?}"
    );
    let refused = cluster.node(follower).q().propose(b"bad 2".to_vec()).await;
    assert!(
        matches!(refused, Err(QuorumError::Rejected { .. })),
        "{refused:?}"
    );

    // The quorum goes on, and every voter holds the same state without the refused batches.
    let index = cluster
        .node(follower)
        .q()
        .propose(b"two".to_vec())
        .await
        .unwrap();
    let state = cluster.assert_same_state(index).await;
    assert_eq!(batches_of(&state), vec![b"one".to_vec(), b"two".to_vec()]);

    // A restart replays the refused entries from the log and skips them again.
    cluster.node_mut(follower).stop().await;
    cluster.node_mut(follower).start().await;
    let index = cluster.propose_retrying(follower, b"three").await;
    let state = cluster.assert_same_state(index).await;
    assert_eq!(batches_of(&state).len(), 3);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_on_entries_that_do_not_fit_one_frame() {
    const FRAME: usize = 64 * 1024;
    let mut cluster = Cluster::start(3, |s| {
        s.request_bytes_max = FRAME;
        s.snapshot_interval_entries = 10_000;
    })
    .await;
    let leader = cluster.agreed_leader().await;
    let lagging = (1..=3).find(|&n| n != leader).unwrap();
    cluster.node_mut(lagging).stop().await;
    // Two dozen entries of 16 KiB: six frames' worth for the follower that comes back.
    let mut last = 0;
    for i in 0..24u8 {
        last = cluster
            .node(leader)
            .q()
            .propose(vec![i; 16 * 1024])
            .await
            .unwrap();
    }
    cluster.node_mut(lagging).start().await;
    cluster
        .node(lagging)
        .q()
        .wait_applied(last, WAIT)
        .await
        .unwrap();
    let state = cluster.assert_same_state(last).await;
    assert_eq!(state.len(), 24);

    // A batch that cannot fit a frame is refused at once, not left to wedge replication.
    let started = Instant::now();
    let refused = cluster.node(leader).q().propose(vec![7; FRAME]).await;
    assert!(
        matches!(refused, Err(QuorumError::TooLarge { .. })),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_to_the_controller_listener_are_closed() {
    let mut cluster = Cluster::start(1, |s| s.rpc_timeout_ms = 500).await;
    cluster.agreed_leader().await;
    let addr = cluster.node(1).settings.listen;
    // One says nothing at all, one stops in the middle of a frame.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_by_peer(&mut stalled).await,
        "a stalled frame stays open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_by_peer(&mut idle).await,
        "an idle connection stays open"
    );
    // The node still serves.
    cluster.node(1).q().propose(b"ok".to_vec()).await.unwrap();
    cluster.stop_all().await;
}

async fn closed_by_peer(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_controller_listener_closes_only_that_connection() {
    let mut cluster = Cluster::start(1, |_| {}).await;
    cluster.agreed_leader().await;
    let addr = cluster.node(1).settings.listen;
    let max = cluster.node(1).settings.request_bytes_max;

    // A frame that does not decode, and a length over the limit.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .await
        .unwrap();
    assert!(closed_by_peer(&mut garbage).await);
    let mut huge = tokio::net::TcpStream::connect(addr).await.unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(closed_by_peer(&mut huge).await);

    // A connection opened before stays usable, and so does the node.
    let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
    wire::write_frame(&mut good, &wire::Request::Propose(b"ok".to_vec()), max)
        .await
        .unwrap();
    let answer = wire::read_frame::<wire::Response>(&mut good, max)
        .await
        .unwrap();
    let Some(wire::Response::Propose(Ok(index))) = answer else {
        panic!("unexpected answer {answer:?}");
    };
    let next = cluster
        .node(1)
        .q()
        .propose(b"still".to_vec())
        .await
        .unwrap();
    assert!(next > index);
    cluster.stop_all().await;
}

/// Measures fail-over and commit latency; run by hand:
/// `cargo nextest run -p strata-broker quorum_timings --run-ignored only --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn quorum_timings() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let mut failovers = Vec::new();
    for round in 0..10 {
        let leader = cluster.agreed_leader().await;
        let survivor = (1..=3).find(|&n| n != leader).unwrap();
        cluster.propose_retrying(survivor, b"warm").await;
        let stopped_at = Instant::now();
        cluster.node_mut(leader).stop().await;
        cluster
            .propose_retrying(survivor, format!("after {round}").as_bytes())
            .await;
        failovers.push(stopped_at.elapsed());
        cluster.node_mut(leader).start().await;
    }
    let leader = cluster.agreed_leader().await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let mut on_leader = Vec::new();
    let mut forwarded = Vec::new();
    for i in 0..200u32 {
        let t = Instant::now();
        cluster
            .node(leader)
            .q()
            .propose(i.to_be_bytes().to_vec())
            .await
            .unwrap();
        on_leader.push(t.elapsed());
        let t = Instant::now();
        cluster
            .node(follower)
            .q()
            .propose(i.to_be_bytes().to_vec())
            .await
            .unwrap();
        forwarded.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100], v[v.len() - 1])
    };
    println!("fail-over (leader stopped -> proposal committed), 10 rounds: {failovers:?}");
    println!("  median/p99/max {:?}", median(&mut failovers));
    println!(
        "commit on leader, 200 sequential: median/p99/max {:?}",
        median(&mut on_leader)
    );
    println!(
        "commit forwarded from follower: median/p99/max {:?}",
        median(&mut forwarded)
    );
    cluster.stop_all().await;
}
