//! The guide's "Cut-over and drain" section (each condition gate, quiesce call and recorded
//! value with what was seen over time and who ran it) and the HTML page's timeline picture of
//! the apply: one row per step, its time on a shared axis, gates and waits, failures and
//! back-outs marked. Inline SVG, no script.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::build::Ctx;
use crate::ledger::{Entry, Event};
use crate::ops::Op;
use crate::plan::Step;

#[derive(Debug, Clone, Serialize)]
pub struct CutoverRow {
    pub step: String,
    pub wave: String,
    pub site: String,
    pub name: String,
    /// `wait until`, `http`, `command` or `record`.
    pub kind: String,
    pub what: String,
    /// What was seen, oldest first: `TIME: VALUE (verdict)`.
    pub seen: Vec<String>,
    pub outcome: String,
    /// Who ran the applies that evaluated or carried it out (people where the inventory
    /// names them).
    pub by: String,
    /// The last ledger entry about it.
    pub seq: String,
    pub evidence: String,
}

/// A row for each gate, call and record of the plan.
pub(super) fn rows(c: &Ctx<'_>) -> Vec<CutoverRow> {
    c.body
        .steps
        .iter()
        .filter_map(|s| {
            let op = &s.op.as_ref()?.op;
            let kind = match op {
                Op::WaitUntil { .. } => "wait until",
                Op::Call { .. } | Op::Record { .. } => op.name(),
                _ => return None,
            };
            Some(row(c, s, op, kind))
        })
        .collect()
}

fn row(c: &Ctx<'_>, s: &Step, op: &Op, kind: &str) -> CutoverRow {
    let ev = c.step_events(&s.id);
    let seen: Vec<String> = ev.iter().filter_map(|e| observation(e, op)).collect();
    let mut by: Vec<String> = Vec::new();
    for e in ev.iter().filter(|e| e.event == Event::StepStarted) {
        let who = c.person(&e.actor).unwrap_or_else(|| e.actor.clone());
        if !by.contains(&who) {
            by.push(who);
        }
    }
    let last = ev.last();
    CutoverRow {
        step: s.id.clone(),
        wave: c.wave_name(s.wave),
        site: s.target.site.clone(),
        name: s.target.app.clone(),
        kind: kind.into(),
        what: op.describe(),
        seen,
        outcome: outcome(ev),
        by: by.join(", "),
        seq: last.map(|e| e.seq.to_string()).unwrap_or_default(),
        evidence: last.map(|e| super::short(&e.hash)).unwrap_or_default(),
    }
}

/// One value seen, from a gate's evaluation or a record's result.
fn observation(e: &Entry, op: &Op) -> Option<String> {
    let d = e.detail.as_ref()?;
    match (e.event, op) {
        (Event::ConditionEvaluated, _) => {
            let clock = &d["clock"];
            let holds = if clock["last_holds"] == true {
                "holds"
            } else {
                "does not hold"
            };
            Some(format!(
                "{}: {} ({holds}, poll {})",
                e.time,
                crate::gate::text(&clock["last_value"]),
                clock["polls"]
            ))
        }
        (Event::StepSucceeded, Op::Record { .. }) => {
            Some(format!("{}: {}", e.time, crate::gate::text(&d["value"])))
        }
        (Event::StepSucceeded, Op::Call { .. }) => Some(format!(
            "{}: {}",
            e.time,
            e.message.clone().unwrap_or_default()
        )),
        _ => None,
    }
}

fn outcome(ev: &[&Entry]) -> String {
    let Some(last) = ev
        .iter()
        .rev()
        .find(|e| e.event != Event::ConditionEvaluated)
    else {
        return "not run".into();
    };
    match last.event {
        Event::StepSucceeded => "done".into(),
        Event::ConditionWaiting => "waiting (apply stopped; `--resume` evaluates again)".into(),
        Event::StepFailed => format!("FAILED: {}", last.message.clone().unwrap_or_default()),
        Event::StepBackedOut => format!("undone: {}", last.message.clone().unwrap_or_default()),
        Event::UndoFailed => format!("UNDO FAILED: {}", last.message.clone().unwrap_or_default()),
        Event::StepStarted => "started, no result recorded".into(),
        other => other.as_str().into(),
    }
}

/// A bar of the picture: a step's span, or a wait between two runs.
struct Bar {
    from: DateTime<FixedOffset>,
    to: DateTime<FixedOffset>,
    class: &'static str,
}

/// The plan's steps over time, as an inline SVG (empty before the first apply).
pub(super) fn timeline_svg(c: &Ctx<'_>) -> String {
    const MAX_ROWS: usize = 80;
    let time = |e: &Entry| DateTime::parse_from_rfc3339(&e.time).ok();
    let Some(start) = c
        .mine
        .iter()
        .find(|e| e.event == Event::ApplyStarted)
        .and_then(|e| time(e))
    else {
        return String::new();
    };
    let end = c.mine.last().and_then(|e| time(e)).unwrap_or(start);
    let span = ((end - start).num_milliseconds().max(1000)) as f64;
    let rows: Vec<(&Step, Vec<Bar>)> = c
        .body
        .steps
        .iter()
        .take(MAX_ROWS)
        .map(|s| (s, bars(c.step_events(&s.id), end)))
        .collect();
    let (label_w, plot_w, row_h) = (300.0, 620.0, 18.0);
    let height = 40.0 + row_h * rows.len() as f64;
    let x = |t: DateTime<FixedOffset>| {
        label_w + plot_w * ((t - start).num_milliseconds() as f64 / span).clamp(0.0, 1.0)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" role="img" class="timeline" viewBox="0 0 {w} {height}" width="100%"><title>Apply of plan {id} over time</title><style>.ok{{fill:#2e7d32}}.failed{{fill:#c62828}}.undone{{fill:#ef6c00}}.gate{{fill:#1565c0}}.wait{{fill:none;stroke:#1565c0;stroke-dasharray:3 2}}.run{{fill:#9e9e9e}}text{{font:11px sans-serif}}.wave{{stroke:#bbb}}</style>"##,
        w = label_w + plot_w + 10.0,
        id = esc(&c.plan.id),
    );
    let _ = write!(
        svg,
        r#"<text x="{label_w}" y="14">{}</text><text x="{}" y="14" text-anchor="end">{}</text>"#,
        esc(&start.to_rfc3339()),
        label_w + plot_w,
        esc(&end.to_rfc3339())
    );
    let mut wave = usize::MAX;
    for (k, (s, bars)) in rows.iter().enumerate() {
        let y = 24.0 + row_h * k as f64;
        if s.wave != wave {
            wave = s.wave;
            let _ = write!(
                svg,
                r#"<line class="wave" x1="0" x2="{}" y1="{y}" y2="{y}"/>"#,
                label_w + plot_w
            );
        }
        let _ = write!(
            svg,
            r#"<text x="2" y="{}">{} {} {}</text>"#,
            y + 13.0,
            esc(&c.wave_name(s.wave)),
            esc(&s.id),
            esc(&truncate(&format!("{} -> {}", s.target.id, s.to), 44))
        );
        for b in bars {
            let (x0, x1) = (x(b.from), x(b.to));
            let _ = write!(
                svg,
                r#"<rect class="{}" x="{x0:.1}" y="{}" width="{:.1}" height="{}"><title>{} {}: {} .. {}</title></rect>"#,
                b.class,
                y + 3.0,
                (x1 - x0).max(2.0),
                row_h - 6.0,
                esc(&s.id),
                b.class,
                esc(&b.from.to_rfc3339()),
                esc(&b.to.to_rfc3339())
            );
        }
    }
    if c.body.steps.len() > MAX_ROWS {
        let _ = write!(
            svg,
            r#"<text x="2" y="{}">… {} more step(s): see the checklist</text>"#,
            height - 4.0,
            c.body.steps.len() - MAX_ROWS
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A step's bars: each run from its start to its result (green, red, or the gate's blue),
/// waits between runs dashed, an undo orange.
fn bars(ev: &[&Entry], end: DateTime<FixedOffset>) -> Vec<Bar> {
    let time = |e: &Entry| DateTime::parse_from_rfc3339(&e.time).ok();
    let mut out = Vec::new();
    let mut open: Option<(DateTime<FixedOffset>, &'static str)> = None;
    let mut waiting: Option<DateTime<FixedOffset>> = None;
    for e in ev {
        let Some(t) = time(e) else { continue };
        match e.event {
            Event::StepStarted => {
                if let Some(w) = waiting.take() {
                    out.push(Bar {
                        from: w,
                        to: t,
                        class: "wait",
                    });
                }
                let gate = e.to.as_deref() == Some("wait_until");
                open = Some((t, if gate { "gate" } else { "run" }));
            }
            Event::UndoStarted => open = Some((t, "undone")),
            Event::StepSucceeded
            | Event::StepFailed
            | Event::StepBackedOut
            | Event::UndoFailed
            | Event::ConditionWaiting => {
                let class = match e.event {
                    Event::StepFailed | Event::UndoFailed => "failed",
                    Event::StepBackedOut => "undone",
                    Event::ConditionWaiting => "gate",
                    _ if open.is_some_and(|(_, c)| c == "gate") => "gate",
                    _ => "ok",
                };
                if let Some((from, _)) = open.take() {
                    out.push(Bar { from, to: t, class });
                }
                if e.event == Event::ConditionWaiting {
                    waiting = Some(t);
                }
            }
            _ => {}
        }
    }
    if let Some(w) = waiting {
        out.push(Bar {
            from: w,
            to: end,
            class: "wait",
        });
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
