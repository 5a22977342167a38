//! The procedure sections of the DIBR guide: how the plan is carried out and checked (the
//! exact commands, the offline verification), what it renders, who is told, how targets are
//! reached, and the scheduled work it changes.

use super::build::Ctx;
use super::{ConfigRow, Offline, ReleaseRow};
use crate::ledger::{Entry, Event};
use crate::model::TargetKind;

/// The commands that carry this plan out, in order, with its own files: validate, the saved
/// plan (already made), each gate's approval, apply (and resume after a stop), verify, guide.
pub(super) fn installation(c: &Ctx<'_>, created: Option<&&Entry>) -> Vec<String> {
    let input = |role: &str, or: &str| {
        c.plan
            .inputs
            .iter()
            .find(|x| x.role == role)
            .map_or(or.to_owned(), |x| x.path.clone())
    };
    let (inv, source) = (input("inventory", "INVENTORY"), input("plan", "PLAN.yaml"));
    let saved = created
        .and_then(|e| e.detail.as_ref()?["plan_file"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "plan.json".into());
    let mut steps = vec![
        format!("ferry validate -i {inv} {source}"),
        format!(
            "ferry plan -i {inv} {source} -o {saved}   # made: plan {}",
            c.plan.id
        ),
    ];
    for g in &c.body.gates {
        steps.push(format!(
            "ferry approve {saved} --gate {} --as NAME   # an approver holding role {}",
            g.name, g.role
        ));
    }
    steps.push(format!("ferry apply {saved}"));
    steps.push(format!(
        "ferry apply --resume {saved}   # after a stop: a gate, a window, Ctrl-C, a halt"
    ));
    steps.push(format!("ferry ledger verify -i {inv}"));
    steps.push(format!("ferry dibr -i {inv} {saved} -o dibr/ --pdf"));
    steps
}

/// The configuration files each released app renders into its release, with the template's
/// digest as the plan recorded it.
pub(super) fn configuration(c: &Ctx<'_>, releases: &[ReleaseRow]) -> Vec<ConfigRow> {
    let mut rows = Vec::new();
    for r in releases {
        let Some(app) = c.inv.app(&r.app) else {
            continue;
        };
        for f in &app.config {
            let digest = c
                .plan
                .inputs
                .iter()
                .find(|x| x.role == "template" && x.path.ends_with(f.template.as_str()))
                .map_or_else(|| "not recorded".to_owned(), |x| x.sha256.clone());
            rows.push(ConfigRow {
                app: r.app.clone(),
                template: f.template.clone(),
                dest: f.dest.clone(),
                sha256: digest,
            });
        }
    }
    rows
}

/// The commands that check the guide's evidence on a copy of the ledger as of the guide: the
/// chain up to the last entry it used, approvals against the plan's inventory, and the
/// plan's entries exported.
pub(super) fn offline(c: &Ctx<'_>, last: Option<&Entry>) -> Offline {
    let head = last.map_or_else(|| "-".to_owned(), |e| e.hash.clone());
    let inventory = c
        .plan
        .inputs
        .iter()
        .find(|x| x.role == "inventory")
        .map_or("INVENTORY", |x| x.path.as_str());
    Offline {
        commands: vec![
            format!("ferry ledger verify --expect-head {head} -i {inventory}"),
            format!(
                "ferry ledger export --format json --plan {} -o audit.json",
                c.plan.id
            ),
        ],
        entries: c.all.len(),
        head,
    }
}

/// The notices the inventory asks for, each checked against the time between the plan's
/// approval (its last gate's, or its creation without gates) and the apply's start.
pub(super) fn communications(c: &Ctx<'_>) -> Vec<super::NoticeRow> {
    let approved = c
        .mine
        .iter()
        .rev()
        .find(|e| e.event == Event::Approval)
        .or_else(|| c.mine.iter().find(|e| e.event == Event::PlanCreated));
    let started = c.mine.iter().find(|e| e.event == Event::ApplyStarted);
    let time =
        |e: Option<&&Entry>| e.and_then(|e| chrono::DateTime::parse_from_rfc3339(&e.time).ok());
    c.inv
        .communications
        .iter()
        .map(|n| {
            let lead = chrono::Duration::hours(i64::from(n.lead_time_hours));
            let check = match (time(approved), time(started)) {
                (Some(a), Some(s)) if s - a >= lead => {
                    format!("met: {} h between approval and apply", (s - a).num_hours())
                }
                (Some(a), Some(s)) => format!(
                    "NOT met: {} h between approval and apply, {} h needed",
                    (s - a).num_hours(),
                    n.lead_time_hours
                ),
                (Some(a), None) => format!(
                    "apply no earlier than {}",
                    (a + lead).to_utc().format("%Y-%m-%d %H:%M UTC")
                ),
                _ => "no approval or plan record to count from".into(),
            };
            super::NoticeRow {
                audience: n.audience.clone(),
                channel: n.channel.clone(),
                lead_time: format!("{} h", n.lead_time_hours),
                check,
            }
        })
        .collect()
}

/// How each target of the plan is reached, by reference only (never a secret's value), and
/// the skills that takes.
pub(super) fn access(c: &Ctx<'_>) -> (Vec<super::AccessRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut skills = vec!["ferry (plan, apply, backout, ledger)".to_owned()];
    let mut skill = |s: &str| {
        if !skills.iter().any(|x| x == s) {
            skills.push(s.to_owned());
        }
    };
    for t in &c.body.targets {
        let how = match t.target.kind {
            TargetKind::Ssh => c.inv.endpoint(&t.target.host).map(|e| {
                skill("SSH and a POSIX shell on the endpoints");
                let key = e
                    .connection
                    .identity
                    .as_deref()
                    .map_or("the SSH agent".to_owned(), |k| format!("key {k}"));
                format!(
                    "ssh {}@{}:{} with {key}; host keys checked against {}",
                    e.connection.user,
                    e.address,
                    e.connection.port,
                    e.connection.known_hosts.as_deref().unwrap_or("(none)")
                )
            }),
            _ => c
                .inv
                .cloud(&t.target.host)
                .map(|cl| cloud_access(cl, &mut skill)),
        };
        rows.push(super::AccessRow {
            target: t.target.id.clone(),
            how: how.unwrap_or_else(|| "not in the inventory".into()),
        });
    }
    (rows, skills)
}

fn cloud_access(cl: &crate::model::Cloud, skill: &mut impl FnMut(&str)) -> String {
    if let Some(l) = &cl.local {
        return format!("write access to {} on the machine running ferry", l.root);
    }
    if let Some(d) = &cl.docker {
        skill("Docker Engine");
        let tls = d.tls.as_ref().map_or(String::new(), |t| {
            format!(" with client certificate {}", t.cert)
        });
        return format!("Docker Engine at {}{tls}", d.host);
    }
    if let Some(k) = &cl.kubernetes {
        skill("Kubernetes (kubectl to inspect; ferry applies)");
        return match (&k.kubeconfig, k.in_cluster) {
            (_, true) => "the service account of the pod ferry runs in".into(),
            (Some(cfg), _) => format!(
                "kubeconfig {cfg}, context {}",
                k.context.as_deref().unwrap_or("(its current one)")
            ),
            (None, false) => "no kubeconfig".into(),
        };
    }
    if let Some(a) = &cl.aws {
        skill("AWS RDS");
        let creds = match (&a.access_key_id, &a.profile) {
            (Some(key), _) => format!("key id from {key}"),
            (None, Some(p)) => format!("credentials from the default chain, profile `{p}`"),
            (None, None) => "credentials from the default chain".into(),
        };
        return format!("AWS account {} in {}, {creds}", a.account, a.region);
    }
    "no connection settings".into()
}

/// The Kubernetes Jobs and CronJobs the plan adds, changes or removes (its scheduled work).
pub(super) fn jobs(c: &Ctx<'_>) -> Vec<super::JobRow> {
    let mut rows = Vec::new();
    for s in &c.body.steps {
        for o in c.body.objects.get(&s.id).into_iter().flatten() {
            if matches!(o.object.kind.as_str(), "Job" | "CronJob") {
                rows.push(super::JobRow {
                    target: s.target.id.clone(),
                    kind: o.object.kind.clone(),
                    name: o.object.name.clone(),
                    change: serde_json::to_value(o.change)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                });
            }
        }
    }
    rows
}
