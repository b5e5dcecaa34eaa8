//! How many times one push body is copied on its way from the HTTP request to the client's
//! socket, counted by a global allocator: every allocation of at least the body's size is a
//! copy of it (nothing else in the path is that large). The body is larger than hyper's
//! read buffer (about 400 KiB), so HTTP's own share is exactly one: collecting the body's
//! chunks into one buffer.

mod common;

use common::{Client, start_with, test_config, token};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// The push body: 1.5 MiB, so any allocation of 1 MiB or more holds a copy of it.
const BODY: usize = 3 << 19;
const COPY: usize = 1 << 20;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static COPIES: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if size >= COPY && COUNTING.load(SeqCst) {
        COPIES.fetch_add(1, SeqCst);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn one_key_push_body_is_copied_twice() {
    let mut config = test_config();
    config.logic.http.max_body = 4 << 20;
    let srv = start_with(config);
    let mut c = Client::tcp(srv.tcp);
    c.auth(&token(1, "big", "", &[1000]));
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let mut request = format!(
        "POST /goim/push/keys?operation=1000&keys=big HTTP/1.1\r\nHost: t\r\n\
         Content-Length: {BODY}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&body);

    COUNTING.store(true, SeqCst);
    let mut http = TcpStream::connect(srv.http).unwrap();
    http.write_all(&request).unwrap();
    let mut answer = [0u8; 512];
    let n = http.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).contains(r#""code":0"#),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // The client reads the push (OpRaw on TCP: the inner packet) in small pieces.
    let mut got = 0usize;
    let mut chunk = [0u8; 65536];
    let mut header = Vec::new();
    c.sock.set_read_timeout(Some(common::WAIT)).unwrap();
    while got < BODY {
        let n = c.sock.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        let mut data = &chunk[..n];
        if header.len() < 16 {
            let take = (16 - header.len()).min(data.len());
            header.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        for (i, b) in data.iter().enumerate() {
            assert_eq!(*b, ((got + i) % 251) as u8, "byte {}", got + i);
        }
        got += data.len();
    }
    COUNTING.store(false, SeqCst);
    assert_eq!(got, BODY);
    assert_eq!(i32::from_be_bytes(header[8..12].try_into().unwrap()), 1000);
    let copies = COPIES.load(SeqCst);
    println!("copies of one {BODY}-byte key push body: {copies}");
    // HTTP collects the body (1); job writes it behind goim's OpRaw packet header (1).
    assert_eq!(copies, 2);
}
