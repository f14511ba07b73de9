//! Stories of a follower copying from a leader. The leader is a small scripted Kafka server on
//! 127.0.0.1 (OffsetForLeaderEpoch and Fetch over an in-memory list of batches); the follower's
//! log is an in-memory list of batches. Every wait is bounded by `WAIT`.

use super::*;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderTopicResult;
use kafka_protocol::messages::RequestHeader;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use strata_protocol::api::encode_response;
use strata_protocol::record_batch::{build_batch, patch_batch, BatchHeader};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The follower's log.

#[derive(Default)]
struct FakeLogInner {
    batches: Vec<Bytes>,
    /// Where the log starts when it holds no batch.
    start: i64,
    high_watermark: i64,
    truncations: Vec<i64>,
}

type Hook = Box<dyn FnOnce() + Send>;

struct FakeLog {
    inner: Mutex<FakeLogInner>,
    end: watch::Sender<i64>,
    /// Runs once, inside the next append (to act while the fetcher applies an answer).
    on_append: Mutex<Option<Hook>>,
    /// Appends refused from now on, as a disk error would.
    refuse_appends: AtomicUsize,
}

fn header(b: &Bytes) -> BatchHeader<'_> {
    BatchHeader::parse(b).expect("test batches are whole")
}

impl FakeLog {
    fn new(batches: Vec<Bytes>) -> Arc<FakeLog> {
        let log = FakeLog {
            inner: Mutex::new(FakeLogInner {
                batches,
                ..Default::default()
            }),
            end: watch::channel(0).0,
            on_append: Mutex::new(None),
            refuse_appends: AtomicUsize::new(0),
        };
        log.end.send_replace(log.log_end_offset().0);
        Arc::new(log)
    }
    fn lock(&self) -> MutexGuard<'_, FakeLogInner> {
        self.inner.lock().unwrap()
    }
    fn batches(&self) -> Vec<Bytes> {
        self.lock().batches.clone()
    }
    /// Waits until the log ends at or past `offset`.
    async fn reaches(&self, offset: i64) {
        let mut rx = self.end.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|end| *end >= offset))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "follower log did not reach {offset}; ends at {}",
                    *self.end.borrow()
                )
            })
            .unwrap();
    }
}

impl FollowerLog for FakeLog {
    fn log_end_offset(&self) -> Offset {
        let inner = self.lock();
        Offset(
            inner
                .batches
                .last()
                .map_or(inner.start, |b| header(b).last_offset() + 1),
        )
    }
    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        let inner = self.lock();
        inner
            .batches
            .last()
            .map(|b| LeaderEpoch(header(b).partition_leader_epoch()))
    }
    fn truncate_to(&self, offset: Offset) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        inner.batches.retain(|b| header(b).base_offset() < offset.0);
        if inner
            .batches
            .last()
            .is_some_and(|b| header(b).last_offset() >= offset.0)
        {
            return Err(BrokerError::InvalidRequest(
                "truncation inside a batch".into(),
            ));
        }
        inner.truncations.push(offset.0);
        drop(inner);
        self.end.send_replace(self.log_end_offset().0);
        Ok(())
    }
    fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        inner.batches.clear();
        inner.start = offset.0;
        drop(inner);
        self.end.send_replace(offset.0);
        Ok(())
    }
    fn append_as_follower(&self, records: &Bytes) -> Result<Offset, BrokerError> {
        if let Some(hook) = self.on_append.lock().unwrap().take() {
            hook();
        }
        let refuse = self.refuse_appends.load(Ordering::SeqCst);
        if refuse > 0 {
            self.refuse_appends.store(refuse - 1, Ordering::SeqCst);
            return Err(BrokerError::Storage(std::io::Error::other("disk full")));
        }
        let mut end = self.log_end_offset().0;
        let mut inner = self.lock();
        for (at, batch) in BatchIter::new(records) {
            if batch.base_offset() != end {
                return Err(BrokerError::InvalidRecord(format!(
                    "batch at {} where the log ends at {end}",
                    batch.base_offset()
                )));
            }
            end = batch.last_offset() + 1;
            inner
                .batches
                .push(records.slice(at..at + batch.total_bytes()));
        }
        drop(inner);
        self.end.send_replace(end);
        Ok(Offset(end))
    }
    fn wait_flushed(&self, _end: Offset) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }
    fn leader_progress(&self, high_watermark: Offset, _log_start: Offset) {
        self.lock().high_watermark = high_watermark.0;
    }
    /// From the batches, as a leader-epoch cache would say it.
    fn epoch_end_offset(&self, epoch: LeaderEpoch) -> Option<Offset> {
        let next = self
            .lock()
            .batches
            .iter()
            .find(|b| header(b).partition_leader_epoch() > epoch.0)
            .map(|b| Offset(header(b).base_offset()));
        Some(next.unwrap_or_else(|| self.log_end_offset()))
    }
}

/// A batch of `count` one-byte records at `base` in `epoch`.
fn batch(base: i64, epoch: i32, count: usize) -> Bytes {
    let values: Vec<[u8; 1]> = (0..count).map(|i| [i as u8]).collect();
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_slice())).collect();
    let mut b = build_batch(base, 1_700_000_000_000, &records).to_vec();
    patch_batch(&mut b, base, epoch);
    Bytes::from(b)
}

// ---------------------------------------------------------------------------------------------
// The leader.

#[derive(Default)]
struct LeaderPartition {
    batches: Vec<Bytes>,
    log_start: i64,
    epoch: i32,
    /// Partition error codes to answer the next fetches with, in order.
    fetch_errors: VecDeque<i16>,
    /// Fetch requests that named this partition.
    fetches: usize,
}

impl LeaderPartition {
    fn end(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.log_start, |b| header(b).last_offset() + 1)
    }
    /// Kafka's answer to OffsetForLeaderEpoch: the largest epoch at or below `epoch` and where
    /// it ends (the next epoch's start, or the log end); UNDEFINED when there is none.
    fn epoch_end(&self, epoch: i32) -> (i32, i64) {
        let Some(found) = self
            .batches
            .iter()
            .map(|b| header(b).partition_leader_epoch())
            .filter(|e| *e <= epoch)
            .max()
        else {
            return (-1, -1);
        };
        let end = self
            .batches
            .iter()
            .find(|b| header(b).partition_leader_epoch() > found)
            .map_or(self.end(), |b| header(b).base_offset());
        (found, end)
    }
}

#[derive(Default)]
struct LeaderState {
    parts: Mutex<HashMap<(String, i32), LeaderPartition>>,
    appended: Notify,
    connections: AtomicUsize,
    epoch_requests: AtomicUsize,
}

struct FakeLeader {
    addr: String,
    state: Arc<LeaderState>,
    /// Bumped to make the leader drop every open connection.
    kick: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for FakeLeader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLeader {
    async fn start() -> FakeLeader {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(LeaderState::default());
        let kick = watch::channel(0u64).0;
        let (st, kick_tx) = (Arc::clone(&state), kick.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let (st, mut kicked) = (Arc::clone(&st), kick_tx.subscribe());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, st) => {}
                        _ = kicked.changed() => {}
                    }
                });
            }
        });
        FakeLeader {
            addr,
            state,
            kick,
            task,
        }
    }

    fn with<T>(&self, topic: &str, p: i32, f: impl FnOnce(&mut LeaderPartition) -> T) -> T {
        let mut parts = self.state.parts.lock().unwrap();
        f(parts.entry((topic.to_string(), p)).or_default())
    }

    /// The leader appends a batch of `count` records in its current epoch.
    fn append(&self, topic: &str, p: i32, count: usize) {
        self.with(topic, p, |lp| {
            let b = batch(lp.end(), lp.epoch, count);
            lp.batches.push(b);
        });
        self.state.appended.notify_waiters();
    }

    fn batches(&self, topic: &str, p: i32) -> Vec<Bytes> {
        self.with(topic, p, |lp| lp.batches.clone())
    }

    fn fetches(&self, topic: &str, p: i32) -> usize {
        self.with(topic, p, |lp| lp.fetches)
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn drop_connections(&self) {
        self.kick.send_modify(|n| *n += 1);
    }
}

async fn serve(stream: TcpStream, st: Arc<LeaderState>) {
    let (r, mut w) = stream.into_split();
    let mut frames = FramedRead::new(r, FrameCodec::new(1 << 20));
    while let Some(Ok(mut frame)) = frames.next().await {
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let answer = if key == ApiKey::Fetch as i16 {
            let h =
                RequestHeader::decode(&mut frame, FetchRequest::header_version(version)).unwrap();
            let req = FetchRequest::decode(&mut frame, version).unwrap();
            let resp = answer_fetch(&st, &req).await;
            encode_response(h.correlation_id, version, &resp).unwrap()
        } else if key == ApiKey::OffsetForLeaderEpoch as i16 {
            let h = RequestHeader::decode(
                &mut frame,
                OffsetForLeaderEpochRequest::header_version(version),
            )
            .unwrap();
            let req = OffsetForLeaderEpochRequest::decode(&mut frame, version).unwrap();
            st.epoch_requests.fetch_add(1, Ordering::SeqCst);
            let resp = answer_epochs(&st, &req);
            encode_response(h.correlation_id, version, &resp).unwrap()
        } else {
            return;
        };
        if w.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn answer_epochs(
    st: &LeaderState,
    req: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut parts = st.parts.lock().unwrap();
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in &req.topics {
        let mut rt = OffsetForLeaderTopicResult::default();
        rt.topic = t.topic.clone();
        for p in &t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            match parts.get_mut(&(t.topic.to_string(), p.partition)) {
                None => e.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(lp) if p.current_leader_epoch < lp.epoch => {
                    e.error_code = ResponseError::FencedLeaderEpoch.code()
                }
                Some(lp) => (e.leader_epoch, e.end_offset) = lp.epoch_end(p.leader_epoch),
            }
            rt.partitions.push(e);
        }
        resp.topics.push(rt);
    }
    resp
}

/// Answers a fetch, waiting up to its max_wait_ms for records if there are none (long poll).
async fn answer_fetch(st: &LeaderState, req: &FetchRequest) -> FetchResponse {
    let appended = st.appended.notified();
    tokio::pin!(appended);
    appended.as_mut().enable();
    let (resp, bytes) = fetch_once(st, req, true);
    // As Kafka: records or an error are answered at once.
    let errors = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != 0);
    if bytes > 0 || errors {
        return resp;
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let _ = tokio::time::timeout(wait, appended).await;
    fetch_once(st, req, false).0
}

fn fetch_once(st: &LeaderState, req: &FetchRequest, count: bool) -> (FetchResponse, usize) {
    let mut parts = st.parts.lock().unwrap();
    let mut resp = FetchResponse::default();
    let mut bytes = 0;
    for t in &req.topics {
        let mut rt = FetchableTopicResponse::default();
        rt.topic = t.topic.clone();
        for p in &t.partitions {
            let mut d = PartitionData::default();
            d.partition_index = p.partition;
            let Some(lp) = parts.get_mut(&(t.topic.to_string(), p.partition)) else {
                d.error_code = ResponseError::UnknownTopicOrPartition.code();
                rt.partitions.push(d);
                continue;
            };
            if count {
                lp.fetches += 1;
            }
            d.high_watermark = lp.end();
            d.log_start_offset = lp.log_start;
            if let Some(code) = lp.fetch_errors.pop_front() {
                d.error_code = code;
            } else if p.current_leader_epoch < lp.epoch {
                d.error_code = ResponseError::FencedLeaderEpoch.code();
            } else if p.fetch_offset < lp.log_start || p.fetch_offset > lp.end() {
                d.error_code = ResponseError::OffsetOutOfRange.code();
            } else {
                let mut out = Vec::new();
                // Whole batches up to the partition's byte limit; always the first.
                for b in &lp.batches {
                    let over =
                        !out.is_empty() && out.len() + b.len() > p.partition_max_bytes as usize;
                    if header(b).last_offset() >= p.fetch_offset && !over {
                        out.extend_from_slice(b);
                    }
                }
                bytes += out.len();
                d.records = Some(Bytes::from(out));
            }
            rt.partitions.push(d);
        }
        resp.responses.push(rt);
    }
    (resp, bytes)
}

// ---------------------------------------------------------------------------------------------
// Stories.

fn followed(topic: &str, p: i32, epoch: i32) -> FollowedPartition {
    FollowedPartition {
        topic: topic.to_string(),
        topic_id: Uuid::from_u128(7),
        partition: PartitionId(p),
        leader_epoch: LeaderEpoch(epoch),
    }
}

/// `manager` follows `key` from the fake `leader` into `log`.
fn follow(
    manager: &FetcherManager,
    leader: &FakeLeader,
    key: FollowedPartition,
    log: &Arc<FakeLog>,
) {
    manager.add_partition(LEADER, leader.addr.clone(), key, log.clone());
}

fn settings() -> FetcherSettings {
    FetcherSettings {
        wait_max: Duration::from_millis(500),
        backoff: Duration::from_millis(50),
        socket_timeout: Duration::from_secs(5),
        ..FetcherSettings::default()
    }
}

const LEADER: BrokerId = BrokerId(1);
const ME: BrokerId = BrokerId(2);

async fn shut(manager: FetcherManager) {
    tokio::time::timeout(WAIT, manager.shutdown())
        .await
        .expect("shutdown returns");
}

#[tokio::test]
async fn a_follower_copies_three_batches_then_long_polls_for_the_fourth() {
    let leader = FakeLeader::start().await;
    for _ in 0..3 {
        leader.append("orders", 0, 2);
    }
    let log = FakeLog::new(vec![]);
    // A long poll of 5 s: the fourth batch arriving well before that was answered on append.
    let manager = FetcherManager::new(
        ME,
        FetcherSettings {
            wait_max: Duration::from_secs(5),
            ..settings()
        },
    );
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(6).await;
    assert_eq!(log.batches(), leader.batches("orders", 0));
    assert_eq!(log.lock().high_watermark, 6);

    // Idle: the follower waits at the leader instead of asking again and again.
    let before = leader.fetches("orders", 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        leader.fetches("orders", 0) <= before + 1,
        "a long poll, not a busy loop"
    );

    let appended_at = Instant::now();
    leader.append("orders", 0, 1);
    log.reaches(7).await;
    assert!(
        appended_at.elapsed() < Duration::from_secs(2),
        "the long poll answers at once"
    );
    assert_eq!(log.batches(), leader.batches("orders", 0));
    assert!(manager.bytes_in() > 0);
    assert_eq!(
        leader.state.epoch_requests.load(Ordering::SeqCst),
        0,
        "an empty log has nothing to truncate"
    );
    shut(manager).await;
}

#[tokio::test]
async fn a_divergent_tail_is_truncated_to_the_leaders_epoch_end_before_fetching() {
    let leader = FakeLeader::start().await;
    // The leader: epoch 0 holds [0, 3), then epoch 2 took over at 3.
    leader.with("orders", 0, |lp| lp.epoch = 0);
    leader.append("orders", 0, 3);
    leader.with("orders", 0, |lp| lp.epoch = 2);
    leader.append("orders", 0, 2);
    leader.append("orders", 0, 2);
    // The follower: the same epoch 0, then two batches of an epoch 1 the leader never had.
    let log = FakeLog::new(vec![
        leader.batches("orders", 0)[0].clone(),
        batch(3, 1, 1),
        batch(4, 1, 3),
    ]);
    assert_eq!(log.log_end_offset(), Offset(7));

    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 2), &log);
    log.reaches(7).await;
    // reaching 7 may be the old end: wait for the copy to be the leader's.
    let deadline = Instant::now() + WAIT;
    while log.batches() != leader.batches("orders", 0) {
        assert!(
            Instant::now() < deadline,
            "follower never matched its leader"
        );
        let mut rx = log.end.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
    assert_eq!(
        log.lock().truncations.first(),
        Some(&3),
        "cut where epoch 0 ends at the leader"
    );
    shut(manager).await;
}

#[tokio::test]
async fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let leader = FakeLeader::start().await;
    leader.with("orders", 0, |lp| lp.log_start = 100);
    leader.append("orders", 0, 2);
    let log = FakeLog::new(vec![batch(0, 0, 5)]);
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(102).await;
    assert_eq!(log.batches(), leader.batches("orders", 0));
    assert_eq!(log.lock().start, 100);
    shut(manager).await;
}

#[tokio::test]
async fn a_fenced_partition_is_parked_while_the_others_keep_fetching() {
    let leader = FakeLeader::start().await;
    leader.with("orders", 0, |lp| lp.epoch = 5);
    leader.append("orders", 0, 1);
    leader.append("orders", 1, 1);
    let fenced = FakeLog::new(vec![]);
    let fine = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    // Added with epoch 4: the leader is at 5 and fences it.
    follow(&manager, &leader, followed("orders", 0, 4), &fenced);
    follow(&manager, &leader, followed("orders", 1, 0), &fine);
    fine.reaches(1).await;
    let fenced_fetches = leader.fetches("orders", 0);
    for n in 2..5 {
        leader.append("orders", 1, 1);
        fine.reaches(n).await;
    }
    assert_eq!(
        leader.fetches("orders", 0),
        fenced_fetches,
        "a parked partition is not fetched"
    );
    assert_eq!(fenced.log_end_offset(), Offset(0));

    // The lead re-adds it with the new epoch: it fetches again.
    follow(&manager, &leader, followed("orders", 0, 5), &fenced);
    fenced.reaches(1).await;
    shut(manager).await;
}

#[tokio::test]
async fn after_the_leader_drops_the_connection_the_follower_reconnects_without_duplicates() {
    let leader = FakeLeader::start().await;
    for _ in 0..3 {
        leader.append("orders", 0, 1);
    }
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(3).await;
    leader.drop_connections();
    leader.append("orders", 0, 1);
    log.reaches(4).await;
    leader.drop_connections();
    leader.append("orders", 0, 1);
    log.reaches(5).await;
    assert_eq!(
        log.batches(),
        leader.batches("orders", 0),
        "no batch twice, none missing"
    );
    assert!(
        leader.connections() >= 2,
        "reconnected: {}",
        leader.connections()
    );
    shut(manager).await;
}

#[tokio::test]
async fn two_partitions_from_one_leader_share_one_connection() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    leader.append("payments", 3, 2);
    let (a, b) = (FakeLog::new(vec![]), FakeLog::new(vec![]));
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &a);
    follow(&manager, &leader, followed("payments", 3, 0), &b);
    a.reaches(1).await;
    b.reaches(2).await;
    leader.append("payments", 3, 1);
    b.reaches(3).await;
    assert_eq!(leader.connections(), 1);
    assert_eq!(manager.sources(), vec![LEADER]);
    shut(manager).await;
}

#[tokio::test]
async fn a_removed_partition_is_no_longer_fetched_and_an_empty_source_stops() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    leader.append("orders", 1, 1);
    let (gone, kept) = (FakeLog::new(vec![]), FakeLog::new(vec![]));
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &gone);
    follow(&manager, &leader, followed("orders", 1, 0), &kept);
    gone.reaches(1).await;
    kept.reaches(1).await;

    assert!(manager.remove_partition("orders", PartitionId(0)));
    leader.append("orders", 0, 1);
    for n in 2..5 {
        leader.append("orders", 1, 1);
        kept.reaches(n).await;
    }
    assert_eq!(
        gone.log_end_offset(),
        Offset(1),
        "a removed partition's log is left alone"
    );

    assert!(manager.remove_partition("orders", PartitionId(1)));
    assert!(
        manager.sources().is_empty(),
        "a source that follows nothing has no task"
    );
    assert!(!manager.remove_partition("orders", PartitionId(1)));
    shut(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_removed_while_its_answer_is_applied_is_left_alone() {
    let leader = FakeLeader::start().await;
    leader.append("a", 0, 1);
    leader.append("b", 0, 1);
    let (a, b) = (FakeLog::new(vec![]), FakeLog::new(vec![]));
    let manager = Arc::new(FetcherManager::new(ME, settings()));
    // The answer carries both; while "a" is appended, the lead removes "b".
    let m = Arc::clone(&manager);
    *a.on_append.lock().unwrap() = Some(Box::new(move || {
        assert!(m.remove_partition("b", PartitionId(0)));
    }));
    manager.add_partition(LEADER, leader.addr.clone(), followed("a", 0, 0), a.clone());
    manager.add_partition(LEADER, leader.addr.clone(), followed("b", 0, 0), b.clone());
    a.reaches(1).await;
    leader.append("a", 0, 1);
    a.reaches(2).await;
    assert_eq!(
        b.log_end_offset(),
        Offset(0),
        "removed before its records were applied"
    );
    tokio::time::timeout(WAIT, manager.shutdown())
        .await
        .expect("shutdown returns");
}

#[tokio::test]
async fn a_partition_added_again_from_another_leader_moves_there() {
    let (old, new) = (FakeLeader::start().await, FakeLeader::start().await);
    old.append("orders", 0, 1);
    new.append("orders", 0, 1);
    new.append("orders", 0, 1);
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    manager.add_partition(
        LEADER,
        old.addr.clone(),
        followed("orders", 0, 0),
        log.clone(),
    );
    log.reaches(1).await;
    manager.add_partition(
        BrokerId(3),
        new.addr.clone(),
        followed("orders", 0, 0),
        log.clone(),
    );
    assert_eq!(manager.sources(), vec![BrokerId(3)]);
    log.reaches(2).await;
    assert_eq!(log.batches(), new.batches("orders", 0));
    shut(manager).await;
}

#[tokio::test]
async fn shutdown_returns_while_a_long_poll_waits_and_a_leader_is_unreachable() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(
        ME,
        FetcherSettings {
            wait_max: Duration::from_secs(20),
            ..settings()
        },
    );
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    // A listener that was closed: connecting fails and the fetcher backs off.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    manager.add_partition(
        BrokerId(9),
        closed_addr,
        followed("other", 0, 0),
        FakeLog::new(vec![]),
    );
    log.reaches(1).await;
    let started = Instant::now();
    shut(manager).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_throttle_spreads_a_catch_up_over_time() {
    let leader = FakeLeader::start().await;
    for _ in 0..6 {
        leader.append("orders", 0, 100);
    }
    let batch_bytes = leader.batches("orders", 0)[0].len() as u64;
    // Each fetch asks for one batch's worth; a bucket of 2 batches/s makes 6 batches take ~2 s.
    let s = FetcherSettings {
        partition_bytes_max: batch_bytes as i32,
        throttle_bytes_per_sec: 2 * batch_bytes,
        ..settings()
    };
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, s);
    let started = Instant::now();
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(600).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "throttled catch-up took only {took:?}"
    );
    shut(manager).await;
}

#[tokio::test]
async fn a_follower_cuts_where_its_own_epoch_ends_when_that_is_before_the_leaders_end() {
    let leader = FakeLeader::start().await;
    // The leader: epoch 0 holds [0, 4), epoch 2 from 4.
    for _ in 0..4 {
        leader.append("orders", 0, 1);
    }
    leader.with("orders", 0, |lp| lp.epoch = 2);
    leader.append("orders", 0, 2);
    // The follower has only [0, 2) of epoch 0, then an epoch 1 the leader never had.
    let ours = leader.batches("orders", 0);
    let log = FakeLog::new(vec![
        ours[0].clone(),
        ours[1].clone(),
        batch(2, 1, 1),
        batch(3, 1, 1),
        batch(4, 1, 1),
    ]);
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 2), &log);
    log.reaches(6).await;
    assert_eq!(
        log.lock().truncations.first(),
        Some(&2),
        "epoch 0 ends at 2 here, at 4 there"
    );
    assert_eq!(log.batches(), leader.batches("orders", 0));
    shut(manager).await;
}

#[tokio::test]
async fn unknown_leader_epoch_is_asked_again_after_the_backoff() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    // The leader has not heard of the follower's epoch yet, twice.
    let unknown = ResponseError::UnknownLeaderEpoch.code();
    leader.with("orders", 0, |lp| lp.fetch_errors.extend([unknown, unknown]));
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    let started = Instant::now();
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(1).await;
    assert!(
        started.elapsed() >= 2 * settings().backoff,
        "waited a backoff after each"
    );
    assert_eq!(leader.fetches("orders", 0), 3);
    shut(manager).await;
}

/// A follower may apply a new topic's metadata before its leader does: the leader answers
/// NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION for a while, and the follower keeps asking.
#[tokio::test]
async fn a_source_that_does_not_lead_the_partition_yet_is_asked_again_after_the_backoff() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    let not_yet = [
        ResponseError::NotLeaderOrFollower.code(),
        ResponseError::UnknownTopicOrPartition.code(),
    ];
    leader.with("orders", 0, |lp| lp.fetch_errors.extend(not_yet));
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(1).await;
    assert_eq!(leader.fetches("orders", 0), 3);
    shut(manager).await;
}

#[tokio::test]
async fn a_failed_append_truncates_again_and_retries_after_the_backoff() {
    let leader = FakeLeader::start().await;
    leader.append("orders", 0, 1);
    let log = FakeLog::new(vec![]);
    let manager = FetcherManager::new(ME, settings());
    follow(&manager, &leader, followed("orders", 0, 0), &log);
    log.reaches(1).await;
    log.refuse_appends.store(1, Ordering::SeqCst);
    leader.append("orders", 0, 1);
    leader.append("orders", 0, 1);
    log.reaches(3).await;
    assert_eq!(log.batches(), leader.batches("orders", 0));
    assert_eq!(
        leader.state.epoch_requests.load(Ordering::SeqCst),
        1,
        "truncated again (asked the leader) before fetching on"
    );
    shut(manager).await;
}
