//! `collapse-lab data fetch`: downloads a data set's files from the publisher, checks them
//! against the publisher's MD5, resumes interrupted downloads and unpacks archives.
//!
//! Every file is written to `<name>.part` first and renamed only once its checksum matches, so
//! a file under its final name is always complete. A `.part` left by an interrupted run is
//! resumed with an HTTP `Range` request.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::InputError;
use crate::data::files::file_error;

/// Overrides every set's base URL (the `--base-url` flag wins over it): lets tests serve
/// fixtures from a loopback server and users point at a mirror.
pub const BASE_URL_ENV: &str = "COLLAPSE_LAB_DATA_URL";

/// Attempts per file before giving up on a connection that keeps dropping.
const MAX_ATTEMPTS: usize = 5;

/// One file of a set, the MD5 its publisher (or torchvision, which mirrors the publisher's
/// list) gives for it, and its length in bytes: a body longer than that is refused (a
/// misbehaving server must not fill the disk), and the free space is checked before it starts.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    pub name: &'static str,
    pub md5: &'static str,
    pub bytes: u64,
}

/// A downloadable data set: where it lives and what it consists of.
#[derive(Debug, Clone, Copy)]
pub struct FetchSet {
    pub name: &'static str,
    /// The official location, ending in `/`; file names are appended.
    pub base_url: &'static str,
    pub files: &'static [RemoteFile],
    /// For a `.tar.gz`: the folder it unpacks to (its presence means already unpacked).
    pub unpacks_to: Option<&'static str>,
}

/// MD5s as published by the authors (CIFAR: the table on cs.toronto.edu/~kriz/cifar.html;
/// MNIST, Fashion-MNIST and STL-10: the lists torchvision checks against).
pub const FETCH_SETS: [FetchSet; 5] = [
    FetchSet {
        name: "mnist",
        base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/",
        files: &[
            RemoteFile {
                name: "train-images-idx3-ubyte.gz",
                md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                bytes: 9_912_422,
            },
            RemoteFile {
                name: "train-labels-idx1-ubyte.gz",
                md5: "d53e105ee54ea40749a09fcbcd1e9432",
                bytes: 28_881,
            },
            RemoteFile {
                name: "t10k-images-idx3-ubyte.gz",
                md5: "9fb629c4189551a2d022fa330f9573f3",
                bytes: 1_648_877,
            },
            RemoteFile {
                name: "t10k-labels-idx1-ubyte.gz",
                md5: "ec29112dd5afa0611ce80d1b7f02629c",
                bytes: 4_542,
            },
        ],
        unpacks_to: None,
    },
    FetchSet {
        name: "fashion-mnist",
        base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files: &[
            RemoteFile {
                name: "train-images-idx3-ubyte.gz",
                md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                bytes: 26_421_880,
            },
            RemoteFile {
                name: "train-labels-idx1-ubyte.gz",
                md5: "25c81989df183df01b3e8a0aad5dffbe",
                bytes: 29_515,
            },
            RemoteFile {
                name: "t10k-images-idx3-ubyte.gz",
                md5: "bef4ecab320f06d8554ea6380940ec79",
                bytes: 4_422_102,
            },
            RemoteFile {
                name: "t10k-labels-idx1-ubyte.gz",
                md5: "bb300cfdad3c16e7a12a480ee83cd310",
                bytes: 5_148,
            },
        ],
        unpacks_to: None,
    },
    FetchSet {
        name: "cifar10",
        base_url: "https://www.cs.toronto.edu/~kriz/",
        files: &[RemoteFile {
            name: "cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            bytes: 170_052_171,
        }],
        unpacks_to: Some("cifar-10-batches-bin"),
    },
    FetchSet {
        name: "cifar100",
        base_url: "https://www.cs.toronto.edu/~kriz/",
        files: &[RemoteFile {
            name: "cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            bytes: 168_513_733,
        }],
        unpacks_to: Some("cifar-100-binary"),
    },
    FetchSet {
        name: "stl10",
        base_url: "http://ai.stanford.edu/~acoates/stl10/",
        files: &[RemoteFile {
            name: "stl10_binary.tar.gz",
            md5: "91f7769df0f17e558f3565bffb0c7dfb",
            bytes: 2_640_397_119,
        }],
        unpacks_to: Some("stl10_binary"),
    },
];

/// The set called `name`, or an [`InputError`] listing the names there are.
pub fn fetch_set(name: &str) -> Result<&'static FetchSet, InputError> {
    FETCH_SETS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = FETCH_SETS.iter().map(|s| s.name).collect();
        InputError::new(
            "data fetch",
            format!(
                "unknown data set `{name}`, expected one of {}",
                names.join(", ")
            ),
        )
    })
}

/// Where `data fetch NAME` puts a set when no `--dir` is given (and where `data inspect NAME`
/// looks for it).
pub fn default_dir(name: &str) -> PathBuf {
    Path::new("data").join(name)
}

/// The base URL in force: the flag, else [`BASE_URL_ENV`], else the official one.
pub fn resolve_base_url(set: &FetchSet, flag: Option<&str>) -> String {
    flag.map(String::from)
        .or_else(|| std::env::var(BASE_URL_ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| set.base_url.to_string())
}

/// What `fetch` did with each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already present with the right checksum.
    Present,
    /// Downloaded (`resumed` when a `.part` was continued) and verified.
    Downloaded { bytes: u64, resumed: bool },
}

/// Downloads every file of `set` from `base_url` into `dir`, verifies and unpacks it.
/// Returns one line per file for the user.
pub fn fetch(set: &FetchSet, dir: &Path, base_url: &str, progress: bool) -> Result<Vec<String>> {
    crate::log::create_given_dir(dir)?;
    let agent = agent(stall_timeout()?);
    let mut lines = Vec::new();
    for file in set.files {
        let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
        let path = dir.join(file.name);
        let outcome = fetch_file(&agent, &url, &path, file, progress)?;
        lines.push(match outcome {
            Outcome::Present => format!("{}: present, MD5 ok", path.display()),
            Outcome::Downloaded { bytes, resumed } => format!(
                "{}: {bytes} bytes{} from {url}, MD5 ok",
                path.display(),
                if resumed { " (resumed)" } else { "" }
            ),
        });
        if let Some(sub) = set.unpacks_to {
            if dir.join(sub).is_dir() && outcome == Outcome::Present {
                lines.push(format!("{}: already unpacked", dir.join(sub).display()));
            } else {
                let n = unpack_tar_gz(&path, dir)?;
                lines.push(format!("{}: unpacked {n} entries", dir.join(sub).display()));
            }
        }
    }
    Ok(lines)
}

/// A blocking agent that hands every HTTP status back (a 416 or 200 answer to a Range request
/// is information, not an error); timeouts bound connecting, waiting for headers and each read
/// of the body (a stalled server ends the attempt, which is then resumed), but not the whole
/// body, which for STL-10 is 2.6 GB.
fn agent(stall: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(stall))
        .timeout_per_read(Some(stall))
        .build()
        .into()
}

/// The environment variable that sets how long a server may send nothing (seconds).
pub const STALL_TIMEOUT_VAR: &str = "COLLAPSE_LAB_FETCH_TIMEOUT";

/// How long a server may send nothing before the attempt ends: 60 s, or
/// `COLLAPSE_LAB_FETCH_TIMEOUT` seconds.
fn stall_timeout() -> Result<Duration, InputError> {
    match std::env::var(STALL_TIMEOUT_VAR) {
        Err(_) => Ok(Duration::from_secs(60)),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                InputError::new(
                    STALL_TIMEOUT_VAR,
                    format!("expected whole seconds ≥ 1, got `{v}`"),
                )
            }),
    }
}

/// The `.part` file a download of `path` goes to.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// Fetches one file into `path`, resuming `path.part`, and checks its length and MD5.
pub fn fetch_file(
    agent: &ureq::Agent,
    url: &str,
    path: &Path,
    file: &RemoteFile,
    progress: bool,
) -> Result<Outcome> {
    let md5 = file.md5;
    // A file that fails the check is downloaded again, into the `.part`, and replaced only by a
    // verified copy (the rename below): if the download fails, the user's file is still there.
    if path.is_file() && md5_of(path)? == md5 {
        return Ok(Outcome::Present);
    }
    let part = part_path(path);
    // Never written through a link: a planted `.part` (or destination) link is refused.
    crate::log::refuse_symlink(&part)?;
    crate::log::refuse_symlink(path)?;
    let resumed = part.is_file();
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if have > file.bytes {
        crate::log::remove_file_if_present(&part)?;
    }
    check_free_space(path, file.bytes.saturating_sub(have.min(file.bytes)))?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match download_once(agent, url, &part, file.bytes, progress)? {
            Transfer::Complete => break,
            Transfer::Interrupted(e) if attempts < MAX_ATTEMPTS => {
                crate::errln!("{url}: connection dropped ({e}); resuming");
            }
            Transfer::Interrupted(e) => {
                bail!("{url}: connection dropped {MAX_ATTEMPTS} times, last: {e}; run again to resume from {}", part.display())
            }
        }
    }
    let got = md5_of(&part)?;
    if got != md5 {
        crate::log::remove_file_if_present(&part)
            .map_err(|e| file_error(&part, format!("cannot delete after a bad checksum: {e:#}")))?;
        return Err(file_error(
            &part,
            format!("MD5 {got} does not match the published {md5}; deleted the partial file (run again to download afresh)"),
        )
        .into());
    }
    crate::log::rename(&part, path)
        .map_err(|e| file_error(path, format!("cannot rename the finished download: {e:#}")))?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Outcome::Downloaded {
        bytes,
        resumed: resumed || attempts > 1,
    })
}

/// How one request ended.
enum Transfer {
    Complete,
    /// The body stopped early; what arrived is kept in the `.part` file.
    Interrupted(String),
}

/// Refuses to start a download of `needed` more bytes next to `path` when the file system has
/// less free (when it can be asked).
fn check_free_space(path: &Path, needed: u64) -> Result<(), InputError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match crate::log::available_space(dir) {
        Some(free) if free < needed => Err(file_error(
            dir,
            format!(
                "{needed} bytes are needed for {} but only {free} are free",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
        )),
        _ => Ok(()),
    }
}

/// One GET of `url`, continuing `part` from its current length with a Range request; a body
/// that would make the file longer than `expected` bytes is refused.
fn download_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    expected: u64,
    progress: bool,
) -> Result<Transfer> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = match request.call() {
        Ok(r) => r,
        Err(e) => bail!("{url}: {e}"),
    };
    let status = response.status().as_u16();
    let append = match status {
        206 if have > 0 => true,
        200 => false,
        // The part already holds the whole file.
        416 if have > 0 => return Ok(Transfer::Complete),
        _ => bail!("{url}: HTTP {status}"),
    };
    let remaining = response.body().content_length();
    let start = if append { have } else { 0 };
    let too_long = |len: u64| {
        file_error(
            part,
            format!("{url} sends {len} bytes; the file is {expected} bytes: refused (the partial file is deleted)"),
        )
    };
    if let Some(len) = remaining.filter(|&n| start.saturating_add(n) > expected) {
        crate::log::remove_file_if_present(part)?;
        return Err(too_long(start.saturating_add(len)).into());
    }
    let mut out = if append {
        crate::log::open_append(part)
    } else {
        crate::log::remove_file_if_present(part).and_then(|()| crate::log::create_new(part))
    }
    .map_err(|e| file_error(part, format!("cannot write: {e:#}")))?;
    let bar = if progress {
        let bar = ProgressBar::new(start + remaining.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(
            part.file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string())
                .unwrap_or_default(),
        );
        bar.set_position(start);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                if start + received + n as u64 > expected {
                    drop(out);
                    crate::log::remove_file_if_present(part)?;
                    return Err(too_long(start + received + n as u64).into());
                }
                out.write_all(&buf[..n])
                    .map_err(|e| file_error(part, format!("cannot write: {e}")))?;
                received += n as u64;
                bar.inc(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timeout") => {
                break Some(format!("the server sent nothing for the read timeout ({e}; set {STALL_TIMEOUT_VAR} to wait longer)"))
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    out.flush()
        .map_err(|e| file_error(part, format!("cannot write: {e}")))?;
    bar.finish_and_clear();
    Ok(match (result, remaining) {
        (Some(e), _) => Transfer::Interrupted(e),
        (None, Some(len)) if received < len => {
            Transfer::Interrupted(format!("{received} of {len} bytes arrived"))
        }
        _ => Transfer::Complete,
    })
}

/// The lowercase hex MD5 of a file, read in blocks.
fn md5_of(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    Ok(format!("{:x}", ctx.finalize()))
}

/// Unpacks a `.tar.gz` into `dir`; `tar` refuses entries that would land outside it.
fn unpack_tar_gz(archive: &Path, dir: &Path) -> Result<usize> {
    let file = File::open(archive).map_err(|e| file_error(archive, format!("cannot open: {e}")))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut count = 0;
    let entries = tar
        .entries()
        .map_err(|e| file_error(archive, format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| file_error(archive, format!("corrupt archive: {e}")))?;
        let unpacked = entry
            .unpack_in(dir)
            .map_err(|e| file_error(archive, format!("cannot unpack an entry: {e}")))?;
        if unpacked {
            count += 1;
        }
    }
    Ok(count)
}
