use super::*;
use starling_proto::im::v1::{ConvHead, ConvKind};

fn conv() -> ConvRef {
    ConvRef {
        kind: ConvKind::P2p as i32,
        id: 7,
    }
}

fn msg(seq: u64) -> Message {
    Message {
        conv: Some(conv()),
        seq,
        ..Default::default()
    }
}

fn push(seqs: &[u64]) -> Push {
    Push {
        messages: seqs.iter().map(|s| msg(*s)).collect(),
    }
}

fn seqs(ms: &[Message]) -> Vec<u64> {
    ms.iter().map(|m| m.seq).collect()
}

#[test]
fn contig_applies_in_order_drops_duplicates_and_holds_gaps() {
    let t = Instant::now();
    let mut s = ImState::new();
    assert_eq!(seqs(&s.on_push(push(&[1, 2]), t)), vec![1, 2]);
    assert_eq!(seqs(&s.on_push(push(&[2, 4, 5]), t)), Vec::<u64>::new());
    assert_eq!(s.convs[&key(&conv())].held(), 2);
    assert_eq!(s.raw_duplicates, 1);
    // The gap closes: 3, 4, 5 in seq order, whatever order they came in.
    assert_eq!(seqs(&s.on_push(push(&[3, 4]), t)), vec![3, 4, 5]);
    assert_eq!(s.raw_duplicates, 2, "4 again is a duplicate of a held one");
    assert_eq!(s.convs[&key(&conv())].contig, 5);
    assert_eq!(s.next_gap_at(), None);
    assert_eq!(s.raw, 7);
}

#[test]
fn a_gap_is_pulled_after_gap_wait_and_not_before() {
    let t = Instant::now();
    let mut s = ImState::new();
    s.welcome(&ImWelcome {
        gap_wait_ms: 200,
        ..Default::default()
    });
    s.on_push(push(&[1, 3]), t);
    assert_eq!(s.next_gap_at(), Some(t + Duration::from_millis(200)));
    assert!(s.due_gaps(t + Duration::from_millis(199)).is_empty());
    let pulls = s.due_gaps(t + Duration::from_millis(200));
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].from_seq, pulls[0].dir),
        (2, Direction::Forward as i32)
    );
    assert_eq!(s.gap_pulls, 1);
    // Re-armed: not due again at once.
    assert!(s.due_gaps(t + Duration::from_millis(201)).is_empty());
    let got = s.on_pull_reply(
        conv(),
        &PullReply {
            messages: vec![msg(2), msg(3)],
            last_seq: 3,
            ..Default::default()
        },
        t,
    );
    // 2 closes the gap and releases the held 3; the pulled 3 is a duplicate.
    assert_eq!(seqs(&got.messages), vec![2, 3]);
    assert_eq!(got.more, None);
    assert_eq!(s.raw_duplicates, 1);
    assert_eq!(s.next_gap_at(), None);
}

#[test]
fn a_sync_pass_holds_pushes_pulls_what_is_missing_then_applies_them() {
    let t = Instant::now();
    let mut s = ImState::new();
    s.on_push(push(&[1]), t);
    let first = s.begin_sync();
    assert_eq!((first.since, first.epoch), (0, 0));
    // Pushes during the pass are held, not applied (gim #46).
    assert!(s.on_push(push(&[6]), t).is_empty());
    let page = SyncReply {
        convs: vec![ConvHead {
            conv: Some(conv()),
            last_seq: 5,
            ..Default::default()
        }],
        has_more: true,
        cursor: "c1".into(),
        epoch: 9,
        ..Default::default()
    };
    let SyncStep::Page { pulls, next, .. } = s.on_sync_reply(&page) else {
        panic!("no reset");
    };
    assert_eq!(pulls[0].from_seq, 2);
    assert_eq!(next.as_ref().unwrap().cursor, "c1");
    let p1 = s.on_pull_reply(
        conv(),
        &PullReply {
            messages: vec![msg(2), msg(3)],
            has_more: true,
            last_seq: 5,
            ..Default::default()
        },
        t,
    );
    assert_eq!(seqs(&p1.messages), vec![2, 3]);
    assert_eq!(p1.more.unwrap().from_seq, 4);
    let p2 = s.on_pull_reply(
        conv(),
        &PullReply {
            messages: vec![msg(4), msg(5)],
            last_seq: 5,
            ..Default::default()
        },
        t,
    );
    assert_eq!(seqs(&p2.messages), vec![4, 5]);
    let last = SyncReply {
        server_ts: 1234,
        epoch: 9,
        ..Default::default()
    };
    assert!(matches!(
        s.on_sync_reply(&last),
        SyncStep::Page { next: None, .. }
    ));
    assert_eq!((s.since, s.epoch), (1234, 9));
    assert_eq!(seqs(&s.end_sync(t)), vec![6]);
    assert!(!s.is_syncing());
}

#[test]
fn reset_wipes_the_cache_and_restarts_from_zero() {
    let t = Instant::now();
    let mut s = ImState::new();
    s.on_push(push(&[1, 2]), t);
    s.since = 99;
    s.epoch = 1;
    s.begin_sync();
    let step = s.on_sync_reply(&SyncReply {
        reset: true,
        epoch: 2,
        ..Default::default()
    });
    assert_eq!(
        step,
        SyncStep::Reset(SyncReq {
            since: 0,
            cursor: String::new(),
            limit: SYNC_PAGE,
            epoch: 2
        })
    );
    assert!(s.convs.is_empty());
    // Seq 1 of the new store is new again.
    s.end_sync(t);
    assert_eq!(seqs(&s.on_push(push(&[1]), t)), vec![1]);
}

#[test]
fn a_floor_skips_what_this_user_may_not_read() {
    let t = Instant::now();
    let mut s = ImState::new();
    s.on_push(push(&[11, 12]), t);
    assert_eq!(seqs(&s.raise_floor(key(&conv()), 11)), vec![11, 12]);
    assert_eq!(s.next_gap_at(), None);
    assert_eq!(
        seqs(&s.on_push(push(&[5]), t)),
        Vec::<u64>::new(),
        "below the floor"
    );
}

#[test]
fn a_pull_without_progress_stops_paging() {
    let t = Instant::now();
    let mut s = ImState::new();
    let got = s.on_pull_reply(
        conv(),
        &PullReply {
            has_more: true,
            ..Default::default()
        },
        t,
    );
    assert_eq!(got.more, None);
}
