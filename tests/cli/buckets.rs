//! Bucket copies between two clouds' object storage, against two moto servers (ci/moto.sh): a
//! prefix of 1,000+ small objects (more than one listing page) and multipart objects moved and
//! verified against ferry's manifest; kill -9 in the middle of a multipart object and a resume
//! that continues it from its next part; metadata and content type kept; objects changed,
//! deleted or added on the target found by `ferry migrate verify`; a listing that fails mid-way
//! stops the copy before anything is written, throttling is retried and counted (both injected
//! by a proxy in front of moto); missing credentials and an unreachable endpoint named at plan
//! time.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Moto, Workspace};

const SMALL: usize = 1030;
const MIB: usize = 1024 * 1024;

/// Fills `bucket` on `moto` under `docs/`: SMALL small objects (a few with a content type and
/// user metadata), one more that is copied first, three objects of three 5 MiB parts and one of
/// twelve.
fn fill(moto: &Moto, bucket: &str) {
    moto.py(&format!(
        r#"
from concurrent.futures import ThreadPoolExecutor
s3.create_bucket(Bucket='{bucket}')
def small(i):
    key = f'docs/note-{{i:05d}}.txt'
    body = (f'patient note {{i}} ' * (i % 40 + 1)).encode()
    extra = {{}}
    if i % 100 == 0:
        extra = dict(ContentType='application/pdf', Metadata={{'patient-class': f'c{{i}}'}}, CacheControl='no-store')
    s3.put_object(Bucket='{bucket}', Key=key, Body=body, **extra)
with ThreadPoolExecutor(16) as ex:
    list(ex.map(small, range({SMALL})))
import os
s3.put_object(Bucket='{bucket}', Key='docs/a-first.txt', Body=b'first')
for name, parts in [('a', 3), ('b', 3), ('c', 3), ('huge', 12)]:
    size = parts * {MIB} * 5 - 12345
    body = (name.encode() * (size // len(name) + 1))[:size]
    body = bytes((b + (i // 4096)) % 256 for i, b in enumerate(body[:65536])) + body[65536:]
    s3.put_object(Bucket='{bucket}', Key=f'docs/big/{{name}}.bin', Body=body, ContentType='application/octet-stream', Metadata={{'scan': name}})
"#
    ));
}

/// Size and SHA-256 of every object under `prefix` (key without the prefix), computed by boto3.
fn digests(moto: &Moto, bucket: &str, prefix: &str) -> Vec<(String, u64, String)> {
    let out = moto.py(&format!(
        r#"
import hashlib
from concurrent.futures import ThreadPoolExecutor
keys = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):
    keys += [o['Key'] for o in page.get('Contents', [])]
def one(k):
    b = s3.get_object(Bucket='{bucket}', Key=k)['Body'].read()
    return [k[len('{prefix}'):], len(b), hashlib.sha256(b).hexdigest()]
with ThreadPoolExecutor(16) as ex:
    print(json.dumps(sorted(ex.map(one, keys))))
"#
    ));
    serde_json::from_str(out.trim()).unwrap()
}

/// The demo workspace with two AWS clouds (one moto each) and a bucket in each.
fn workspace(a: &str, b: &str) -> Workspace {
    let ws = Workspace::new();
    let inv = Workspace::inventory("").replace(
        "clouds:\n",
        &format!(
            "clouds:\n  - {{ id: onprem-s3, kind: aws, aws: {{ account: \"111111111111\", region: us-east-1, endpoint_url: \"{a}\", max_attempts: 4, timeout_seconds: 20 }} }}\n  - {{ id: cloud-s3, kind: aws, aws: {{ account: \"222222222222\", region: us-west-2, endpoint_url: \"{b}\", access_key_id: \"file:cloud.key\", secret_access_key: \"file:cloud.secret\", max_attempts: 4, timeout_seconds: 20 }} }}\n"
        ),
    );
    let inv = format!(
        "{inv}buckets:\n  - {{ id: docs-onprem, cloud: onprem-s3, name: ehr-docs }}\n  - {{ id: docs-cloud, cloud: cloud-s3, name: ehr-docs-cloud }}\n"
    );
    ws.write("inventory.yaml", &inv);
    ws.write("cloud.key", "testing\n");
    ws.write("cloud.secret", "testing\n");
    ws
}

fn plan(name: &str, extra: &str) -> String {
    format!(
        "version: 1\nkind: migration\nname: {name}\nbuckets:\n  - {{ name: docs, source: docs-onprem, prefix: docs/, target: docs-cloud, target_prefix: moved/, part_size_mib: 5, max_parallel: 4{extra} }}\n"
    )
}

fn creds(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("FERRY_S3_BACKOFF_MS", "20")
}

fn run(ws: &Workspace, args: &[&str]) -> crate::support::Run {
    crate::support::Run(creds(&mut ws.cmd(args)).output().expect("ferry runs"))
}

/// `ferry plan` of `plans/NAME.yaml` into `NAME.json`, with the clouds' credentials.
fn plan_file(ws: &Workspace, name: &str) -> crate::support::Run {
    let (yaml, json) = (format!("plans/{name}.yaml"), format!("{name}.json"));
    run(ws, &["plan", "-i", "inventory.yaml", &yaml, "-o", &json])
}

fn wait_for(ws: &Workspace, what: impl Fn(&[serde_json::Value]) -> bool, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if what(&ws.ledger()) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {why}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The whole copy: kill -9 in the middle of the twelve-part object, a resume that keeps the parts
/// stored and sends only the others, every object on the target equal to its source (checked by
/// boto3, not by ferry), metadata and content type kept with the SHA-256 added, no upload left
/// open, the manifest's text hashing to the root the ledger holds; then objects changed, deleted
/// and added on the target are each named by `ferry migrate verify`.
#[test]
fn a_bucket_moves_between_clouds_and_a_killed_multipart_upload_resumes_from_its_next_part() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Moto::start("127.62.0.1"));
        let b = s.spawn(|| Moto::start("127.62.0.2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    fill(&a, "ehr-docs");
    b.py("s3.create_bucket(Bucket='ehr-docs-cloud')");
    let ws = workspace(&a.url(), &b.url());
    ws.write("plans/move.yaml", &plan("move", ""));
    plan_file(&ws, "move")
        .expect_code(2)
        .stdout_has("bucket.copy");

    let huge = "moved/big/huge.bin";
    let mut child = creds(&mut ws.cmd(&["apply", "move.json"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once an object is finished and the twelve-part one is part way (the small
    // `a-first.txt` is copied first; the big ones start with it).
    wait_for(
        &ws,
        |l| {
            l.iter().any(|e| e["event"] == "object_copied")
                && l.iter()
                    .any(|e| e["event"] == "part_copied" && e["detail"]["key"] == huge)
        },
        "an object finished and a part of the twelve-part object",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before: Vec<u64> = ws
        .events("part_copied")
        .iter()
        .filter(|e| e["detail"]["key"] == huge)
        .map(|e| e["detail"]["part"].as_u64().unwrap())
        .collect();
    assert!(
        !before.is_empty() && before.len() < 12,
        "killed mid-object: {before:?}"
    );
    assert!(
        ws.events("object_copied")
            .iter()
            .all(|e| e["detail"]["key"] != huge),
        "the object was not finished"
    );

    let copied_before = ws.events("object_copied").len();
    let resumed = run(&ws, &["apply", "--resume", "move.json"]);
    resumed
        .expect_code(0)
        .stderr_has("every one matches the manifest")
        .stderr_has(&format!("{} kept", copied_before));
    assert!(
        copied_before > 0,
        "objects finished before the kill are kept"
    );

    // The upload went on: one upload id, every part recorded once, the stored ones not sent
    // again.
    let started: Vec<_> = ws
        .events("upload_started")
        .into_iter()
        .filter(|e| e["detail"]["key"] == huge)
        .collect();
    assert_eq!(
        started.len(),
        1,
        "the upload was continued, not begun again"
    );
    let mut parts: Vec<u64> = ws
        .events("part_copied")
        .iter()
        .filter(|e| e["detail"]["key"] == huge)
        .map(|e| e["detail"]["part"].as_u64().unwrap())
        .collect();
    let recorded = parts.len();
    parts.sort_unstable();
    parts.dedup();
    assert_eq!(parts, (1..=12).collect::<Vec<_>>());
    assert_eq!(recorded, 12, "no part sent (and recorded) twice");
    let done = ws
        .events("object_copied")
        .into_iter()
        .find(|e| e["detail"]["key"] == huge)
        .unwrap();
    assert_eq!(done["detail"]["parts"], 12);
    assert_eq!(
        done["detail"]["parts_resumed"].as_u64().unwrap(),
        before.len() as u64
    );

    // Every object arrived, byte for byte, as boto3 reads both sides.
    let source = digests(&a, "ehr-docs", "docs/");
    let target = digests(&b, "ehr-docs-cloud", "moved/");
    assert_eq!(source.len(), SMALL + 5);
    assert_eq!(source, target);

    // Content type, user metadata and cache control kept; ferry's SHA-256 added, single part and
    // multipart alike; no multipart upload left open on the target.
    let heads = b.py(r#"
out = {}
for k in ['moved/note-00100.txt', 'moved/big/a.bin', 'moved/big/huge.bin']:
    h = s3.head_object(Bucket='ehr-docs-cloud', Key=k)
    out[k] = [h.get('ContentType'), h.get('Metadata'), h.get('CacheControl')]
out['uploads'] = len(s3.list_multipart_uploads(Bucket='ehr-docs-cloud').get('Uploads', []))
print(json.dumps(out))
"#);
    let heads: serde_json::Value = serde_json::from_str(heads.trim()).unwrap();
    let sha = |key: &str| {
        target
            .iter()
            .find(|t| t.0 == key)
            .map(|t| t.2.clone())
            .unwrap()
    };
    let note = &heads["moved/note-00100.txt"];
    assert_eq!(note[0], "application/pdf");
    assert_eq!(note[1]["patient-class"], "c100");
    assert_eq!(note[1]["ferry-sha256"], sha("note-00100.txt"));
    assert_eq!(note[2], "no-store");
    let big = &heads["moved/big/a.bin"];
    assert_eq!(big[0], "application/octet-stream");
    assert_eq!(big[1]["scan"], "a");
    assert_eq!(big[1]["ferry-sha256"], sha("big/a.bin"));
    assert_eq!(
        heads["moved/big/huge.bin"][1]["ferry-sha256"],
        sha("big/huge.bin")
    );
    assert_eq!(heads["uploads"], 0, "no upload left open");

    // The manifest the ledger's records make hashes to the root the copy recorded.
    let manifest = run(&ws, &["migrate", "manifest", "move.json", "docs"]);
    manifest.expect_code(0);
    let text = manifest.stdout();
    assert_eq!(text.lines().count(), SMALL + 5);
    use sha2::Digest;
    let root = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let written = ws.events("manifest_written");
    assert_eq!(written.last().unwrap()["detail"]["root"], root);
    assert!(text.contains(&format!("{} ", sha("big/huge.bin"))));

    // An object changed, one deleted and one added on the target after the copy: each named.
    b.py(
        "s3.put_object(Bucket='ehr-docs-cloud', Key='moved/note-00007.txt', Body=b'tampered')\ns3.delete_object(Bucket='ehr-docs-cloud', Key='moved/big/b.bin')\ns3.put_object(Bucket='ehr-docs-cloud', Key='moved/stray.txt', Body=b'x')",
    );
    let v = run(&ws, &["migrate", "verify", "move.json"]);
    v.expect_code(5);
    for needle in [
        "`moved/note-00007.txt` differs",
        "`moved/big/b.bin` is missing on the target",
        "`moved/stray.txt` is on the target but not in the manifest",
    ] {
        v.stdout_has(needle);
    }
    let report = run(&ws, &["migrate", "report", "move.json"]);
    report
        .expect_code(0)
        .stdout_has(&root)
        .stdout_has("3 problem(s)");

    // The guide's data migration section lists the copy: objects, bytes, root, verification.
    run(
        &ws,
        &["dibr", "-i", "inventory.yaml", "move.json", "-o", "dibr"],
    )
    .expect_code(0);
    let md = std::fs::read_to_string(ws.path().join("dibr/dibr.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| `docs` |"))
        .expect("a row for the copy");
    for needle in [
        format!("| {} |", SMALL + 5),
        format!("`{root}`"),
        "3 problem(s)".to_owned(),
    ] {
        assert!(row.contains(&needle), "{needle} in {row}");
    }
    assert!(md.contains("`moved/big/b.bin` is missing on the target"));
}

/// Two buckets of one storage (the same endpoint, account and region): the storage copies each
/// object itself; ferry reads the source only to hash it, and the copy verifies like any other.
#[test]
fn buckets_of_one_storage_are_copied_by_the_storage_itself() {
    let a = Moto::start("127.62.3.1");
    a.py(
        "s3.create_bucket(Bucket='ehr-docs')\ns3.create_bucket(Bucket='ehr-docs-archive')\nfor i in range(30):\n    s3.put_object(Bucket='ehr-docs', Key=f'docs/{i:03d}', Body=(str(i) * 1000).encode(), ContentType='text/plain', Metadata={'n': str(i)})\ns3.put_object(Bucket='ehr-docs', Key='docs/big.bin', Body=b'z' * (12 * 1024 * 1024))",
    );
    let ws = workspace(&a.url(), &a.url());
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml"))
        .unwrap()
        .replace(
            "{ id: docs-cloud, cloud: cloud-s3, name: ehr-docs-cloud }",
            "{ id: docs-cloud, cloud: onprem-s3, name: ehr-docs-archive }",
        );
    ws.write("inventory.yaml", &inv);
    ws.write("plans/keep.yaml", &plan("keep", ""));
    plan_file(&ws, "keep")
        .expect_code(2)
        .stdout_has("by the storage itself");
    run(&ws, &["apply", "keep.json"])
        .expect_code(0)
        .stderr_has("every one matches the manifest");
    let copied = ws.events("object_copied");
    assert_eq!(copied.len(), 31);
    assert!(copied.iter().all(|e| e["detail"]["server_side"] == true));
    assert!(
        ws.events("upload_started").is_empty(),
        "nothing uploaded through ferry"
    );
    assert_eq!(
        digests(&a, "ehr-docs", "docs/"),
        digests(&a, "ehr-docs-archive", "moved/")
    );
    let head = a.py(
        "h = s3.head_object(Bucket='ehr-docs-archive', Key='moved/007')\nprint(json.dumps([h['ContentType'], h['Metadata']]))",
    );
    let head: serde_json::Value = serde_json::from_str(head.trim()).unwrap();
    assert_eq!(head[0], "text/plain");
    assert_eq!(head[1]["n"], "7");
    assert_eq!(head[1]["ferry-sha256"].as_str().unwrap().len(), 64);
}

/// A proxy in front of a moto server that fails what the test asks: the next N reads of an
/// object with 503 SlowDown, or every listing page after the first with 500.
struct Faults {
    port: u16,
    slowdowns: Arc<AtomicUsize>,
    fail_pages: Arc<AtomicBool>,
    throttled: Arc<AtomicUsize>,
}

impl Faults {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let slowdowns = Arc::new(AtomicUsize::new(0));
        let fail_pages = Arc::new(AtomicBool::new(false));
        let throttled = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let (s, f, t) = (slowdowns.clone(), fail_pages.clone(), throttled.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, f, t, up) = (s.clone(), f.clone(), t.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &s, &f, &t);
                });
            }
        });
        Self {
            port,
            slowdowns,
            fail_pages,
            throttled,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One request per connection: read it, answer with a fault or moto's answer, close.
fn serve(
    mut conn: TcpStream,
    upstream: &str,
    slowdowns: &AtomicUsize,
    fail_pages: &AtomicBool,
    throttled: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = head.lines().next().unwrap_or_default().to_owned();
    let fault = |status: &str, code: &str| {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test</Message><RequestId>t</RequestId></Error>"
        );
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let listing = line.contains("list-type=2");
    if !listing
        && slowdowns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        throttled.fetch_add(1, Ordering::SeqCst);
        return conn.write_all(fault("503 Slow Down", "SlowDown").as_bytes());
    }
    if fail_pages.load(Ordering::SeqCst) && line.contains("continuation-token") {
        return conn.write_all(fault("500 Internal Server Error", "InternalError").as_bytes());
    }
    // Forward with `Connection: close`, so the answer ends where the stream does.
    let head = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&buf[head_end..])?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    conn.write_all(&answer)
}

/// A listing that fails on its second page stops the copy before any object is written (never
/// "the bucket is empty", never a partial copy); throttling injected afterwards is retried with
/// backoff, counted in the ledger, and the copy completes.
#[test]
fn a_failed_listing_copies_nothing_and_throttling_is_retried_and_counted() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Moto::start("127.62.1.1"));
        let b = s.spawn(|| Moto::start("127.62.1.2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.py(&format!(
        "from concurrent.futures import ThreadPoolExecutor\ns3.create_bucket(Bucket='ehr-docs')\nwith ThreadPoolExecutor(16) as ex:\n    list(ex.map(lambda i: s3.put_object(Bucket='ehr-docs', Key=f'docs/{{i:05d}}', Body=str(i).encode()), range({SMALL})))"
    ));
    b.py("s3.create_bucket(Bucket='ehr-docs-cloud')");
    let proxy = Faults::start(&a.url());
    let ws = workspace(&proxy.url(), &b.url());

    ws.write("plans/cut.yaml", &plan("cut", ""));
    plan_file(&ws, "cut").expect_code(2);
    proxy.fail_pages.store(true, Ordering::SeqCst);
    let r = run(&ws, &["apply", "cut.json"]);
    r.expect_code(5)
        .stderr_has("listing (after 1000 object(s); nothing taken as empty)");
    assert!(ws.events("object_copied").is_empty(), "nothing copied");
    let on_target = b.py("print(s3.list_objects_v2(Bucket='ehr-docs-cloud').get('KeyCount', 0))");
    assert_eq!(on_target.trim(), "0", "the target holds nothing");

    proxy.fail_pages.store(false, Ordering::SeqCst);
    // Fewer faults than a call's attempts (4): whichever objects meet them, each succeeds.
    proxy.slowdowns.store(3, Ordering::SeqCst);
    let r = run(&ws, &["apply", "--resume", "cut.json"]);
    r.expect_code(0);
    assert_eq!(
        proxy.throttled.load(Ordering::SeqCst),
        3,
        "every fault was met"
    );
    let step = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["detail"]["root"].is_string())
        .unwrap();
    assert_eq!(step["detail"]["retries"], 3, "each retry counted: {step}");
    assert_eq!(step["detail"]["objects"], SMALL as u64);
    let per_object: u64 = ws
        .events("object_copied")
        .iter()
        .map(|e| e["detail"]["retries"].as_u64().unwrap())
        .sum();
    assert_eq!(per_object, 3, "each object records its own retries");

    // Objects only on the target: kept (and named by the verification) unless the plan says to
    // delete them; then only once the deletion is confirmed.
    b.py("s3.put_object(Bucket='ehr-docs-cloud', Key='moved/stray', Body=b'x')");
    ws.write("plans/prune.yaml", &plan("prune", ", delete_extra: true"));
    plan_file(&ws, "prune").expect_code(2);
    run(&ws, &["apply", "prune.json"]).stdout_has("confirm-delete-docs");
    let stray = || {
        b.py("print(s3.list_objects_v2(Bucket='ehr-docs-cloud', Prefix='moved/stray').get('KeyCount', 0))")
            .trim()
            .to_owned()
    };
    assert_eq!(stray(), "1", "nothing deleted before the confirmation");
    run(
        &ws,
        &[
            "apply",
            "--resume",
            "--confirm",
            "confirm-delete-docs",
            "prune.json",
        ],
    )
    .expect_code(0)
    .stderr_has("every one matches the manifest");
    assert_eq!(stray(), "0");
    let deleted = ws.events("objects_deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        deleted[0]["detail"]["keys"],
        serde_json::json!(["moved/stray"])
    );
}

/// A plan is not written while a bucket cannot be reached or its credentials are missing: every
/// such problem is named at once, with the copy, the side, the cloud and the reference.
#[test]
fn missing_credentials_and_an_unreachable_endpoint_are_named_at_plan_time() {
    let a = Moto::start("127.62.2.1");
    a.py("s3.create_bucket(Bucket='ehr-docs')");
    let ws = Workspace::new();
    let inv = Workspace::inventory("").replace(
        "clouds:\n",
        &format!(
            "clouds:\n  - {{ id: onprem-s3, kind: aws, aws: {{ account: \"111111111111\", region: us-east-1, endpoint_url: \"{}\", max_attempts: 1, timeout_seconds: 5 }} }}\n  - {{ id: gone, kind: aws, aws: {{ account: \"222222222222\", region: us-east-1, endpoint_url: \"http://127.62.2.9:9\", max_attempts: 2, timeout_seconds: 3 }} }}\n  - {{ id: nokey, kind: aws, aws: {{ account: \"333333333333\", region: us-east-1, endpoint_url: \"{}\", access_key_id: \"env:FERRY_TEST_NO_SUCH_KEY\", secret_access_key: \"env:FERRY_TEST_NO_SUCH_KEY\" }} }}\n",
            a.url(),
            a.url()
        ),
    );
    let inv = format!(
        "{inv}buckets:\n  - {{ id: src, cloud: onprem-s3, name: ehr-docs }}\n  - {{ id: far, cloud: gone, name: x }}\n  - {{ id: locked, cloud: nokey, name: y }}\n"
    );
    ws.write("inventory.yaml", &inv);
    ws.write(
        "plans/bad.yaml",
        "version: 1\nkind: migration\nname: bad\nbuckets:\n  - { name: one, source: src, target: far }\n  - { name: two, source: src, target: locked }\n",
    );
    let r = plan_file(&ws, "bad");
    r.expect_code(1)
        .stderr_has("2 bucket problem(s)")
        .stderr_has("copy `one`, target bucket `far`")
        .stderr_has("http://127.62.2.9:9")
        .stderr_has("copy `two`, target bucket `locked`")
        .stderr_has("AWS credentials for cloud `nokey` are missing")
        .stderr_has("FERRY_TEST_NO_SUCH_KEY");
    assert!(!ws.path().join("bad.json").exists(), "no plan written");
}
