//! The journal's tests: durability across reopen, torn and corrupt records, every cut
//! point, compaction, shared bodies, reads racing the writer.

use super::*;

#[tokio::test]
async fn survives_reopen_and_honours_removes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (SpoolId::new(), SpoolId::new(), SpoolId::new());
    {
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.messages.is_empty());
        j.put_data(a, b"{}", b"A").await.unwrap();
        j.put_data(b, b"{}", b"B").await.unwrap();
        j.put_data(c, b"{}", b"C").await.unwrap();
        j.remove(b).await.unwrap();
    }
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![a, c]);
    assert_eq!(rec.messages[1].data().unwrap(), b"C");
    assert_eq!(rec.quarantined, 0);
}

#[tokio::test]
async fn torn_tail_and_corruption_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (SpoolId::new(), SpoolId::new());
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put_data(a, b"{}", b"AAAA").await.unwrap();
        j.put_data(b, b"{}", b"BBBB").await.unwrap();
    }
    // corrupt the first record's data and append a torn record
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let pos = memchr::memmem::find(&bytes, b"AAAA").unwrap();
    bytes[pos] = b'Z';
    let torn = record::encode_put(SpoolId::new(), b"{}", b"torn");
    bytes.extend_from_slice(&torn[..torn.len() - 3]);
    fs::write(&seg, &bytes).unwrap();

    let (j, rec) = Journal::open(dir.path()).unwrap();
    let mut ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want, "bodies are stepped over at start-up; the torn record is never recovered");
    assert_eq!(rec.quarantined, 1, "the torn record");
    // a corrupt body read for delivery says why, and is never delivered
    let by_id = |id| rec.messages.iter().find(|m| m.id == id).unwrap();
    let err = by_id(a).data().unwrap_err().to_string();
    assert!(err.contains("corrupt (checksum)"), "{err}");
    assert_eq!(by_id(b).data().unwrap(), b"BBBB");
    // the background check quarantines it and removes its message
    let corrupt = || fs::read_dir(dir.path().join("corrupt")).unwrap().count();
    for _ in 0..200 {
        if corrupt() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(corrupt(), 2, "the torn record and the corrupt body");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(j);
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![b], "the message whose body was corrupt is removed");
}

/// A power cut keeps what was synced and any prefix of what was not: for every cut
/// point of the segment, recovery yields exactly the state after the last whole record
/// before the cut, so every acknowledged operation survives a cut at or after its sync,
/// and no half record is ever recovered (T-2, T-3).
#[tokio::test]
async fn every_cut_point_recovers_exactly_the_whole_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (SpoolId::new(), SpoolId::new(), SpoolId::new());
    let seg = segment_path(dir.path(), 1);
    // (synced length once the operation was acknowledged, the live state then)
    type State = Vec<(SpoolId, Vec<u8>)>;
    let mut acked: Vec<(u64, State)> = vec![(0, vec![])];
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        let mut state: State = vec![];
        let ops: Vec<(SpoolId, Option<&[u8]>)> =
            vec![(a, Some(b"first")), (b, Some(b"second")), (a, None), (c, Some(b"third")), (b, Some(b"again"))];
        for (id, data) in ops {
            match data {
                Some(d) => {
                    j.put_data(id, b"{}", d).await.unwrap();
                    state.retain(|(x, _)| *x != id);
                    state.push((id, d.to_vec()));
                }
                None => {
                    j.remove(id).await.unwrap();
                    state.retain(|(x, _)| *x != id);
                }
            }
            acked.push((fs::metadata(&seg).unwrap().len(), state.clone()));
        }
    }
    let image = fs::read(&seg).unwrap();
    let mut boundaries = vec![0];
    while let Decoded::Record(_, len) = record::decode(&image[*boundaries.last().unwrap()..]) {
        boundaries.push(boundaries.last().unwrap() + len);
    }
    assert_eq!(*boundaries.last().unwrap(), image.len());
    for cut in 0..=image.len() {
        let crashed = tempfile::tempdir().unwrap();
        fs::write(segment_path(crashed.path(), 1), &image[..cut]).unwrap();
        let (_j, rec) = Journal::open(crashed.path()).unwrap();
        let (_, expected) = acked.iter().rev().find(|(end, _)| *end as usize <= cut).unwrap();
        let mut got: State = rec.messages.iter().map(|m| (m.id, m.data().unwrap())).collect();
        let mut want = expected.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "cut at {cut}");
        // a message is two records (its body, then its ref): a cut between them tears
        // nothing, and the body alone is dead
        assert_eq!(rec.quarantined, usize::from(!boundaries.contains(&cut)), "cut at {cut}: the torn tail only");
    }
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg")).count()
}

#[tokio::test]
async fn a_long_lived_message_does_not_pin_the_segments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = SpoolId::new();
    {
        let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
        j.put_data(old, b"{\"long\":1}", b"retried for days").await.unwrap();
        for _ in 0..300 {
            let id = SpoolId::new();
            j.put_data(id, b"{}", &[b'x'; 500]).await.unwrap();
            j.remove(id).await.unwrap();
        }
        // about 40 segments were written; compaction moved the old message forward
        assert!(segment_files(dir.path()) <= 3, "{} segment files kept", segment_files(dir.path()));
    }
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!((rec.messages[0].id, rec.messages[0].data().unwrap()), (old, b"retried for days".to_vec()));
    assert_eq!(rec.quarantined, 0);
}

#[tokio::test]
async fn a_waiting_body_reads_back_after_compaction_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
    let source = j.body_source();
    let old = SpoolId::new();
    let body = Body::new(b"kept in the spool only".to_vec());
    j.put(old, b"{}", b"", &body).await.unwrap();
    let first = j.reader.index.lock().location(body.id).unwrap();
    for _ in 0..300 {
        let id = SpoolId::new();
        j.put_data(id, b"{}", &[b'x'; 500]).await.unwrap();
        j.remove(id).await.unwrap();
        // reads race the writer's moves and deletions: every one finds the body
        assert_eq!(source.read_body(body.id).unwrap(), b"kept in the spool only");
    }
    let moved = j.reader.index.lock().location(body.id).unwrap();
    assert_eq!(source.read_header_section(body.id).unwrap(), b"kept in the spool only", "no blank line: all");
    assert_ne!(first.seq, moved.seq, "compaction moved the body forward");
    assert!(!segment_path(dir.path(), first.seq).exists());
    j.remove(old).await.unwrap();
    let gone = source.read_body(body.id).unwrap_err().to_string();
    assert!(gone.contains("removed"), "{gone}");
}

#[tokio::test]
async fn header_reads_stream_the_body_and_still_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let text = format!("Subject: waiting\r\nX-A: 1\r\n\r\n{}", "body text ".repeat(30_000));
    let body = Body::new(text.clone().into_bytes());
    j.put(SpoolId::new(), b"{}", b"", &body).await.unwrap();
    let source = j.body_source();
    assert_eq!(source.read_header_section(body.id).unwrap(), b"Subject: waiting\r\nX-A: 1\r\n");
    // a flipped byte far into the text still fails the read of the headers
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let at = memchr::memmem::rfind(&bytes, b"body text").unwrap();
    bytes[at] ^= 0x20;
    fs::write(&seg, bytes).unwrap();
    let err = source.read_header_section(body.id).unwrap_err().to_string();
    assert!(err.contains("corrupt (checksum)"), "{err}");
}

#[tokio::test]
async fn a_message_whose_body_is_lost_is_reported_once_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a = SpoolId::new();
    let body = Body::new(vec![b'q'; 3000]);
    {
        let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
        j.put(a, b"{\"n\":1}", b"", &body).await.unwrap();
        for _ in 0..4 {
            j.put_data(SpoolId::new(), b"{}", &[b'x'; 1500]).await.unwrap();
        }
        // a retry rewrites only the message's record, in a later segment
        j.put(a, b"{\"n\":2}", b"", &body).await.unwrap();
    }
    // the body's segment loses its tail (the body record is cut)
    let seg = segment_path(dir.path(), 1);
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len.min(1000)).unwrap();
    drop(f);
    let (j, rec) = Journal::open(dir.path()).unwrap();
    assert!(rec.messages.iter().all(|m| m.id != a));
    assert!(dir.path().join("corrupt").join(format!("{a}.envelope.json")).exists(), "its envelope is kept");
    drop(j);
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    assert!(rec.messages.iter().all(|m| m.id != a));
    assert_eq!(rec.quarantined, 0, "reported once, not at every start");
}

#[tokio::test]
async fn starts_that_write_nothing_leave_no_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put_data(SpoolId::new(), b"{}", b"kept").await.unwrap();
    }
    for _ in 0..3 {
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 1);
    }
    // the live segment and the current one
    assert_eq!(segment_files(dir.path()), 2);
}

#[tokio::test]
async fn mostly_live_segments_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
    let mut ids = vec![];
    for _ in 0..40 {
        let id = SpoolId::new();
        j.put_data(id, b"{}", &[b'y'; 500]).await.unwrap();
        ids.push(id);
    }
    // a backlog: everything is live, so nothing is worth copying
    let before = segment_files(dir.path());
    assert!(before >= 5, "{before}");
    tokio::time::sleep(IDLE * 2).await;
    assert_eq!(segment_files(dir.path()), before);
    drop(j);
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.messages.len(), 40);
}

#[tokio::test]
async fn one_body_serves_every_message_of_a_transaction_and_dies_with_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let body = Body::new(vec![b'z'; 100_000]);
    let ids: Vec<SpoolId> = (0..50).map(|_| SpoolId::new()).collect();
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        let prefixes: Vec<Vec<u8>> = ids.iter().map(|id| format!("Received: {id}\r\n").into_bytes()).collect();
        let puts = ids.iter().zip(&prefixes).map(|(id, p)| j.put(*id, b"{}", p, &body));
        for r in futures::future::join_all(puts).await {
            r.unwrap();
        }
        // an update names the same body: only the ref is written again
        j.put(ids[0], b"{\"num_attempts\":1}", b"Received: again\r\n", &body).await.unwrap();
    }
    let size: u64 = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(size < 110_000, "50 messages, one 100 KB body on disk: {size} bytes");
    {
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 50);
        assert!(rec.messages.iter().all(|m| m.body.same_as(&rec.messages[0].body)), "one body in memory");
        let first = rec.messages.iter().find(|m| m.id == ids[0]).unwrap();
        assert_eq!(first.prefix(), b"Received: again\r\n");
        for id in &ids[1..] {
            j.remove(*id).await.unwrap();
        }
    }
    let (j, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.messages.len(), 1, "the body outlives all but the last message");
    assert_eq!(rec.messages[0].body.len(), 100_000);
    assert!(rec.messages[0].body.loaded().is_none(), "recovery reads no body into memory");
    assert_eq!(rec.messages[0].body.read().unwrap().len(), 100_000);
    j.remove(ids[0]).await.unwrap();
    drop(j);
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    assert!(rec.messages.is_empty());
}

#[tokio::test]
async fn dead_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let a = SpoolId::new();
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put_data(a, b"{}", b"A").await.unwrap();
    }
    {
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 1);
        j.remove(a).await.unwrap();
    }
    let (_j, rec) = Journal::open(dir.path()).unwrap();
    assert!(rec.messages.is_empty());
    let segs = fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some()).count();
    assert!(segs <= 2, "old segments were removed, {segs} remain");
}

/// A restart opens each envelope once as it is taken: a record whose meta is JSON but not
/// an envelope is reported by id and skipped, the others come back whole; a message only
/// read while enumerated packs to its record's own bytes.
#[tokio::test]
async fn start_up_opens_each_envelope_once_and_reports_an_unreadable_one() {
    let dir = tempfile::tempdir().unwrap();
    let (good, odd) = (SpoolId::new(), SpoolId::new());
    let envelope = br#"{"sender":"a@x.example","recipients":["b@y.example"],"meta":{"queue":"q"},"num_attempts":4}"#;
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put_data(good, envelope, b"Subject: s\r\n\r\nhi\r\n").await.unwrap();
        j.put_data(odd, br#"{"not":"an envelope"}"#, b"x").await.unwrap();
    }
    let (_spool, startup) = crate::spool::Spool::open(&[], dir.path()).unwrap();
    assert_eq!(startup.len(), 2);
    let taken: Vec<_> = startup.messages().collect();
    let err = taken.iter().find_map(|m| m.as_ref().err()).expect("the odd one is refused");
    assert!(err.contains(&odd.to_string()) && err.contains("unreadable envelope"), "{err}");
    let m = taken.into_iter().find_map(Result::ok).expect("the good one");
    assert_eq!((m.id(), m.num_attempts(), m.queue_name()), (good, 4, "q".to_string()));
    assert_eq!(&m.data().unwrap()[..], b"Subject: s\r\n\r\nhi\r\n");
}
