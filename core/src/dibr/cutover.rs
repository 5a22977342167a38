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

/// The picture's geometry: where time starts and how long it spans, and the columns.
struct Axis {
    start: DateTime<FixedOffset>,
    span_ms: f64,
}

const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 620.0;
const ROW_H: f64 = 18.0;
const MAX_ROWS: usize = 80;

impl Axis {
    fn x(&self, t: DateTime<FixedOffset>) -> f64 {
        let f = (t - self.start).num_milliseconds() as f64 / self.span_ms;
        LABEL_W + PLOT_W * f.clamp(0.0, 1.0)
    }
}

/// The plan's steps over time, as an inline SVG (empty before the first apply).
pub(super) fn timeline_svg(c: &Ctx<'_>) -> String {
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
    let axis = Axis {
        start,
        span_ms: ((end - start).num_milliseconds().max(1000)) as f64,
    };
    let steps: Vec<&Step> = c.body.steps.iter().take(MAX_ROWS).collect();
    let height = 40.0 + ROW_H * steps.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" role="img" class="timeline" viewBox="0 0 {w} {height}" width="100%"><title>Apply of plan {id} over time</title><style>.ok{{fill:#2e7d32}}.failed{{fill:#c62828}}.undone{{fill:#ef6c00}}.gate{{fill:#1565c0}}.wait{{fill:none;stroke:#1565c0;stroke-dasharray:3 2}}.run{{fill:#9e9e9e}}text{{font:11px sans-serif}}.wave{{stroke:#bbb}}</style>"##,
        w = LABEL_W + PLOT_W + 10.0,
        id = esc(&c.plan.id),
    );
    let _ = write!(
        svg,
        r#"<text x="{LABEL_W}" y="14">{}</text><text x="{}" y="14" text-anchor="end">{}</text>"#,
        esc(&start.to_rfc3339()),
        LABEL_W + PLOT_W,
        esc(&end.to_rfc3339())
    );
    for (k, s) in steps.iter().enumerate() {
        let new_wave = k == 0 || steps[k - 1].wave != s.wave;
        svg.push_str(&step_row(
            c,
            s,
            &axis,
            end,
            24.0 + ROW_H * k as f64,
            new_wave,
        ));
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

/// One step's row at height `y`: a wave's line above its first step, the label, the bars.
fn step_row(
    c: &Ctx<'_>,
    s: &Step,
    axis: &Axis,
    end: DateTime<FixedOffset>,
    y: f64,
    new_wave: bool,
) -> String {
    let mut row = String::new();
    if new_wave {
        let _ = write!(
            row,
            r#"<line class="wave" x1="0" x2="{}" y1="{y}" y2="{y}"/>"#,
            LABEL_W + PLOT_W
        );
    }
    let _ = write!(
        row,
        r#"<text x="2" y="{}">{} {} {}</text>"#,
        y + 13.0,
        esc(&c.wave_name(s.wave)),
        esc(&s.id),
        esc(&truncate(&format!("{} -> {}", s.target.id, s.to), 44))
    );
    for b in bars(c.step_events(&s.id), end) {
        let (x0, x1) = (axis.x(b.from), axis.x(b.to));
        let _ = write!(
            row,
            r#"<rect class="{}" x="{x0:.1}" y="{}" width="{:.1}" height="{}"><title>{} {}: {} .. {}</title></rect>"#,
            b.class,
            y + 3.0,
            (x1 - x0).max(2.0),
            ROW_H - 6.0,
            esc(&s.id),
            b.class,
            esc(&b.from.to_rfc3339()),
            esc(&b.to.to_rfc3339())
        );
    }
    row
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
