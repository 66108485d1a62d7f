//! The journal out of descriptors: EMFILE when a segment must roll never latches the
//! spool. Its own test binary, because it takes every descriptor the process has.

mod harness;

use harness::temp_dir;

/// The journal itself out of descriptors: a roll that cannot create its segment leaves
/// the spool healthy (the current segment grows), and the next roll after descriptors come
/// back succeeds.
#[test]
fn the_spool_never_latches_on_emfile() {
    use wasmta::message::SpoolId;
    let dir = temp_dir();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (journal, _) = wasmta::spool::journal::Journal::open_with(dir.path(), 4096).unwrap();
        // take every descriptor there is
        let mut hog = vec![];
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
            if hog.len() > 1_000_000 {
                panic!("no descriptor limit");
            }
        }
        for _ in 0..20 {
            journal.put_data(SpoolId::new(), b"{}", &[b'x'; 1000]).await.expect("a write without a new segment");
        }
        assert!(journal.healthy(), "EMFILE did not latch the spool");
        drop(hog);
        for _ in 0..10 {
            journal.put_data(SpoolId::new(), b"{}", &[b'x'; 1000]).await.unwrap();
        }
        assert!(journal.healthy());
    });
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count();
    assert!(segments >= 2, "a new segment once descriptors were back: {segments}");
}
