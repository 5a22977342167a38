//! The catalog's rules, replayed from ledger entries as `ferry versions` records them.

use super::*;
use crate::ledger::{Entry, Event, NewEntry};

const TEMPLATE: Policy = Policy {
    scheme: Scheme::Template,
    max_active_majors: 2,
};

/// A ledger in memory: each recorded change is an entry, and the catalog is always replayed
/// from the entries' JSON (what a restart would read).
#[derive(Default)]
struct Book {
    entries: Vec<Entry>,
}

impl Book {
    fn catalog(&self) -> Catalog {
        let text: Vec<String> = self
            .entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let back: Vec<Entry> = text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        Catalog::replay(&back).unwrap()
    }

    fn record(&mut self, d: Result<Decision, String>) -> Result<Change, String> {
        match d? {
            Decision::Record(c) => {
                let mut e = entry(self.entries.len() as u64 + 1, Event::VersionChanged);
                e.app = Some("opts".into());
                e.to = Some(c.id.clone());
                e.detail = Some(serde_json::to_value(&c).unwrap());
                self.entries.push(e);
                Ok(c)
            }
            Decision::Unchanged(m) => Err(format!("unchanged: {m}")),
        }
    }

    fn add(&mut self, id: &str, content: &str, how: AddHow) -> Result<Change, String> {
        let sha = crate::load::sha256_hex(content.as_bytes());
        let offer = Offer {
            id,
            sha256: &sha,
            size: content.len() as u64,
            how,
            inactive: false,
            reason: "upload",
        };
        let d = self.catalog().add("opts", TEMPLATE, &offer);
        self.record(d)
    }

    fn states(&self) -> Vec<(String, &'static str)> {
        let c = self.catalog();
        c.apps["opts"]
            .values()
            .map(|v| (v.id.clone(), v.state.as_str()))
            .collect()
    }
}

/// An entry as the ledger seals it (chained to nothing: the catalog reads, it does not verify).
fn entry(seq: u64, event: Event) -> Entry {
    let mut e = NewEntry::new("dana", event);
    e.time = Some(format!("2026-12-02T10:{:02}:00Z", seq % 60));
    e.seal(seq, String::new())
}

fn owned(v: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), *b)).collect()
}

#[test]
fn the_seeds_suggested_flow_step_by_step() {
    let mut b = Book::default();
    b.add("concept.en.v1", "v1", AddHow::Plain).unwrap();
    assert_eq!(b.states(), owned(&[("concept.en.v1", "active")]));
    b.add("concept.en.v2", "v2", AddHow::Plain).unwrap();
    assert_eq!(
        b.states(),
        owned(&[("concept.en.v1", "active"), ("concept.en.v2", "active")])
    );
    // Don't upload a new major until v1 is inactive: the refusal names it.
    let e = b.add("concept.en.v3", "v3", AddHow::Plain).unwrap_err();
    assert!(
        e.contains("would make 3 majors active; at most 2")
            && e.contains("deactivate `concept.en.v1` (major 1, the oldest)"),
        "{e}"
    );
    let d = b
        .catalog()
        .deactivate("opts", "concept.en.v1", &[], "apps moved to v2");
    b.record(d).unwrap();
    b.add("concept.en.v3", "v3", AddHow::Plain).unwrap();
    assert_eq!(
        b.states(),
        owned(&[
            ("concept.en.v1", "inactive"),
            ("concept.en.v2", "active"),
            ("concept.en.v3", "active"),
        ])
    );
    // Activating v1 again would make three: refused, naming v2.
    let e = b
        .catalog()
        .activate("opts", TEMPLATE, "concept.en.v1", "legacy front end")
        .unwrap_err();
    assert!(e.contains("deactivate `concept.en.v2`"), "{e}");
    let d = b
        .catalog()
        .deactivate("opts", "concept.en.v2", &[], "all on v3");
    b.record(d).unwrap();
    assert_eq!(
        b.states(),
        owned(&[
            ("concept.en.v1", "inactive"),
            ("concept.en.v2", "inactive"),
            ("concept.en.v3", "active"),
        ])
    );
    // Another language is its own lineage.
    b.add("concept.es.v1", "es1", AddHow::Plain).unwrap();
    b.add("concept.es.v2", "es2", AddHow::Plain).unwrap();
}

#[test]
fn revisions_are_numbered_by_content_and_an_ambiguous_upload_is_refused() {
    let mut b = Book::default();
    assert_eq!(
        b.add("lab.en.v1", "a", AddHow::Plain).unwrap().revision,
        Some(1)
    );
    // The same content again is the same revision: nothing recorded.
    let e = b.add("lab.en.v1", "a", AddHow::Plain).unwrap_err();
    assert!(
        e.contains("already holds this content as revision 1"),
        "{e}"
    );
    let e = b.add("lab.en.v1", "b", AddHow::Plain).unwrap_err();
    assert!(
        e.contains("is ambiguous")
            && e.contains("--revision-of lab.en.v1` for its revision 2")
            && e.contains("`--new-major` for `lab.en.v2`"),
        "{e}"
    );
    let e = b
        .add("lab.en.v1", "b", AddHow::RevisionOf("lab.en.v9".into()))
        .unwrap_err();
    assert!(e.contains("a revision keeps its id"), "{e}");
    let c = b
        .add("lab.en.v1", "b", AddHow::RevisionOf("lab.en.v1".into()))
        .unwrap();
    assert_eq!((c.action, c.revision), (Action::Revised, Some(2)));
    let c = b.add("lab.en.v1", "c", AddHow::NewMajor).unwrap();
    assert_eq!((c.id.as_str(), c.revision), ("lab.en.v2", Some(1)));
    // Replayed (as after a restart): the same numbers.
    let cat = b.catalog();
    let revs: Vec<u32> = cat.apps["opts"]["lab.en.v1"]
        .revisions
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(revs, [1, 2]);
    assert_eq!(
        deployable(
            &cat,
            "opts",
            "lab.en.v1",
            Some(&crate::load::sha256_hex(b"a"))
        ),
        Ok(Some(1))
    );
}

#[test]
fn trash_restore_purge_and_the_tombstone() {
    let mut b = Book::default();
    b.add("lab.en.v1", "a", AddHow::Plain).unwrap();
    let e = b
        .catalog()
        .purge("opts", "lab.en.v1", "lab.en.v1", 9, "x")
        .unwrap_err();
    assert!(e.contains("is active: only a version in the trash"), "{e}");
    let d = b.catalog().trash("opts", "lab.en.v1", &[], "test data");
    b.record(d).unwrap();
    let e = b.add("lab.en.v1", "a", AddHow::Plain).unwrap_err();
    assert!(e.contains("is in the trash"), "{e}");
    let d = b.catalog().restore("opts", "lab.en.v1", "still needed");
    assert_eq!(b.record(d).unwrap().state, VState::Inactive);
    let d = b.catalog().trash("opts", "lab.en.v1", &[], "really");
    b.record(d).unwrap();
    assert_eq!(b.catalog().trashed_at("opts", "lab.en.v1"), Some(4));
    let e = b
        .catalog()
        .purge("opts", "lab.en.v1", "lab.en.v2", 9, "x")
        .unwrap_err();
    assert!(
        e.contains("--confirm `lab.en.v2` is not `lab.en.v1`"),
        "{e}"
    );
    let d = b
        .catalog()
        .purge("opts", "lab.en.v1", "lab.en.v1", 9, "space");
    assert_eq!(b.record(d).unwrap().approval_seq, Some(9));
    let cat = b.catalog();
    let v = &cat.apps["opts"]["lab.en.v1"];
    assert!(v.state == VState::Purged && v.revisions[0].purged);
    let e = deployable(&cat, "opts", "lab.en.v1", None).unwrap_err();
    assert!(e.contains("is purged: purged by dana"), "{e}");
    // The tombstone: the same content again brings it back as it was, revision 1.
    let c = b.add("lab.en.v1", "a", AddHow::Plain).unwrap();
    assert_eq!(
        (c.action, c.revision, c.state),
        (Action::Returned, Some(1), VState::Active)
    );
    assert!(!b.catalog().apps["opts"]["lab.en.v1"].revisions[0].purged);
}

#[test]
fn a_deploy_needs_an_active_version_and_one_of_its_revisions() {
    let mut b = Book::default();
    b.add("lab.en.v1", "a", AddHow::Plain).unwrap();
    let d = b
        .catalog()
        .deactivate("opts", "lab.en.v1", &[], "replaced by v2");
    b.record(d).unwrap();
    let cat = b.catalog();
    let e = deployable(&cat, "opts", "lab.en.v1", None).unwrap_err();
    assert!(
        e.contains("is inactive: deactivated by dana at 2026-12-02T10:02:00Z (ledger entry 2): replaced by v2"),
        "{e}"
    );
    let e = deployable(&cat, "opts", "lab.en.v7", None).unwrap_err();
    assert!(e.contains("not in its version catalog"), "{e}");
    let d = b.catalog().activate("opts", TEMPLATE, "lab.en.v1", "back");
    b.record(d).unwrap();
    let e = deployable(&b.catalog(), "opts", "lab.en.v1", Some("ff00")).unwrap_err();
    assert!(e.contains("is none of its revisions (1 = "), "{e}");
}

#[test]
fn a_deployed_version_is_not_deactivated_and_the_ledger_says_where_it_serves() {
    let mut b = Book::default();
    b.add("lab.en.v1", "a", AddHow::Plain).unwrap();
    let step = |seq, event, from: Option<&str>, to: &str, target: &str| {
        let mut e = entry(seq, event);
        e.app = Some("opts".into());
        e.target = Some(target.into());
        e.from = from.map(str::to_owned);
        e.to = Some(to.into());
        e
    };
    let steps = [
        step(10, Event::StepSucceeded, None, "lab.en.v1", "opts@north"),
        step(11, Event::StepSucceeded, None, "lab.en.v1", "opts@south"),
        step(
            12,
            Event::StepSucceeded,
            Some("lab.en.v1"),
            "lab.en.v2",
            "opts@south",
        ),
        step(13, Event::StepSucceeded, None, "lab.en.v1", "opts@east"),
        step(14, Event::StepBackedOut, None, "lab.en.v1", "opts@east"),
        step(
            15,
            Event::StepFailed,
            Some("lab.en.v1"),
            "lab.en.v2",
            "opts@west",
        ),
        step(
            16,
            Event::StepSucceeded,
            Some("lab.en.v1"),
            crate::plan::RETIRED,
            "opts@gone",
        ),
    ];
    let serving = serving(&steps, "opts");
    let on: Vec<&str> = serving
        .iter()
        .filter(|(_, v)| v.contains("lab.en.v1"))
        .map(|(t, _)| t.as_str())
        .collect();
    // A failure whose aftermath the ledger does not know may serve either release.
    assert_eq!(on, ["opts@north", "opts@west"]);
    assert!(serving["opts@west"].contains("lab.en.v2"));
    let on: Vec<String> = on.into_iter().map(str::to_owned).collect();
    let e = b
        .catalog()
        .deactivate("opts", "lab.en.v1", &on, "x")
        .unwrap_err();
    assert!(e.contains("deployed on opts@north, opts@west"), "{e}");
    let e = b
        .catalog()
        .trash("opts", "lab.en.v1", &on, "x")
        .unwrap_err();
    assert!(e.contains("cannot be trashed"), "{e}");
}
