//! Version catalogs as library calls (`ferry versions`): read the catalog from a verified
//! ledger, and change it under the state lock (so two operators changing one catalog leave one
//! history), keeping each revision's content in the content-addressed store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Error, State};
use crate::approval::{self, APPROVAL_FORMAT, ApprovalPayload, SignedApproval};
use crate::ledger::{Entry, Event, NewEntry};
use crate::load::Loaded;
use crate::model::{App, Inventory, Lifecycle};
use crate::plan::{CatalogedVersion, InputFile, SavedPlan, Step, StepAction};
use crate::versions::{self, AddHow, Catalog, Change, Decision, Offer};
use crate::{artifact, workspace};

/// How long a catalog change waits for the state lock (held by an apply or another change).
const LOCK_WAIT: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(60);

/// One change to an app's catalog.
#[derive(Debug, Clone)]
pub enum Request {
    /// Content (`from`, or the app's artifact path for the id) under `id`.
    Add {
        id: String,
        from: Option<PathBuf>,
        how: AddHow,
        inactive: bool,
    },
    Activate {
        id: String,
    },
    /// `plan`: a saved plan (recorded in this ledger) that moves the sites serving it off.
    Deactivate {
        id: String,
        plan: Option<PathBuf>,
    },
    Trash {
        id: String,
        plan: Option<PathBuf>,
    },
    Restore {
        id: String,
    },
    /// `confirm`: the id typed again.
    Purge {
        id: String,
        confirm: String,
    },
}

/// What a change came to: the recorded entry, or why nothing was recorded.
#[derive(Debug)]
pub enum Changed {
    Recorded { change: Change, entry: Box<Entry> },
    Unchanged(String),
}

/// The catalog, from a ledger that verifies (a catalog is never read from a broken one).
pub fn catalog(state: &State) -> Result<Catalog, Error> {
    let entries = relevant_entries(state, &[])?;
    Catalog::replay(&entries).map_err(Error::Refused)
}

/// The entries a catalog decision reads, from a ledger that verifies, read as a stream (memory
/// grows with the catalog and the apps' step records, not with the ledger): the lifecycle
/// entries, approvals (of purges), plan creations, and the step records of `apps`.
fn relevant_entries(state: &State, apps: &[&str]) -> Result<Vec<Entry>, Error> {
    let mut kept = Vec::new();
    let report = state.ledger.verify_each(&mut |e| {
        let wanted = match e.event {
            Event::VersionChanged | Event::PlanCreated | Event::Approval => true,
            Event::StepSucceeded | Event::StepBackedOut | Event::StepFailed | Event::UndoFailed => {
                e.app.as_deref().is_some_and(|a| apps.contains(&a))
            }
            _ => false,
        };
        if wanted {
            kept.push(e);
        }
    })?;
    match report.tamper {
        Some(tamper) => Err(Error::Ledger(crate::ledger::LedgerError::Broken {
            path: state.ledger.location().into(),
            tamper,
        })),
        None => Ok(kept),
    }
}

/// A catalog of the inventory: its name, the apps that keep their versions in it (one per
/// target kind, say) and its rules.
#[derive(Debug, Clone, Copy)]
pub struct Catalogued<'i> {
    pub name: &'i str,
    pub apps: &'i [App],
    pub lifecycle: &'i Lifecycle,
}

impl<'i> Catalogued<'i> {
    fn members(&self) -> impl Iterator<Item = &'i App> + '_ {
        let name = self.name;
        self.apps.iter().filter(move |a| a.catalog() == Some(name))
    }

    /// The first app of the catalog: whose artifact path names an id's content by default.
    fn first(&self) -> &'i App {
        self.members().next().expect("a catalog has an app")
    }
}

/// The catalog `name` (a `lifecycle.catalog`, or the id of an app with a `lifecycle`).
pub fn catalogued<'i>(inv: &'i Loaded<Inventory>, name: &str) -> Result<Catalogued<'i>, Error> {
    let path = inv.source.path.display();
    let Some((name, l)) = inv
        .value
        .apps
        .iter()
        .find_map(|a| a.catalog().filter(|c| *c == name).zip(a.lifecycle.as_ref()))
    else {
        let known: Vec<&str> = inv.value.apps.iter().filter_map(App::catalog).collect();
        let hint = if inv.value.app(name).is_some() {
            format!("app `{name}` has no `lifecycle` section: it keeps no version catalog")
        } else {
            format!("no app of it keeps a catalog named `{name}`")
        };
        return Err(Error::Refused(format!(
            "{path}: {hint} (its catalogs: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    };
    Ok(Catalogued {
        name,
        apps: &inv.value.apps,
        lifecycle: l,
    })
}

/// Makes one change under the state lock: reads the catalog, decides, stores content, records.
pub fn change(
    state: &State,
    inv: &Loaded<Inventory>,
    catalog_name: &str,
    req: &Request,
    reason: &str,
) -> Result<Changed, Error> {
    let c = catalogued(inv, catalog_name)?;
    if reason.trim().is_empty() {
        return Err(Error::Refused(
            "every catalog change gives a --reason".into(),
        ));
    }
    // The content is hashed before the lock is taken: the lock is held for a decision, not a
    // read of a large artifact.
    let content = match req {
        Request::Add { id, from, .. } => {
            versions::id::parse(c.lifecycle.scheme, id).map_err(Error::Refused)?;
            Some(Content::read(inv, c.first(), id, from.as_deref())?)
        }
        _ => None,
    };
    let (mut lock, _) = take_lock(state, c.name)?;
    let run = State {
        state_dir: state.state_dir.clone(),
        ledger: state.ledger.fenced(lock.fence()),
        actor: state.actor.clone(),
    };
    let result = decide_and_record(&run, inv, c, req, reason, content.as_ref());
    let released = run
        .ledger
        .append(NewEntry::new(&state.actor, Event::LockReleased).plan(&lock_name(c.name)));
    let _ = lock.release();
    released?;
    result
}

fn lock_name(app: &str) -> String {
    format!("versions:{app}")
}

/// The state lock, waiting a little for a holder that is itself a short catalog change.
fn take_lock(state: &State, app: &str) -> Result<(Box<dyn crate::state::HeldLock>, Entry), Error> {
    let until = Instant::now() + LOCK_WAIT;
    loop {
        match state.ledger.take_lock(&state.actor, &lock_name(app), LEASE) {
            Err(crate::state::TakeLockError::Lock(crate::lock::LockError::Held(_)))
                if Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r.map_err(Error::from),
        }
    }
}

fn decide_and_record(
    run: &State,
    inv: &Loaded<Inventory>,
    c: Catalogued<'_>,
    req: &Request,
    reason: &str,
    content: Option<&Content>,
) -> Result<Changed, Error> {
    let members: Vec<&str> = c.members().map(|a| a.id.as_str()).collect();
    let entries = relevant_entries(run, &members)?;
    let cat = Catalog::replay(&entries).map_err(Error::Refused)?;
    let (app, l) = (c.name, c.lifecycle);
    let decision = match req {
        Request::Add {
            id, how, inactive, ..
        } => {
            let c = content.expect("content is read for an add");
            let offer = Offer {
                id,
                sha256: &c.sha256,
                size: c.size,
                how: how.clone(),
                inactive: *inactive,
                reason,
            };
            cat.add(app, l.policy(), &offer)
        }
        Request::Activate { id } => cat.activate(app, l.policy(), id, reason),
        Request::Deactivate { id, plan } => {
            let on = deployed_on(&entries, c, id, plan.as_deref())?;
            cat.deactivate(app, id, &on, reason)
                .map(|d| moving(d, plan.as_deref()))
        }
        Request::Trash { id, plan } => {
            let on = deployed_on(&entries, c, id, plan.as_deref())?;
            cat.trash(app, id, &on, reason)
                .map(|d| moving(d, plan.as_deref()))
        }
        Request::Restore { id } => cat.restore(app, id, reason),
        Request::Purge { id, confirm } => {
            let seq = purge_approval(&entries, &cat, inv, c, id)?;
            cat.purge(app, id, confirm, seq, reason)
        }
    }
    .map_err(Error::Refused)?;
    let change = match decision {
        Decision::Unchanged(why) => return Ok(Changed::Unchanged(why)),
        Decision::Record(c) => c,
    };
    let store = Store::new(&run.state_dir);
    if let Some(c) = content.filter(|_| change.sha256.is_some()) {
        store.put(c)?;
    }
    let entry = run.ledger.append(entry_of(&run.actor, app, &change))?;
    if change.action == versions::Action::Purged {
        let v = cat
            .version(app, &change.id)
            .expect("purged versions are known");
        let keep: Vec<&str> = still_needed(&cat, app, &change.id);
        for r in &v.revisions {
            if !keep.contains(&r.sha256.as_str()) {
                store.remove(&r.sha256)?;
            }
        }
    }
    Ok(Changed::Recorded {
        change,
        entry: Box::new(entry),
    })
}

fn moving(d: Decision, plan: Option<&Path>) -> Decision {
    match (d, plan) {
        (Decision::Record(mut c), Some(p)) => {
            c.moving_plan = Some(p.display().to_string());
            Decision::Record(c)
        }
        (d, _) => d,
    }
}

fn entry_of(actor: &str, app: &str, c: &Change) -> NewEntry {
    let mut e = NewEntry::new(actor, Event::VersionChanged).message(format!(
        "{app} {}: {}{} ({}): {}",
        c.id,
        serde_json::to_value(c.action)
            .expect("actions serialize")
            .as_str()
            .unwrap_or_default(),
        c.revision
            .map(|r| format!(" revision {r}"))
            .unwrap_or_default(),
        c.state.as_str(),
        c.reason
    ));
    e.app = Some(app.to_owned());
    e.to = Some(c.id.clone());
    e.detail(serde_json::to_value(c).expect("changes serialize"))
}

/// Content kept by other versions that are not purged (two ids may hold the same bytes).
fn still_needed<'c>(cat: &'c Catalog, app: &str, purged: &str) -> Vec<&'c str> {
    cat.apps
        .iter()
        .flat_map(|(a, m)| m.values().map(move |v| (a, v)))
        .filter(|(a, v)| !(a.as_str() == app && v.id == purged))
        .flat_map(|(_, v)| v.revisions.iter().filter(|r| !r.purged))
        .map(|r| r.sha256.as_str())
        .collect()
}

/// Targets the ledger says may serve `id`, less those the saved `plan` moves off it.
fn deployed_on(
    entries: &[Entry],
    c: Catalogued<'_>,
    id: &str,
    plan: Option<&Path>,
) -> Result<Vec<String>, Error> {
    let mut on: Vec<String> = c
        .members()
        .flat_map(|a| versions::serving(entries, &a.id))
        .filter(|(_, v)| v.contains(id))
        .map(|(t, _)| t)
        .collect();
    if let Some(path) = plan {
        let p = workspace::read_plan(path)?;
        let recorded = entries
            .iter()
            .any(|e| e.event == Event::PlanCreated && e.plan_id.as_deref() == Some(&p.id));
        if !recorded {
            return Err(Error::Refused(format!(
                "{}: plan {} was not made against this ledger (`ferry plan` records every plan it writes)",
                path.display(),
                p.id
            )));
        }
        on.retain(|t| {
            !p.body
                .steps
                .iter()
                .any(|s| &s.target.id == t && s.from.as_deref() == Some(id) && s.to != id)
        });
    }
    Ok(on)
}

/// The digest a purge approval signs: what the version holds, bound to its app and id.
pub fn purge_subject(app: &str, id: &str) -> String {
    format!("purge:{app}:{id}")
}

/// The ledger entry of a valid purge approval of `id`, given after its last trashing, by an
/// approver of the inventory who holds the app's `purge_role`.
fn purge_approval(
    entries: &[Entry],
    cat: &Catalog,
    inv: &Loaded<Inventory>,
    c: Catalogued<'_>,
    id: &str,
) -> Result<u64, Error> {
    let Some(role) = &c.lifecycle.purge_role else {
        return Err(Error::Refused(format!(
            "catalog `{}` names no `lifecycle.purge_role` in {}: nothing of it can be purged",
            c.name,
            inv.source.path.display()
        )));
    };
    let (Some(v), Some(since)) = (cat.version(c.name, id), cat.trashed_at(c.name, id)) else {
        // Not in the trash: the catalog's own rule says so.
        return Ok(0);
    };
    let subject = purge_subject(c.name, id);
    let digest = v.content_digest();
    let mut problems = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.seq > since && e.event == Event::Approval)
    {
        let Some(s) = e
            .detail
            .clone()
            .and_then(|d| serde_json::from_value::<SignedApproval>(d).ok())
        else {
            continue;
        };
        let p = &s.payload;
        if p.plan_id != subject || p.gate != "purge" {
            continue;
        }
        let checked = if p.plan_sha256 != digest {
            Err("it approves other content".to_owned())
        } else if &p.role != role {
            Err(format!("it was given as `{}`, not `{role}`", p.role))
        } else {
            approval::verify(&s, Some(&inv.value.approvers))
        };
        match checked {
            Ok(()) => return Ok(e.seq),
            Err(m) => problems.push(format!("entry {}: {m}", e.seq)),
        }
    }
    Err(Error::Refused(format!(
        "purging `{id}` of {} needs a signed approval by a holder of `{role}` given after it was trashed (ledger entry {since}): `ferry versions approve-purge`{}",
        c.name,
        if problems.is_empty() {
            String::new()
        } else {
            format!("; refused: {}", problems.join("; "))
        }
    )))
}

/// Signs and records an approval to purge `id` of `app`, as `person` (who must hold the app's
/// `purge_role`); only while it is in the trash, only on a ledger that verifies.
pub fn approve_purge(
    state: &State,
    inv: &Loaded<Inventory>,
    app: &str,
    id: &str,
    person: &str,
    comment: Option<&str>,
) -> Result<Entry, Error> {
    let c = catalogued(inv, app)?;
    let app = c.name;
    let role = c.lifecycle.purge_role.clone().ok_or_else(|| {
        Error::Refused(format!(
            "catalog `{app}` names no `lifecycle.purge_role`: nothing of it can be purged"
        ))
    })?;
    let cat = catalog(state)?;
    let v = cat
        .version(app, id)
        .filter(|v| v.state == versions::VState::Trashed)
        .ok_or_else(|| {
            Error::Refused(format!(
                "`{id}` of {app} is not in the trash: only a trashed version's purge is approved"
            ))
        })?;
    let base = workspace::base_dir(&inv.source.path);
    let key = super::approve::role_key(
        &inv.value.approvers,
        person,
        &role,
        "purge",
        &inv.source.path.display().to_string(),
        &base,
    )?;
    let signed = approval::sign(
        ApprovalPayload {
            format: APPROVAL_FORMAT.into(),
            plan_id: purge_subject(app, id),
            plan_sha256: v.content_digest(),
            gate: "purge".into(),
            approver: person.to_owned(),
            role: role.clone(),
            comment: comment.map(str::to_owned),
            signed_at: crate::ledger::now(),
        },
        &key,
    );
    let mut e = NewEntry::new(&state.actor, Event::Approval)
        .plan(&purge_subject(app, id))
        .message(format!(
            "purge of {app} `{id}` approved by {person} as `{role}`"
        ))
        .detail(serde_json::to_value(&signed).expect("approvals serialize"));
    e.app = Some(app.to_owned());
    e.to = Some(id.to_owned());
    Ok(state.ledger.append(e)?)
}

/// Content offered to the catalog: where it is, its digest and size.
#[derive(Debug)]
struct Content {
    path: PathBuf,
    sha256: String,
    size: u64,
}

impl Content {
    fn read(
        inv: &Loaded<Inventory>,
        a: &App,
        id: &str,
        from: Option<&Path>,
    ) -> Result<Self, Error> {
        if a.docker.is_some() || a.kubernetes.is_some() {
            return Err(Error::Refused(format!(
                "app `{}` deploys images: its catalog holds artifacts ferry copies (local and ssh apps)",
                a.id
            )));
        }
        let base = workspace::base_dir(&inv.source.path);
        let path = from.map_or_else(
            || workspace::artifact_path(&inv.value, &base, &a.id, id),
            Path::to_owned,
        );
        let dests: Vec<&str> = a.config.iter().map(|c| c.dest.as_str()).collect();
        let sha256 = artifact::inspect(&path, &dests)
            .map_err(|e| Error::Refused(format!("content of `{id}` at {}: {e}", path.display())))?;
        let size =
            size_of(&path).map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
        Ok(Self { path, sha256, size })
    }
}

fn size_of(path: &Path) -> std::io::Result<u64> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.is_dir() {
        return Ok(m.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(path)? {
        total += size_of(&e?.path())?;
    }
    Ok(total)
}

/// The content-addressed store: `STATE/store/sha256/HEX` (a tree as ferry copies artifacts,
/// or a release tarball's bytes), written once, checked against its name as it is written.
struct Store {
    root: PathBuf,
}

impl Store {
    fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("store").join("sha256"),
        }
    }

    fn put(&self, c: &Content) -> Result<(), Error> {
        let dest = self.root.join(&c.sha256);
        if dest.exists() {
            return Ok(());
        }
        let io = |e: std::io::Error| Error::Refused(format!("store {}: {e}", dest.display()));
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let tmp = self
            .root
            .join(format!(".{}.{}", c.sha256, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        let got = if c.path.is_dir() {
            artifact::copy_tree(&c.path, &tmp)
                .map(|(d, _)| d)
                .map_err(|e| Error::Refused(e.to_string()))?
        } else {
            copy_file_new(&c.path, &tmp).map_err(io)?
        };
        if got != c.sha256 {
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Refused(format!(
                "{} changed while it was stored (sha256 {} then {got}); nothing recorded",
                c.path.display(),
                c.sha256
            )));
        }
        std::fs::rename(&tmp, &dest).map_err(io)?;
        crate::durable::sync_dir(&self.root).map_err(io)
    }

    fn remove(&self, sha256: &str) -> Result<(), Error> {
        let dest = self.root.join(sha256);
        let r = if dest.is_dir() {
            std::fs::remove_dir_all(&dest)
        } else {
            std::fs::remove_file(&dest)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Refused(format!(
                "purged, but {} was not removed: {e}",
                dest.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// Where a revision's content is kept.
pub fn stored_at(state_dir: &Path, sha256: &str) -> PathBuf {
    state_dir.join("store").join("sha256").join(sha256)
}

/// The deploy steps of catalogued apps, by app and version, with the app's catalog.
fn catalogued_steps<'i>(
    inv: &'i Inventory,
    steps: &[Step],
) -> BTreeMap<(String, String), (&'i str, &'i App)> {
    let mut wanted = BTreeMap::new();
    for s in steps
        .iter()
        .filter(|s| s.op.is_none() && s.action == StepAction::Deploy)
    {
        if let Some(app) = inv.app(&s.target.app)
            && let Some(catalog) = app.catalog()
        {
            wanted.insert((app.id.clone(), s.to.clone()), (catalog, app));
        }
    }
    wanted
}

/// Whether any step deploys a catalogued app (the ledger is read only then).
pub fn any_catalogued(inv: &Inventory, steps: &[Step]) -> bool {
    !catalogued_steps(inv, steps).is_empty()
}

/// Each catalogued version the steps deploy, checked against `catalog` (active, and for
/// artifacts ferry copies one of its revisions by the digest the inputs recorded): what the
/// plan records, and every refusal.
pub fn check_steps(
    catalog: &Catalog,
    inv: &Inventory,
    base: &Path,
    steps: &[Step],
    inputs: &[InputFile],
) -> (Vec<CatalogedVersion>, Vec<String>) {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for ((_, id), (name, app)) in catalogued_steps(inv, steps) {
        let sha = if app.docker.is_none() && app.kubernetes.is_none() {
            let path = workspace::canonical(&workspace::artifact_path(inv, base, &app.id, &id));
            inputs
                .iter()
                .find(|i| i.role == "artifact" && i.path == path)
                .map(|i| i.sha256.clone())
        } else {
            None
        };
        match versions::deployable(catalog, name, &id, sha.as_deref()) {
            Ok(revision) => out.push(CatalogedVersion {
                app: app.id.clone(),
                catalog: name.to_owned(),
                state: "active".into(),
                id,
                revision,
                sha256: sha,
            }),
            Err(m) => problems.push(m),
        }
    }
    (out, problems)
}

/// At apply: what changed in the catalog since the plan was made (a version deactivated,
/// trashed or purged since), from the ledger entries the apply read.
pub fn changed_since_plan(entries: &[Entry], plan: &SavedPlan) -> Result<Vec<String>, Error> {
    let inv = workspace::plan_inventory(plan)?;
    if !any_catalogued(&inv.value, &plan.body.steps) {
        return Ok(vec![]);
    }
    let catalog = Catalog::replay(entries).map_err(Error::Refused)?;
    let base = workspace::base_dir(&inv.source.path);
    let (_, problems) = check_steps(&catalog, &inv.value, &base, &plan.body.steps, &plan.inputs);
    Ok(problems
        .into_iter()
        .map(|p| format!("the version catalog changed since the plan: {p}"))
        .collect())
}

/// Copies revision `revision` (default: the newest) of `id` out of the store into `out`
/// (which must not exist), checked against its digest as it is copied. Returns the revision.
pub fn export(
    state: &State,
    inv: &Loaded<Inventory>,
    catalog_name: &str,
    id: &str,
    revision: Option<u32>,
    out: &Path,
) -> Result<versions::catalog::Revision, Error> {
    let c = catalogued(inv, catalog_name)?;
    let cat = catalog(state)?;
    let v = cat
        .version(c.name, id)
        .ok_or_else(|| Error::Refused(format!("`{id}` of {} is not in the catalog", c.name)))?;
    let r = match revision {
        Some(n) => v.revisions.iter().find(|r| r.number == n),
        None => v.revisions.last(),
    }
    .ok_or_else(|| {
        Error::Refused(format!(
            "`{id}` of {} has no revision {}",
            c.name,
            revision.unwrap_or(0)
        ))
    })?;
    if r.purged {
        return Err(Error::Refused(format!(
            "revision {} of `{id}` was purged: its content is gone (adding the same content again brings it back)",
            r.number
        )));
    }
    let stored = stored_at(&state.state_dir, &r.sha256);
    let got = if stored.is_dir() {
        artifact::copy_tree(&stored, out).map(|(d, _)| d)
    } else {
        copy_file_new(&stored, out).map_err(|e| artifact::ArtifactError::Io {
            path: stored.display().to_string(),
            source: e,
        })
    }
    .map_err(|e| {
        Error::Refused(format!(
            "revision {} of `{id}` from {}: {e}",
            r.number,
            stored.display()
        ))
    })?;
    if got != r.sha256 {
        return Err(Error::Refused(format!(
            "the store's copy of revision {} of `{id}` ({}) is not what the ledger recorded (sha256 {} there, {got} in the store): it was changed; {} is not to be used",
            r.number,
            stored.display(),
            r.sha256,
            out.display()
        )));
    }
    Ok(r.clone())
}

/// Copies a file to `out`, which must not exist (never through a link), hashing what is
/// written; returns its SHA-256.
fn copy_file_new(from: &Path, out: &Path) -> std::io::Result<String> {
    use std::io::Write as _;
    let mut reader = artifact::HashingReader::new(std::fs::File::open(from)?);
    let mut file = artifact::create_new(out, 0o644)?;
    std::io::copy(&mut reader, &mut file)?;
    file.flush()?;
    Ok(hex::encode(reader.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release tarball is stored as its bytes, checked against their digest, and copied out
    /// only to a new path: never over a file, never through a link.
    #[test]
    fn a_tarball_revision_is_stored_and_copied_out_only_to_a_new_path() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("app-1.0.0.tar.gz");
        std::fs::write(&tarball, b"not really gzip, but bytes are bytes").unwrap();
        let sha256 = crate::load::sha256_hex(&std::fs::read(&tarball).unwrap());
        let store = Store::new(&dir.path().join("state"));
        let content = Content {
            path: tarball.clone(),
            sha256: sha256.clone(),
            size: 36,
        };
        store.put(&content).unwrap();
        let kept = stored_at(&dir.path().join("state"), &sha256);
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            std::fs::read(&tarball).unwrap()
        );
        // The same content again is already there; other bytes under its name are refused.
        store.put(&content).unwrap();
        let lie = Content {
            sha256: "00".repeat(32),
            ..content
        };
        let e = store.put(&lie).unwrap_err().to_string();
        assert!(e.contains("changed while it was stored"), "{e}");
        let left = std::fs::read_dir(kept.parent().unwrap()).unwrap().count();
        assert_eq!(left, 1, "nothing of a refused copy is left in the store");

        let out = dir.path().join("out.tar.gz");
        assert_eq!(copy_file_new(&kept, &out).unwrap(), sha256);
        assert!(
            copy_file_new(&kept, &out).is_err(),
            "never over an existing file"
        );
        let link = dir.path().join("link.tar.gz");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(copy_file_new(&kept, &link).is_err(), "never through a link");
        assert!(!dir.path().join("elsewhere").exists());
    }
}
