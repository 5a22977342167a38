use super::*;

fn spec(src_prefix: &str, dst_prefix: &str) -> BucketSpec {
    let end = |bucket: &str, prefix: &str| BucketEnd {
        bucket: bucket.into(),
        cloud: format!("{bucket}-cloud"),
        name: format!("{bucket}-name"),
        prefix: prefix.into(),
    };
    BucketSpec {
        name: "docs".into(),
        source: end("src", src_prefix),
        target: end("dst", dst_prefix),
        delete_extra: false,
        max_parallel: 4,
        part_size: 8 * MIB,
        same_storage: false,
    }
}

fn listed(key: &str, size: u64, etag: &str) -> Listed {
    Listed {
        key: key.into(),
        size,
        etag: etag.into(),
    }
}

fn copied(key: &str, size: u64, source_etag: &str, etag: &str) -> ObjectCopied {
    ObjectCopied {
        copy: "docs".into(),
        source_key: format!("in/{}", key.trim_start_matches("out/")),
        key: key.into(),
        size,
        sha256: format!("{:0>64}", size),
        source_etag: source_etag.into(),
        etag: etag.into(),
        parts: 0,
        parts_resumed: 0,
        sha256_in_metadata: true,
        server_side: false,
        retries: 0,
        ms: 1,
    }
}

#[test]
fn keys_move_from_the_source_prefix_to_the_target_prefix() {
    let s = spec("in/", "out/");
    assert_eq!(s.target_key("in/a/b.pdf").as_deref(), Some("out/a/b.pdf"));
    assert_eq!(s.target_key("other/a"), None);
    assert_eq!(spec("", "").target_key("x").as_deref(), Some("x"));
}

/// Parts are the plan's size until an object would need more than 10,000 of them; never below
/// S3's 5 MiB minimum.
#[test]
fn part_size_keeps_an_upload_within_ten_thousand_parts() {
    let s = spec("", "");
    assert_eq!(s.part_size_for(100 * MIB), 8 * MIB);
    let huge = 200 * 1024 * MIB; // 200 GiB
    let p = s.part_size_for(huge);
    assert!(part_count(huge, p) <= MAX_PARTS, "{p}");
    assert_eq!(p % MIB, 0);
    let mut small = s.clone();
    small.part_size = MIB;
    assert_eq!(small.part_size_for(10 * MIB), MIN_PART);
    assert_eq!(part_count(0, MIN_PART), 1);
    assert_eq!(part_count(11 * MIB, 5 * MIB), 3);
    assert!(s.single_request(8 * MIB) && !s.single_request(8 * MIB + 1));
}

/// A resumed copy keeps what an earlier run copied only when neither side changed since; a
/// changed source, a target overwritten or deleted since, is copied again.
#[test]
fn a_resumed_copy_keeps_only_unchanged_objects() {
    let s = spec("in/", "out/");
    let source = vec![
        listed("in/a", 1, "e1"),
        listed("in/b", 2, "e2-new"),
        listed("in/c", 3, "e3"),
        listed("in/d", 4, "e4"),
        listed("in/e", 5, "e5"),
    ];
    let target = vec![
        listed("out/a", 1, "t1"),
        listed("out/b", 2, "t2"),
        listed("out/c", 3, "t3-overwritten"),
        listed("out/zz", 9, "t9"),
    ];
    let done: BTreeMap<String, ObjectCopied> = [
        copied("out/a", 1, "e1", "t1"),
        copied("out/b", 2, "e2", "t2"),
        copied("out/c", 3, "e3", "t3"),
        copied("out/d", 4, "e4", "t4"),
    ]
    .into_iter()
    .map(|c| (c.key.clone(), c))
    .collect();
    let w = copy_work(&s, &source, &target, &done);
    let keys = |v: &[Listed]| v.iter().map(|l| l.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&w.copy), ["in/b", "in/c", "in/d", "in/e"]);
    assert_eq!(
        w.kept.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["out/a"]
    );
    assert_eq!(w.extra, ["out/zz"]);
}

/// The manifest is sorted by key, one line per object with the key as a JSON string (a newline
/// in a key cannot forge a line), and its root is the SHA-256 of that text.
#[test]
fn the_manifest_is_sorted_and_its_root_is_the_digest_of_its_text() {
    let a = copied("out/b", 2, "e", "t");
    let b = copied("out/a\nfake 1 \"x\"", 1, "e", "t");
    let m = Manifest::of([&a, &b]);
    let text = m.text();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(r#""out/a\nfake 1 \"x\"""#)
    );
    assert_eq!(m.root(), hex::encode(Sha256::digest(text.as_bytes())));
    assert_eq!(m.bytes(), 3);
    let m2 = Manifest::of([&b, &a]);
    assert_eq!(m.root(), m2.root(), "order of records does not matter");
}

/// Every kind of problem is found and named by key; a clean target passes.
#[test]
fn verification_names_every_missing_extra_different_and_changed_key() {
    let s = spec("in/", "out/");
    let recs = [
        copied("out/a", 1, "e1", "t1"),
        copied("out/b", 2, "e2", "t2"),
        copied("out/c", 3, "e3", "t3"),
    ];
    let m = Manifest::of(&recs);
    let found = |entries: &[(&str, u64, String)]| {
        entries
            .iter()
            .map(|(k, size, sha)| {
                (
                    k.to_string(),
                    Found {
                        size: *size,
                        sha256: sha.clone(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let sha = |n: u64| format!("{n:0>64}");
    let source = vec![
        listed("in/a", 1, "e1"),
        listed("in/b", 2, "e2"),
        listed("in/c", 3, "e3"),
    ];
    let clean = judge(
        &s,
        &m,
        &found(&[
            ("out/a", 1, sha(1)),
            ("out/b", 2, sha(2)),
            ("out/c", 3, sha(3)),
        ]),
        &source,
    );
    assert!(clean.passed(), "{}", clean.verdict());
    assert!(clean.verdict().contains("3 object(s), 6 byte(s)"));

    let mut source = source;
    source[0].etag = "e1-changed".into();
    source.push(listed("in/new", 7, "e7"));
    source.push(listed("elsewhere/x", 7, "e8"));
    let bad = judge(
        &s,
        &m,
        &found(&[
            ("out/b", 2, sha(9)),
            ("out/c", 3, sha(3)),
            ("out/x", 1, sha(1)),
        ]),
        &source,
    );
    let v = bad.verdict();
    for needle in [
        "`out/a` is missing",
        "`out/b` differs",
        "`out/x` is on the target but not in the manifest",
        "`in/a` changed on the source",
        "`in/new` is on the source but was not copied",
    ] {
        assert!(v.contains(needle), "{needle} in {v}");
    }
    assert_eq!(bad.problems.len(), 5, "{v}");
}
