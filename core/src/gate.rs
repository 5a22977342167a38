//! Condition gates, the pure part: durations as people write them, comparing an observed value,
//! picking a field of a JSON body, and the gate's clock (how long it has waited, how long the
//! condition has held) carried across polls and across processes through the ledger.
//!
//! Observing (a query, a GET, a command) is the orchestrator's `probe`; deciding is here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Seconds in a duration such as `90s`, `5m`, `2h 30m`, `14d` or `2w`; zero, negative and
/// unparseable durations are refused with the reason.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "`{text}` is negative: a duration is `30s`, `5m`, `2h`, `14d`"
        ));
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.as_secs() == 0 => Err(format!(
            "`{text}` is shorter than a second: a duration is `30s`, `5m`, `2h`, `14d`"
        )),
        Ok(d) => Ok(d.as_secs()),
        Err(e) => Err(format!(
            "`{text}` is not a duration ({e}): write e.g. `30s`, `5m`, `2h`, `14d`"
        )),
    }
}

/// A duration in seconds as people read it (`2h 30m`, `14days`).
pub fn describe_duration(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// How an observed value is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    Equals(Value),
    AtMost(f64),
    AtLeast(f64),
}

impl Eq for Compare {}

impl Compare {
    /// Whether `value` satisfies the comparison (numbers compare as numbers, so `0` equals
    /// `0.0` and a query's `"0"` text; a non-number never satisfies `at_most`/`at_least`).
    pub fn holds(&self, value: &Value) -> bool {
        match self {
            Compare::Equals(want) => match (number(want), number(value)) {
                (Some(a), Some(b)) => a == b,
                _ => want == value || text(want) == text(value),
            },
            Compare::AtMost(max) => number(value).is_some_and(|v| v <= *max),
            Compare::AtLeast(min) => number(value).is_some_and(|v| v >= *min),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Compare::Equals(v) => format!("= {}", text(v)),
            Compare::AtMost(v) => format!("<= {v}"),
            Compare::AtLeast(v) => format!(">= {v}"),
        }
    }
}

/// A value as a number: JSON numbers, and strings that parse as one (SQL `numeric` and
/// command output arrive as text).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A value as it is shown: strings without quotes.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The field `path` of a JSON body: a JSON Pointer (`/queue/depth`) or a dotted path
/// (`queue.depth`, array items by index).
pub fn field<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return body.pointer(path);
    }
    path.split('.').try_fold(body, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The value a command printed: its trimmed stdout, as a number when it is one.
pub fn stdout_value(stdout: &str) -> Value {
    let t = stdout.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::String(t.to_owned()),
    }
}

/// What a gate remembers between polls and between processes (kept in the ledger's
/// `condition_evaluated` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateClock {
    /// The first evaluation: the deadline counts from here, across resumes.
    pub started_at: DateTime<Utc>,
    /// The last evaluation.
    pub last_at: DateTime<Utc>,
    /// Since when the condition has held at every poll; `None` while it does not hold.
    pub holding_since: Option<DateTime<Utc>>,
    /// The last value seen (or the probe's error).
    pub last_value: Value,
    pub last_holds: bool,
    pub polls: u64,
}

/// A gate's timing, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub every: u64,
    pub stable_for: u64,
    pub deadline: u64,
}

impl Timing {
    /// The longest gap between two polls that still counts as watching continuously: a
    /// condition seen true before and after a longer gap (the process was not running) may
    /// have flapped unseen, so its stable time starts again.
    pub fn continuity(&self) -> i64 {
        (self.every * 2 + 5) as i64
    }
}

/// A gate's verdict after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Waiting,
    TimedOut,
}

/// One poll's result folded into the clock. `changed` says whether the value (or whether it
/// holds) differs from the last one seen: such polls are recorded, others are not.
pub fn observe(
    clock: Option<GateClock>,
    at: DateTime<Utc>,
    value: Value,
    holds: bool,
    timing: Timing,
) -> (GateClock, Verdict, bool) {
    let (started_at, holding_since, changed, polls) = match &clock {
        None => (at, holds.then_some(at), true, 1),
        Some(c) => {
            let continuous = (at - c.last_at).num_seconds() <= timing.continuity();
            let since = match (holds, c.holding_since) {
                (true, Some(s)) if continuous && c.last_holds => Some(s),
                (true, _) => Some(at),
                (false, _) => None,
            };
            let changed = c.last_value != value || c.last_holds != holds;
            (c.started_at, since, changed, c.polls + 1)
        }
    };
    let next = GateClock {
        started_at,
        last_at: at,
        holding_since,
        last_value: value,
        last_holds: holds,
        polls,
    };
    let verdict = match holding_since {
        Some(s) if (at - s).num_seconds() >= timing.stable_for as i64 => Verdict::Passed,
        _ if (at - started_at).num_seconds() >= timing.deadline as i64 => Verdict::TimedOut,
        _ => Verdict::Waiting,
    };
    (next, verdict, changed)
}

/// When the gate should poll next: `every` after the last poll, never after the deadline.
pub fn next_poll(clock: &GateClock, timing: Timing) -> DateTime<Utc> {
    let next = clock.last_at + chrono::Duration::seconds(timing.every as i64);
    let deadline = clock.started_at + chrono::Duration::seconds(timing.deadline as i64);
    next.min(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const T: Timing = Timing {
        every: 10,
        stable_for: 30,
        deadline: 100,
    };

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h 30m"), Ok(9000));
        assert_eq!(parse_duration("14d"), Ok(14 * 86400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86400));
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("0s").unwrap_err().contains("shorter"));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let eq0 = Compare::Equals(json!(0));
        assert!(eq0.holds(&json!(0)) && eq0.holds(&json!(0.0)) && eq0.holds(&json!("0")));
        assert!(!eq0.holds(&json!(1)) && !eq0.holds(&Value::Null));
        assert!(Compare::Equals(json!("green")).holds(&json!("green")));
        assert!(Compare::AtMost(5.0).holds(&json!("5")));
        assert!(!Compare::AtMost(5.0).holds(&json!("five")));
        assert!(Compare::AtLeast(2.0).holds(&json!(3)));
    }

    #[test]
    fn fields_by_pointer_or_dotted_path() {
        let body = json!({"queue": {"depth": 3, "items": [{"id": 7}]}});
        assert_eq!(field(&body, "/queue/depth"), Some(&json!(3)));
        assert_eq!(field(&body, "queue.items.0.id"), Some(&json!(7)));
        assert_eq!(field(&body, "queue.missing"), None);
    }

    #[test]
    fn a_condition_passes_once_it_held_for_stable_for() {
        let (c, v, changed) = observe(None, t(0), json!(3), false, T);
        assert!(changed && v == Verdict::Waiting);
        let (c, v, _) = observe(Some(c), t(10), json!(0), true, T);
        assert_eq!((v, c.holding_since), (Verdict::Waiting, Some(t(10))));
        let (c, v, changed) = observe(Some(c), t(20), json!(0), true, T);
        assert!(!changed && v == Verdict::Waiting);
        let (c, v, _) = observe(Some(c), t(40), json!(0), true, T);
        assert_eq!(v, Verdict::Passed);
        assert_eq!(c.polls, 4);
    }

    #[test]
    fn a_flap_restarts_the_stable_time() {
        let (c, _, _) = observe(None, t(0), json!(0), true, T);
        let (c, _, _) = observe(Some(c), t(10), json!(0), true, T);
        let (c, v, changed) = observe(Some(c), t(20), json!(1), false, T);
        assert!(changed && v == Verdict::Waiting && c.holding_since.is_none());
        let (c, _, _) = observe(Some(c), t(30), json!(0), true, T);
        assert_eq!(c.holding_since, Some(t(30)));
        let (_, v, _) = observe(Some(c), t(50), json!(0), true, T);
        assert_eq!(v, Verdict::Waiting, "held 20 s of 30");
    }

    #[test]
    fn a_gap_in_watching_restarts_the_stable_time_but_not_the_deadline() {
        let (c, _, _) = observe(None, t(0), json!(0), true, T);
        // ferry was not running for 50 s (more than twice `every`): unseen flaps possible.
        let (c, v, _) = observe(Some(c), t(50), json!(0), true, T);
        assert_eq!(
            (v, c.holding_since, c.started_at),
            (Verdict::Waiting, Some(t(50)), t(0))
        );
        let (c, _, _) = observe(Some(c), t(60), json!(0), true, T);
        let (c, _, _) = observe(Some(c), t(70), json!(0), true, T);
        let (_, v, _) = observe(Some(c), t(80), json!(0), true, T);
        assert_eq!(v, Verdict::Passed);
    }

    #[test]
    fn the_deadline_counts_from_the_first_evaluation() {
        let (c, _, _) = observe(None, t(0), json!(5), false, T);
        let (c, v, _) = observe(Some(c), t(99), json!(5), false, T);
        assert_eq!(v, Verdict::Waiting);
        assert_eq!(next_poll(&c, T), t(100));
        let (_, v, _) = observe(Some(c), t(100), json!(5), false, T);
        assert_eq!(v, Verdict::TimedOut);
    }

    #[test]
    fn without_stable_for_the_first_holding_poll_passes() {
        let timing = Timing { stable_for: 0, ..T };
        let (_, v, _) = observe(None, t(0), json!(0), true, timing);
        assert_eq!(v, Verdict::Passed);
    }
}
