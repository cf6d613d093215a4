//! `data fetch` against a loopback HTTP server the test starts itself: never a real host.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use collapse_lab::data::tools::fetch::{fetch, part_path, FetchSet, RemoteFile};
use common::{bin, stderr};

/// A minimal HTTP/1.1 server on 127.0.0.1 serving `files` (path → body) with Range support.
/// With `cut_first`, the first response sends only that many body bytes and closes. It stops
/// after `max_requests` connections or 30 s, and returns the request lines it saw.
struct Server {
    base: String,
    handle: JoinHandle<Vec<String>>,
}

impl Server {
    fn start(files: Vec<(&str, Vec<u8>)>, cut_first: Option<usize>, max_requests: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}/", listener.local_addr().expect("addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let files: Vec<(String, Vec<u8>)> =
            files.into_iter().map(|(p, b)| (p.to_string(), b)).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut served = 0;
            while served < max_requests && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let cut = if served == 0 { cut_first } else { None };
                        respond(stream, &files, cut, &log);
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            let lines = log.lock().expect("log").clone();
            lines
        });
        Self { base, handle }
    }

    fn requests(self) -> Vec<String> {
        self.handle.join().expect("server thread")
    }
}

fn respond(
    stream: TcpStream,
    files: &[(String, Vec<u8>)],
    cut: Option<usize>,
    log: &Mutex<Vec<String>>,
) {
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock()
        .expect("log")
        .push(format!("{path} range={range_start:?}"));
    let mut out = stream;
    let Some((_, body)) = files.iter().find(|(p, _)| *p == path) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let (status, start) = match range_start {
        Some(s) if s >= body.len() => {
            let _ = out.write_all(
                b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        Some(s) => ("206 Partial Content", s),
        None => ("200 OK", 0),
    };
    let rest = &body[start..];
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        rest.len()
    );
    if start > 0 {
        head += &format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        );
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    let send = cut.map_or(rest.len(), |n| n.min(rest.len()));
    let _ = out.write_all(&rest[..send]);
    let _ = out.flush();
}

fn md5_hex(bytes: &[u8]) -> &'static str {
    Box::leak(format!("{:x}", md5::compute(bytes)).into_boxed_str())
}

/// A tiny CIFAR-10 test split (`cifar-10-batches-bin/test_batch.bin`, 20 records) as tar.gz.
fn cifar_archive() -> Vec<u8> {
    let mut batch = Vec::new();
    for i in 0..20u8 {
        batch.push(i % 10);
        batch.extend((0..3072u32).map(|p| (p as u8).wrapping_mul(i + 1)));
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(batch.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "cifar-10-batches-bin/test_batch.bin",
        &batch[..],
    )
    .expect("tar");
    tar.into_inner().expect("tar").finish().expect("gzip")
}

fn cifar_set(archive: &[u8]) -> FetchSet {
    cifar_set_of(md5_hex(archive), archive.len() as u64)
}

fn cifar_set_of(md5: &'static str, bytes: u64) -> FetchSet {
    FetchSet {
        name: "cifar10",
        base_url: "http://127.0.0.1:9/",
        files: Box::leak(Box::new([RemoteFile {
            name: "cifar-10-binary.tar.gz",
            md5,
            bytes,
        }])),
        unpacks_to: Some("cifar-10-batches-bin"),
    }
}

fn batch_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("cifar-10-batches-bin/test_batch.bin"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn good_archive_downloads_verifies_and_unpacks() {
    let archive = cifar_archive();
    let set = cifar_set(&archive);
    let server = Server::start(vec![("/cifar-10-binary.tar.gz", archive)], None, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = fetch(&set, dir.path(), &server.base, false).expect("fetches");
    assert_eq!(server.requests().len(), 1);
    assert!(lines[0].contains("MD5 ok"), "{lines:?}");
    assert_eq!(batch_len(dir.path()), 20 * 3073);
    assert!(!part_path(&dir.path().join("cifar-10-binary.tar.gz")).exists());
    // Again: present and unpacked, no request (the server is gone).
    let lines = fetch(&set, dir.path(), "http://127.0.0.1:9/", false).expect("no-op");
    assert!(lines[0].contains("present"), "{lines:?}");
    assert!(lines[1].contains("already unpacked"), "{lines:?}");
    // The loaders read what was unpacked: a folder holding only the test split.
    let out = dir.path().join("sheet");
    let o = bin()
        .args(["data", "inspect"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("CIFAR-10"), "{text}");
    assert!(
        text.contains("test: 20 images, 3×32×32, 10 classes"),
        "{text}"
    );
    assert!(out.join("contact_sheet.png").is_file());
}

#[test]
fn interrupted_download_resumes_with_range() {
    let archive = cifar_archive();
    let set = cifar_set(&archive);
    let cut = archive.len() / 3;
    let server = Server::start(vec![("/cifar-10-binary.tar.gz", archive)], Some(cut), 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = fetch(&set, dir.path(), &server.base, false).expect("resumes and completes");
    let requests = server.requests();
    assert_eq!(
        requests,
        vec![
            "/cifar-10-binary.tar.gz range=None".to_string(),
            format!("/cifar-10-binary.tar.gz range=Some({cut})"),
        ]
    );
    assert!(lines[0].contains("(resumed)"), "{lines:?}");
    assert_eq!(batch_len(dir.path()), 20 * 3073);
}

#[test]
fn checksum_mismatch_deletes_the_part_and_exits_2() {
    let files = vec![(
        "/train-images-idx3-ubyte.gz",
        b"not the real MNIST".to_vec(),
    )];
    let server = Server::start(files, None, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // The environment variable points at the server.
    let o = bin()
        .args(["data", "fetch", "mnist", "--quiet", "--dir"])
        .arg(dir.path())
        .env("COLLAPSE_LAB_DATA_URL", &server.base)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz.part"), "{err}");
    assert!(err.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873"), "{err}");
    assert!(err.contains("deleted"), "{err}");
    let part = part_path(&dir.path().join("train-images-idx3-ubyte.gz"));
    assert!(!part.exists());
    // --base-url wins over the environment variable (which now points nowhere).
    let o = bin()
        .args(["data", "fetch", "mnist", "--quiet", "--dir"])
        .arg(dir.path())
        .args(["--base-url", &server.base])
        .env("COLLAPSE_LAB_DATA_URL", "http://127.0.0.1:9/")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 2);
}

/// A file already there whose checksum does not match is replaced only by a verified
/// download: when the download fails, the file is still there; when it succeeds, it is the
/// new one.
#[test]
fn a_mismatching_file_is_kept_until_a_verified_copy_replaces_it() {
    let archive = cifar_archive();
    let set = cifar_set(&archive);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, b"the user's own file").expect("write");
    // Nothing listens on port 9: the download fails.
    assert!(fetch(&set, dir.path(), "http://127.0.0.1:9/", false).is_err());
    assert_eq!(std::fs::read(&path).expect("kept"), b"the user's own file");
    let server = Server::start(vec![("/cifar-10-binary.tar.gz", archive.clone())], None, 1);
    fetch(&set, dir.path(), &server.base, false).expect("fetches");
    assert_eq!(std::fs::read(&path).expect("replaced"), archive);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unknown_set_is_bad_input() {
    let o = common::run(&["data", "fetch", "imagenet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fashion-mnist"), "{}", stderr(&o));
}

/// A server that answers with headers and a few bytes, then sends nothing more: every attempt
/// ends at the read timeout, the download stops with one line saying so, and nothing is lost
/// (the `.part` keeps what arrived, for the next run to resume).
#[test]
fn a_stalled_server_ends_at_the_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}/", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && held.len() < 5 {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
                        line.clear();
                    }
                    let mut out = stream;
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789",
                    );
                    let _ = out.flush();
                    held.push(out); // Open, silent.
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let o = bin()
        .args(["data", "fetch", "mnist", "--quiet", "--dir"])
        .arg(dir.path())
        .args(["--base-url", &base])
        .env("COLLAPSE_LAB_FETCH_TIMEOUT", "1")
        .output()
        .expect("runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "bounded by the timeout"
    );
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("sent nothing") && last.contains("COLLAPSE_LAB_FETCH_TIMEOUT"),
        "{err}"
    );
    let part = part_path(&dir.path().join("train-images-idx3-ubyte.gz"));
    assert!(
        std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) >= 10,
        "{err}"
    );
    let _ = server.join();

    // A timeout that is not a number is bad input naming the variable.
    let o = bin()
        .args(["data", "fetch", "mnist", "--quiet", "--dir"])
        .arg(dir.path())
        .args(["--base-url", "http://127.0.0.1:9/"])
        .env("COLLAPSE_LAB_FETCH_TIMEOUT", "soon")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("COLLAPSE_LAB_FETCH_TIMEOUT"));
}

/// A server that sends more than the file's known length — with a `Content-Length` saying
/// so, or without one, streaming on — is cut off: the download is refused with one line, the
/// partial file deleted, and nothing beyond the known length is ever written.
#[test]
fn a_body_longer_than_the_file_is_refused() {
    let archive = cifar_archive();
    let set = cifar_set(&archive);
    // Announced: the Content-Length is longer than the file.
    let mut longer = archive.clone();
    longer.extend(std::iter::repeat_n(0u8, 4096));
    let server = Server::start(vec![("/cifar-10-binary.tar.gz", longer.clone())], None, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let e = fetch(&set, dir.path(), &server.base, false).expect_err("refused");
    assert!(e.to_string().contains("refused"), "{e:#}");
    assert!(!part_path(&dir.path().join("cifar-10-binary.tar.gz")).exists());
    assert!(!dir.path().join("cifar-10-binary.tar.gz").exists());
    server.requests();

    // Unannounced: no Content-Length, the body just goes on (an endless stream, cut by the
    // test after 1 MiB).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}/", listener.local_addr().expect("addr"));
    let endless = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
            line.clear();
        }
        let mut out = stream;
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let chunk = vec![7u8; 4096];
        for _ in 0..256 {
            if out.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let e = fetch(&set, dir.path(), &base, false).expect_err("refused");
    assert!(e.to_string().contains("refused"), "{e:#}");
    assert!(!part_path(&dir.path().join("cifar-10-binary.tar.gz")).exists());
    let _ = endless.join();
}

/// A file larger than the free space is refused before any request, naming the folder.
#[test]
fn a_download_larger_than_the_free_space_is_refused_first() {
    let set = cifar_set_of("00000000000000000000000000000000", u64::MAX / 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 9: a request would fail differently.
    let e = fetch(&set, dir.path(), "http://127.0.0.1:9/", false).expect_err("refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("are free") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    assert!(!part_path(&dir.path().join("cifar-10-binary.tar.gz")).exists());
}
