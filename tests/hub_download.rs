//! Hub downloads through the real `hf-hub` code against a local server on 127.0.0.1 that
//! serves `tests/fixtures/tiny-x4-upscaler` the way huggingface.co does: the repo info API,
//! `resolve/<rev>/<file>` with ETag / X-Repo-Commit / Content-Length, a redirect to a "CDN"
//! for large files, byte ranges, 404s, and a connection dropped mid-body on request.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::DType;
use diffsr::hub::{self, HubOptions, ModelSpec};
use diffsr::pipeline::{LoadOptions, UpscalePipeline};

const REPO: &str = "diffsr-test/tiny-x4";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const UNET_FP16: &str = "unet/diffusion_pytorch_model.fp16.safetensors";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-x4-upscaler")
}

/// What the server holds and what it was asked.
#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    /// Listed in the repo info but answered with 404.
    unservable: HashSet<String>,
    /// A file whose next full-body response is cut off halfway.
    drop_once: Option<String>,
    /// A file whose next full-body response omits Content-Length and stops halfway, so the
    /// client cannot tell it is short.
    short_once: Option<String>,
    /// "METHOD PATH [range]" of every request.
    log: Vec<String>,
    /// Authorization headers received.
    auth: Vec<String>,
}

struct HubServer {
    endpoint: String,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    /// Serves the fixture model plus `extra` files as `REPO` at `main` and `COMMIT`.
    fn start(extra: &[(&str, Vec<u8>)]) -> Self {
        let mut files = BTreeMap::new();
        let root = fixture_dir();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap().to_str().unwrap();
                    files.insert(rel.replace('\\', "/"), std::fs::read(&path).unwrap());
                }
            }
        }
        for (name, bytes) in extra {
            files.insert(name.to_string(), bytes.clone());
        }
        let state = Arc::new(Mutex::new(State {
            files,
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (st, ep) = (state.clone(), endpoint.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, ep) = (st.clone(), ep.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &st, &ep);
                });
            }
        });
        Self { endpoint, state }
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Paths of the files whose body was requested (range requests past the 1-byte probe).
    fn fetched(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|l| l.contains("/resolve/") && !l.ends_with("bytes=0-0"))
            .map(|l| {
                let path = l.split(' ').nth(1).unwrap();
                let after = path.split("/resolve/").nth(1).unwrap();
                after.split_once('/').unwrap().1.to_string()
            })
            .collect()
    }
}

fn etag_of(bytes: &[u8]) -> String {
    // FNV-1a, twice with different seeds: a stable content id like the hub's sha.
    let mut out = String::new();
    for seed in [0xcbf29ce484222325u64, 0x84222325cbf29ce4] {
        let mut h = seed;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

fn handle(mut stream: TcpStream, state: &Mutex<State>, endpoint: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("authorization") {
                state.lock().unwrap().auth.push(v.trim().to_string());
            }
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    state.lock().unwrap().log.push(format!(
        "{method} {path} {}",
        range.clone().unwrap_or_default()
    ));
    let not_found = |stream: &mut TcpStream, what: &str| {
        let body = format!("{{\"error\":\"{what}\"}}");
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Error-Code: {what}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let revision_ok = |rev: &str| rev == "main" || rev == COMMIT;

    if let Some(rest) = path.strip_prefix(&format!("/api/models/{REPO}/revision/")) {
        if !revision_ok(rest) {
            return not_found(&mut stream, "RevisionNotFound");
        }
        let st = state.lock().unwrap();
        let siblings: Vec<serde_json::Value> = st
            .files
            .iter()
            .map(|(name, bytes)| {
                let mut s = serde_json::json!({ "rfilename": name, "size": bytes.len() });
                if name.ends_with(".safetensors") {
                    s["lfs"] = serde_json::json!({ "sha256": etag_of(bytes), "size": bytes.len() });
                }
                s
            })
            .chain(
                st.unservable
                    .iter()
                    .map(|n| serde_json::json!({ "rfilename": n, "size": 10 })),
            )
            .collect();
        let body =
            serde_json::json!({ "id": REPO, "sha": COMMIT, "siblings": siblings }).to_string();
        return write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    if path.starts_with("/api/") {
        return not_found(&mut stream, "RepoNotFound");
    }
    if let Some(rest) = path.strip_prefix(&format!("/{REPO}/resolve/")) {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        if !revision_ok(rev) {
            return not_found(&mut stream, "RevisionNotFound");
        }
        let bytes = state.lock().unwrap().files.get(file).cloned();
        let Some(bytes) = bytes else {
            return not_found(&mut stream, "EntryNotFound");
        };
        let etag = etag_of(&bytes);
        if file.ends_with(".safetensors") {
            // Large (LFS) files: the hub answers with a redirect to its CDN, naming the
            // content's etag and the commit in headers of the redirect itself.
            return write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {endpoint}/cdn/{etag}?file={file}\r\n\
                 X-Linked-Etag: \"{etag}\"\r\nX-Linked-Size: {}\r\nX-Repo-Commit: {COMMIT}\r\n\
                 ETag: \"redirect-{etag}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
        }
        return send_body(
            &mut stream,
            state,
            file,
            &bytes,
            range.as_deref(),
            &etag,
            true,
        );
    }
    if let Some(etag) = path.strip_prefix("/cdn/") {
        let file = target.split("?file=").nth(1).unwrap_or("").to_string();
        let bytes = state.lock().unwrap().files.get(&file).cloned();
        match bytes {
            Some(bytes) if etag_of(&bytes) == etag => {
                return send_body(
                    &mut stream,
                    state,
                    &file,
                    &bytes,
                    range.as_deref(),
                    etag,
                    false,
                )
            }
            _ => return not_found(&mut stream, "EntryNotFound"),
        }
    }
    not_found(&mut stream, "RepoNotFound")
}

/// A 200, or a 206 for `Range: bytes=a-[b]`; cut off halfway when the file is `drop_once`.
fn send_body(
    stream: &mut TcpStream,
    state: &Mutex<State>,
    file: &str,
    bytes: &[u8],
    range: Option<&str>,
    etag: &str,
    with_commit: bool,
) -> std::io::Result<()> {
    let total = bytes.len();
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(total).min(total);
            (a.min(total), b)
        }
        None => (0, total),
    };
    let body = &bytes[start..end.max(start)];
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let commit = if with_commit {
        format!("X-Repo-Commit: {COMMIT}\r\n")
    } else {
        String::new()
    };
    let (cut, short) = {
        let mut st = state.lock().unwrap();
        let big = body.len() > 1;
        let cut = big && st.drop_once.as_deref() == Some(file);
        let short = big && !cut && st.short_once.as_deref() == Some(file);
        if cut {
            st.drop_once = None;
        }
        if short {
            st.short_once = None;
        }
        (cut, short)
    };
    if short {
        write!(
            stream,
            "HTTP/1.1 {status}\r\nETag: \"{etag}\"\r\n{commit}Connection: close\r\n\r\n"
        )?;
        stream.write_all(&body[..body.len() / 2])?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\nETag: \"{etag}\"\r\n{commit}Content-Range: bytes {start}-{}/{total}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        end.max(start + 1) - 1,
        body.len()
    )?;
    if cut {
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(body)?;
    // Drain anything left so the client sees a clean close.
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(10)));
    let _ = stream.read(&mut [0; 16]);
    Ok(())
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "diffsr-hub-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(server: &HubServer, cache: &Path, dtype: DType) -> HubOptions {
    HubOptions {
        dtype,
        cache_dir: cache.to_path_buf(),
        endpoint: server.endpoint.clone(),
        token: None,
        offline: false,
        refresh: false,
        retries: 0,
        progress: None,
    }
}

fn repo_spec() -> ModelSpec {
    ModelSpec::parse(REPO).unwrap()
}

fn junk() -> (&'static str, Vec<u8>) {
    ("junk/extra-weights.safetensors", vec![7u8; 4096])
}

#[test]
fn pull_fetches_only_what_the_pipeline_needs_and_loads() {
    let server = HubServer::start(&[junk(), ("README.md", b"# tiny".to_vec())]);
    let tmp = Scratch::new("pull");
    let dir = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32)).unwrap();
    assert_eq!(
        dir,
        tmp.0
            .join("models--diffsr-test--tiny-x4/snapshots")
            .join(COMMIT)
    );
    let fetched = server.fetched();
    assert!(
        !fetched
            .iter()
            .any(|f| f.starts_with("junk/") || f == "README.md"),
        "{fetched:?}"
    );
    let mut expected: Vec<String> = Vec::new();
    for f in hub::snapshot_files(&fixture_dir()) {
        expected.push(f.0);
    }
    let mut got: Vec<String> = hub::snapshot_files(&dir).into_iter().map(|f| f.0).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    for f in &got {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(fixture_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    // refs/main points at the commit; no stray ref for the pinned commit; no partial files.
    let refs = tmp.0.join("models--diffsr-test--tiny-x4/refs");
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), COMMIT);
    assert!(!refs.join(COMMIT).exists());
    let blobs = tmp.0.join("models--diffsr-test--tiny-x4/blobs");
    assert!(std::fs::read_dir(blobs)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".part")));
    UpscalePipeline::load(&dir, &LoadOptions::default()).unwrap();
}

#[test]
fn f16_fetches_the_fp16_variant_where_the_repo_has_one() {
    let unet = std::fs::read(fixture_dir().join(UNET)).unwrap();
    let server = HubServer::start(&[(UNET_FP16, unet)]);
    let tmp = Scratch::new("fp16");
    let dir = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F16)).unwrap();
    let fetched = server.fetched();
    assert!(fetched.contains(&UNET_FP16.to_string()), "{fetched:?}");
    assert!(!fetched.contains(&UNET.to_string()), "{fetched:?}");
    // No fp16 VAE in the repo: the f32 one.
    assert!(fetched.contains(&"vae/diffusion_pytorch_model.safetensors".to_string()));
    assert!(dir.join(UNET_FP16).is_file() && !dir.join(UNET).exists());

    // The same cache asked for f32 fetches the f32 UNet and nothing else.
    server.clear_log();
    hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32)).unwrap();
    assert_eq!(server.fetched(), vec![UNET.to_string()]);
}

#[test]
fn a_cached_snapshot_is_used_without_any_request() {
    let server = HubServer::start(&[]);
    let tmp = Scratch::new("cached");
    let first = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32)).unwrap();
    server.clear_log();
    let second = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32)).unwrap();
    assert_eq!(first, second);
    assert_eq!(server.log(), Vec::<String>::new());
    // By commit too.
    let by_commit = ModelSpec::parse(&format!("{REPO}@{COMMIT}")).unwrap();
    assert_eq!(
        hub::resolve(&by_commit, &options(&server, &tmp.0, DType::F32)).unwrap(),
        first
    );
    assert_eq!(server.log(), Vec::<String>::new());
    // A refresh asks the hub for the listing but downloads nothing again.
    let refreshed = hub::pull(
        REPO,
        "main",
        &HubOptions {
            refresh: true,
            ..options(&server, &tmp.0, DType::F32)
        },
    )
    .unwrap();
    assert_eq!(refreshed.downloaded, 0);
    assert_eq!(server.fetched(), Vec::<String>::new());
}

#[test]
fn offline_uses_the_cache_and_says_what_is_missing() {
    let server = HubServer::start(&[]);
    let tmp = Scratch::new("offline");
    let offline = HubOptions {
        offline: true,
        ..options(&server, &tmp.0, DType::F32)
    };
    let err = hub::resolve(&repo_spec(), &offline)
        .unwrap_err()
        .to_string();
    assert!(err.contains(REPO), "{err}");
    assert!(err.contains("not in the cache"), "{err}");
    assert!(err.contains(&format!("diffsr models pull {REPO}")), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(server.log().is_empty());

    let online = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32)).unwrap();
    server.clear_log();
    assert_eq!(hub::resolve(&repo_spec(), &offline).unwrap(), online);
    assert!(server.log().is_empty());

    // A partial cache (a weights file deleted) is reported as such.
    std::fs::remove_file(online.join(UNET)).unwrap();
    let err = hub::resolve(&repo_spec(), &offline)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only part of it is cached"), "{err}");
}

#[test]
fn a_missing_repo_or_revision_is_a_clear_error() {
    let server = HubServer::start(&[]);
    let tmp = Scratch::new("404");
    let spec = ModelSpec::parse("nobody/no-such-model").unwrap();
    let err = hub::resolve(&spec, &options(&server, &tmp.0, DType::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody/no-such-model"), "{err}");
    assert!(err.contains("no such repo"), "{err}");
    let spec = ModelSpec::parse(&format!("{REPO}@no-such-branch")).unwrap();
    let err = hub::resolve(&spec, &options(&server, &tmp.0, DType::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-branch"), "{err}");
    // Nothing half-made is left behind.
    assert!(hub::HubCache::new(tmp.0.clone()).list().unwrap().is_empty());
}

#[test]
fn a_listed_file_the_server_will_not_give_is_named() {
    let server = HubServer::start(&[]);
    {
        let mut st = server.state.lock().unwrap();
        st.files.remove("vae/diffusion_pytorch_model.safetensors");
        st.unservable
            .insert("vae/diffusion_pytorch_model.safetensors".into());
    }
    let tmp = Scratch::new("entry404");
    let err = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vae/diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
}

#[test]
fn a_repo_without_the_pipeline_files_is_rejected_before_downloading() {
    let server = HubServer::start(&[]);
    server.state.lock().unwrap().files.remove(UNET);
    let tmp = Scratch::new("incomplete-repo");
    let err = hub::resolve(&repo_spec(), &options(&server, &tmp.0, DType::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains(UNET), "{err}");
    assert!(server.fetched().is_empty());
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let server = HubServer::start(&[]);
    server.state.lock().unwrap().drop_once = Some(UNET.into());
    let tmp = Scratch::new("resume");
    let dir = hub::resolve(
        &repo_spec(),
        &HubOptions {
            retries: 3,
            ..options(&server, &tmp.0, DType::F32)
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join(UNET)).unwrap(),
        std::fs::read(fixture_dir().join(UNET)).unwrap()
    );
    let half = std::fs::metadata(fixture_dir().join(UNET)).unwrap().len() / 2;
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /cdn/") && l.ends_with(&format!("bytes={half}-"))),
        "no resumed range request in {log:#?}"
    );
}

#[test]
fn a_dropped_connection_without_retries_leaves_nothing_trusted() {
    let server = HubServer::start(&[]);
    server.state.lock().unwrap().drop_once = Some(UNET.into());
    let tmp = Scratch::new("dropped");
    let opts = options(&server, &tmp.0, DType::F32);
    let err = hub::resolve(&repo_spec(), &opts).unwrap_err().to_string();
    assert!(err.contains(UNET), "{err}");
    assert!(err.contains("run the command again"), "{err}");
    // The snapshot has no UNet weights, so neither an offline run nor the pipeline takes the
    // partial download for a model.
    let snapshot = tmp
        .0
        .join("models--diffsr-test--tiny-x4/snapshots")
        .join(COMMIT);
    assert!(!snapshot.join(UNET).exists());
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert!(hub::resolve(&repo_spec(), &offline).is_err());
    // The next run resumes the partial download and gets the right bytes.
    server.clear_log();
    let dir = hub::resolve(&repo_spec(), &opts).unwrap();
    assert_eq!(
        std::fs::read(dir.join(UNET)).unwrap(),
        std::fs::read(fixture_dir().join(UNET)).unwrap()
    );
    let half = std::fs::metadata(fixture_dir().join(UNET)).unwrap().len() / 2;
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /cdn/") && l.ends_with(&format!("bytes={half}-"))),
        "the second run did not resume: {log:#?}"
    );
}

#[test]
fn a_short_body_the_client_cannot_detect_is_caught_by_size_and_removed() {
    let server = HubServer::start(&[]);
    server.state.lock().unwrap().short_once = Some(UNET.into());
    let tmp = Scratch::new("short");
    let opts = options(&server, &tmp.0, DType::F32);
    let err = hub::resolve(&repo_spec(), &opts).unwrap_err().to_string();
    assert!(
        err.contains(UNET) && err.contains("bytes where the hub lists"),
        "{err}"
    );
    let snapshot = tmp
        .0
        .join("models--diffsr-test--tiny-x4/snapshots")
        .join(COMMIT);
    assert!(!snapshot.join(UNET).exists());
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert!(hub::resolve(&repo_spec(), &offline).is_err());
    let dir = hub::resolve(&repo_spec(), &opts).unwrap();
    assert_eq!(
        std::fs::read(dir.join(UNET)).unwrap(),
        std::fs::read(fixture_dir().join(UNET)).unwrap()
    );
}

#[test]
fn progress_is_reported_per_file() {
    let server = HubServer::start(&[]);
    let tmp = Scratch::new("progress");
    type Seen = Vec<(String, u64, u64, bool)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let opts = HubOptions {
        progress: Some(Arc::new(move |p: &hub::DownloadProgress<'_>| {
            sink.lock()
                .unwrap()
                .push((p.file.to_string(), p.downloaded, p.total, p.finished))
        })),
        ..options(&server, &tmp.0, DType::F32)
    };
    hub::resolve(&repo_spec(), &opts).unwrap();
    let seen = seen.lock().unwrap();
    let size = std::fs::metadata(fixture_dir().join(UNET)).unwrap().len();
    assert!(
        seen.contains(&(UNET.to_string(), size, size, true)),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .any(|(f, done, total, fin)| f == UNET && !fin && *done < *total));
}

fn diffsr(server: &HubServer, home: &Path, args: &[&str], offline: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diffsr"));
    cmd.args(args)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env("HF_ENDPOINT", &server.endpoint);
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    cmd.output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn models_pull_list_info_rm_through_the_binary() {
    let server = HubServer::start(&[junk()]);
    let home = Scratch::new("cli");
    let cache = home.0.join("hub");

    let out = diffsr(&server, &home.0, &["models", "list"], false);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");

    let out = diffsr(
        &server,
        &home.0,
        &["models", "pull", REPO, "--quiet"],
        false,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let snapshot = cache
        .join("models--diffsr-test--tiny-x4/snapshots")
        .join(COMMIT);
    assert_eq!(text(&out.stdout).trim(), snapshot.to_str().unwrap());
    assert!(!server.fetched().iter().any(|f| f.starts_with("junk/")));

    let out = diffsr(&server, &home.0, &["models", "list"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.starts_with(&format!("{REPO}\t")), "{listing}");
    assert!(listing.contains("MB"), "{listing}");

    let out = diffsr(&server, &home.0, &["models", "info", REPO], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = text(&out.stdout);
    for want in [
        format!("revision: main -> {COMMIT}"),
        format!(
            "path: {}",
            cache.join("models--diffsr-test--tiny-x4").display()
        ),
        UNET.to_string(),
        "tokenizer/vocab.json".to_string(),
    ] {
        assert!(info.contains(&want), "{want} not in\n{info}");
    }

    let out = diffsr(&server, &home.0, &["models", "rm", REPO], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!cache.join("models--diffsr-test--tiny-x4").exists());
    let out = diffsr(&server, &home.0, &["models", "rm", REPO], true);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not in the cache"));
    let out = diffsr(&server, &home.0, &["models", "info", REPO], true);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!("diffsr models pull {REPO}")));
}

#[test]
fn upscale_takes_a_hub_repo_and_says_what_is_missing_offline() {
    let server = HubServer::start(&[]);
    let home = Scratch::new("cli-upscale");
    let input = fixture_dir().join("../images/astronaut-20x16.png");
    let output = home.0.join("out.png");
    let args = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        REPO,
        "--engine",
        "diffusion",
        "--steps",
        "2",
        "--seed",
        "1",
        "--quiet",
    ];
    let out = diffsr(&server, &home.0, &args, true);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("diffsr models pull {REPO}")), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(server.log().is_empty());
    assert!(!output.exists());

    let out = diffsr(&server, &home.0, &args, false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(output.is_file());

    // A path that looks local but does not exist is named, not looked up on the hub.
    let other = home.0.join("other.png");
    let args_missing = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        other.to_str().unwrap(),
        "--model",
        "./no-such-model",
    ];
    server.clear_log();
    let out = diffsr(&server, &home.0, &args_missing, false);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("./no-such-model"));
    assert!(server.log().is_empty());
}

#[test]
fn hf_hub_cache_and_hf_token_are_honoured() {
    let server = HubServer::start(&[]);
    let home = Scratch::new("env-home");
    let cache = Scratch::new("env-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_diffsr"))
        .args(["models", "pull", REPO, "--quiet"])
        .env("HF_HOME", &home.0)
        .env("HF_HUB_CACHE", &cache.0)
        .env("HF_TOKEN", "hf_test_token")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &server.endpoint)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(cache
        .0
        .join("models--diffsr-test--tiny-x4/snapshots")
        .join(COMMIT)
        .is_dir());
    assert!(!home.0.join("hub").exists());
    let auth = server.state.lock().unwrap().auth.clone();
    assert!(!auth.is_empty());
    assert!(auth.iter().all(|a| a == "Bearer hf_test_token"), "{auth:?}");
}

// Single-file hub models (`owner/name[@revision]:path/in/repo`) for the GAN path.

const GAN: &str = "gan/RealESRGAN_x4plus.pth";
const GAN_ST: &str = "gan/RealESRGAN_x4plus.safetensors";
const NCNN_PARAM: &str = "ncnn/realesr-x4.param";
const NCNN_BIN: &str = "ncnn/realesr-x4.bin";

fn gan_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn gan_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (GAN, gan_bytes(5000, 1)),
        (GAN_ST, gan_bytes(7000, 2)),
        (NCNN_PARAM, b"7767517\n3 3\nInput data 0 1 data\n".to_vec()),
        (NCNN_BIN, gan_bytes(3000, 3)),
    ]
}

fn served(server: &HubServer, file: &str) -> Vec<u8> {
    server.state.lock().unwrap().files[file].clone()
}

fn file_spec(file: &str) -> ModelSpec {
    ModelSpec::parse(&format!("{REPO}:{file}")).unwrap()
}

fn snapshot_of(cache: &Path) -> PathBuf {
    cache
        .join("models--diffsr-test--tiny-x4/snapshots")
        .join(COMMIT)
}

fn no_part_files(cache: &Path) -> bool {
    std::fs::read_dir(cache.join("models--diffsr-test--tiny-x4/blobs"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".part"))
}

#[test]
fn a_single_hub_file_is_downloaded_alone_and_then_used_from_the_cache() {
    let server = HubServer::start(&gan_files());
    let tmp = Scratch::new("file");
    type Seen = Vec<(String, u64, u64, bool)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let opts = HubOptions {
        progress: Some(Arc::new(move |p: &hub::DownloadProgress<'_>| {
            sink.lock()
                .unwrap()
                .push((p.file.to_string(), p.downloaded, p.total, p.finished))
        })),
        ..options(&server, &tmp.0, DType::F32)
    };
    let spec = file_spec(GAN);
    assert!(spec.is_single_file());
    let path = hub::resolve_file(&spec, &opts).unwrap();
    assert_eq!(path, snapshot_of(&tmp.0).join(GAN));
    assert_eq!(std::fs::read(&path).unwrap(), served(&server, GAN));
    // Only that file, nothing of the diffusion model or the other weights.
    assert_eq!(server.fetched(), vec![GAN.to_string()]);
    assert_eq!(
        hub::snapshot_files(&snapshot_of(&tmp.0)),
        vec![(GAN.to_string(), 5000)]
    );
    let refs = tmp.0.join("models--diffsr-test--tiny-x4/refs");
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), COMMIT);
    assert!(!refs.join(COMMIT).exists());
    assert!(no_part_files(&tmp.0));
    assert!(
        seen.lock()
            .unwrap()
            .contains(&(GAN.to_string(), 5000, 5000, true)),
        "{:?}",
        seen.lock().unwrap()
    );

    // Cached: no request at all, offline or not.
    server.clear_log();
    let offline = HubOptions {
        offline: true,
        ..options(&server, &tmp.0, DType::F32)
    };
    assert_eq!(hub::resolve_file(&spec, &offline).unwrap(), path);
    assert_eq!(
        hub::resolve_file(&spec, &options(&server, &tmp.0, DType::F32)).unwrap(),
        path
    );
    assert_eq!(server.log(), Vec::<String>::new());
    let pulled = hub::pull_file(REPO, "main", GAN, &offline).unwrap();
    assert_eq!((pulled.commit.as_str(), pulled.downloaded), (COMMIT, 0));

    // A refresh asks for the listing but downloads nothing again.
    let refreshed = hub::pull_file(
        REPO,
        "main",
        GAN,
        &HubOptions {
            refresh: true,
            ..options(&server, &tmp.0, DType::F32)
        },
    )
    .unwrap();
    assert_eq!(refreshed.downloaded, 0);
    assert_eq!(server.fetched(), Vec::<String>::new());

    // By commit, an LFS file (served through the CDN redirect) into the same snapshot.
    server.clear_log();
    let by_commit = ModelSpec::parse(&format!("{REPO}@{COMMIT}:{GAN_ST}")).unwrap();
    let st = hub::resolve_file(&by_commit, &options(&server, &tmp.0, DType::F32)).unwrap();
    assert_eq!(st, snapshot_of(&tmp.0).join(GAN_ST));
    assert_eq!(std::fs::read(&st).unwrap(), served(&server, GAN_ST));
    assert_eq!(server.fetched(), vec![GAN_ST.to_string()]);
    assert_eq!(hub::resolve_file(&by_commit, &offline).unwrap(), st);
}

#[test]
fn an_ncnn_param_or_bin_brings_its_sibling() {
    let server = HubServer::start(&gan_files());
    let tmp = Scratch::new("ncnn");
    let opts = options(&server, &tmp.0, DType::F32);
    let param = hub::resolve_file(&file_spec(NCNN_PARAM), &opts).unwrap();
    assert_eq!(param, snapshot_of(&tmp.0).join(NCNN_PARAM));
    let bin = param.with_extension("bin");
    assert_eq!(std::fs::read(&param).unwrap(), served(&server, NCNN_PARAM));
    assert_eq!(std::fs::read(&bin).unwrap(), served(&server, NCNN_BIN));
    let mut fetched = server.fetched();
    fetched.sort();
    assert_eq!(fetched, vec![NCNN_BIN.to_string(), NCNN_PARAM.to_string()]);

    // Either name works offline from the cache, returning the one named.
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    server.clear_log();
    assert_eq!(
        hub::resolve_file(&file_spec(NCNN_BIN), &offline).unwrap(),
        bin
    );
    assert_eq!(
        hub::resolve_file(&file_spec(NCNN_PARAM), &offline).unwrap(),
        param
    );
    assert!(server.log().is_empty());

    // Starting from the `.bin` fetches the `.param` too.
    let tmp2 = Scratch::new("ncnn-bin");
    let opts2 = options(&server, &tmp2.0, DType::F32);
    let bin2 = hub::resolve_file(&file_spec(NCNN_BIN), &opts2).unwrap();
    assert_eq!(bin2, snapshot_of(&tmp2.0).join(NCNN_BIN));
    assert!(snapshot_of(&tmp2.0).join(NCNN_PARAM).is_file());

    // A cached `.param` without its `.bin` is not taken for complete offline.
    std::fs::remove_file(&bin2).unwrap();
    let err = hub::resolve_file(
        &file_spec(NCNN_PARAM),
        &HubOptions {
            offline: true,
            ..opts2.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(NCNN_PARAM) && err.contains("sibling"), "{err}");
    // Online, the missing half is fetched again.
    server.clear_log();
    hub::resolve_file(&file_spec(NCNN_PARAM), &opts2).unwrap();
    assert_eq!(server.fetched(), vec![NCNN_BIN.to_string()]);
}

#[test]
fn an_ncnn_param_without_weights_is_an_error_and_a_lone_bin_is_fine() {
    let server = HubServer::start(&[
        ("lone/graph.param", b"7767517\n".to_vec()),
        ("torch/pytorch_model.bin", gan_bytes(100, 4)),
    ]);
    let tmp = Scratch::new("ncnn-missing");
    let opts = options(&server, &tmp.0, DType::F32);
    let err = hub::resolve_file(&file_spec("lone/graph.param"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lone/graph.bin"), "{err}");
    assert!(server.fetched().is_empty());
    // A `.bin` with no `.param` (a PyTorch pickle) is fetched alone.
    let bin = hub::resolve_file(&file_spec("torch/pytorch_model.bin"), &opts).unwrap();
    assert_eq!(std::fs::read(bin).unwrap(), gan_bytes(100, 4));
    assert_eq!(
        server.fetched(),
        vec!["torch/pytorch_model.bin".to_string()]
    );
}

#[test]
fn a_missing_hub_file_repo_or_cache_entry_is_a_clear_error() {
    let server = HubServer::start(&gan_files());
    let tmp = Scratch::new("file-404");
    let opts = options(&server, &tmp.0, DType::F32);

    let err = hub::resolve_file(&file_spec("gan/no-such.pth"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains(REPO), "{err}");
    assert!(err.contains("no file `gan/no-such.pth`"), "{err}");
    // It lists some of the repo's weight files, not its configs.
    assert!(err.contains(GAN) && err.contains(NCNN_PARAM), "{err}");
    assert!(!err.contains("model_index.json"), "{err}");
    assert!(server.fetched().is_empty());

    let spec = ModelSpec::parse("nobody/no-such-model:x4.pth").unwrap();
    let err = hub::resolve_file(&spec, &opts).unwrap_err().to_string();
    assert!(
        err.contains("nobody/no-such-model") && err.contains("no such repo"),
        "{err}"
    );
    let spec = ModelSpec::parse(&format!("{REPO}@no-such-branch:{GAN}")).unwrap();
    let err = hub::resolve_file(&spec, &opts).unwrap_err().to_string();
    assert!(err.contains("no-such-branch"), "{err}");
    assert!(hub::HubCache::new(tmp.0.clone()).list().unwrap().is_empty());

    server.clear_log();
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let err = hub::resolve_file(&file_spec(GAN), &offline)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(GAN) && err.contains("not in the cache"),
        "{err}"
    );
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    // A cached snapshot without that file is no help offline either.
    hub::resolve_file(&file_spec(GAN_ST), &opts).unwrap();
    let err = hub::resolve_file(&file_spec(GAN), &offline)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(GAN) && err.contains("not in the cache"),
        "{err}"
    );
    assert!(!server.log().iter().any(|l| l.contains(GAN)));
}

#[test]
fn single_file_specs_and_the_diffusion_resolver_keep_apart() {
    let server = HubServer::start(&gan_files());
    let tmp = Scratch::new("file-kinds");
    let opts = options(&server, &tmp.0, DType::F32);
    // The diffusion pipeline's resolver refuses a single file without asking the hub.
    let err = hub::resolve(&file_spec(GAN), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a single file, not a diffusion model directory"),
        "{err}"
    );
    assert!(server.log().is_empty());
    // resolve_file refuses a repo or a directory, and checks a local file is readable.
    let err = hub::resolve_file(&repo_spec(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{REPO}:path/in/repo")), "{err}");
    assert!(hub::resolve_file(&ModelSpec::Dir(tmp.0.clone()), &opts).is_err());
    let local = tmp.0.join("w.pth");
    assert!(hub::resolve_file(&ModelSpec::File(local.clone()), &opts).is_err());
    std::fs::write(&local, b"w").unwrap();
    assert_eq!(
        hub::resolve_file(&ModelSpec::File(local.clone()), &opts).unwrap(),
        local
    );
    assert!(server.log().is_empty());
}

#[test]
fn a_broken_single_file_download_is_resumed_or_caught_by_size() {
    let server = HubServer::start(&gan_files());
    let tmp = Scratch::new("file-broken");
    let opts = options(&server, &tmp.0, DType::F32);
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };

    // Dropped mid-body without retries: an error, nothing trusted, then resumed.
    server.state.lock().unwrap().drop_once = Some(GAN_ST.into());
    let err = hub::resolve_file(&file_spec(GAN_ST), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(GAN_ST) && err.contains("run the command again"),
        "{err}"
    );
    assert!(!snapshot_of(&tmp.0).join(GAN_ST).exists());
    assert!(hub::resolve_file(&file_spec(GAN_ST), &offline).is_err());
    server.clear_log();
    let path = hub::resolve_file(&file_spec(GAN_ST), &opts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), served(&server, GAN_ST));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /cdn/") && l.ends_with("bytes=3500-")),
        "the second run did not resume: {log:#?}"
    );
    assert!(no_part_files(&tmp.0));

    // A short body the client cannot detect: caught by the listed size and removed.
    server.state.lock().unwrap().short_once = Some(GAN.into());
    let err = hub::resolve_file(&file_spec(GAN), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(GAN) && err.contains("bytes where the hub lists"),
        "{err}"
    );
    assert!(!snapshot_of(&tmp.0).join(GAN).exists());
    assert!(hub::resolve_file(&file_spec(GAN), &offline).is_err());
    let path = hub::resolve_file(&file_spec(GAN), &opts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), served(&server, GAN));
}
