//! The OpRaw batch reader (`starling_proto::raw::packets`): what comet reads in a pushed
//! batch (`worker/command.rs`) and what clients and the bench read in an op-9 body.
//!
//! Input: the batch bytes. Checked: the packets it yields, re-encoded one after the other,
//! are the batch's first bytes; an error is the last item; a batch of only whole packets
//! yields no error; and a batch built with `RawBatch` from what was read reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::packet::{self, HEADER_LEN};
use starling_proto::raw::{self, RawBatch};

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    let mut failed = false;
    let mut rebuilt = RawBatch::new();
    let mut ops = Vec::new();
    for item in raw::packets(data) {
        assert!(!failed, "nothing after an error");
        match item {
            Ok(p) => {
                let mut wire = Vec::with_capacity(HEADER_LEN + p.body.len());
                packet::encode(&mut wire, p.ver, p.op, p.seq, p.body);
                assert_eq!(&data[pos..pos + wire.len()], &wire[..]);
                pos += wire.len();
                rebuilt.push(p.op, p.body);
                ops.push((p.op, p.body.len()));
            }
            Err(_) => failed = true,
        }
    }
    assert_eq!(
        failed,
        pos != data.len(),
        "an error exactly when bytes are left"
    );
    let rebuilt = rebuilt.finish();
    let again: Vec<_> = raw::packets(&rebuilt)
        .map(|p| {
            let p = p.expect("a built batch reads back");
            assert_eq!((p.ver, p.seq), (raw::PUSH_VER, 0));
            (p.op, p.body.len())
        })
        .collect();
    assert_eq!(again, ops);
});
