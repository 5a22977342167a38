//! Maintenance windows as time: when a site's window is open, when it opens next, and how to
//! say so in UTC and in the site's own time. Pure: the caller gives the clock's reading.
//!
//! A window is a local start time on some weekdays, for a number of minutes, in an IANA time
//! zone. An opening that starts on one day may run past midnight. A local start time that a
//! daylight-saving change skips opens at the first minute after the gap; one that occurs twice
//! opens at the first of the two.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::model::{MaintenanceWindow, Weekday};

/// One opening of a window, as UTC instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Opening {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Where a window stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Open now, until the opening's end.
    Open(Opening),
    /// Closed now; the next opening.
    Closed(Opening),
}

/// The time zone of a window, or what is wrong with its name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("`{name}` is not an IANA time zone name (e.g. `America/Chicago`, `UTC`)")
    })
}

/// `HH:MM`, 00:00 to 23:59.
pub fn parse_hh_mm(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

fn weekday(d: chrono::Weekday) -> Weekday {
    match d {
        chrono::Weekday::Mon => Weekday::Mon,
        chrono::Weekday::Tue => Weekday::Tue,
        chrono::Weekday::Wed => Weekday::Wed,
        chrono::Weekday::Thu => Weekday::Thu,
        chrono::Weekday::Fri => Weekday::Fri,
        chrono::Weekday::Sat => Weekday::Sat,
        chrono::Weekday::Sun => Weekday::Sun,
    }
}

/// The opening that starts on local date `day`, if the window opens that weekday.
fn opening_on(w: &MaintenanceWindow, tz: Tz, start: NaiveTime, day: NaiveDate) -> Option<Opening> {
    if !w.days.contains(&weekday(day.weekday())) {
        return None;
    }
    let local = day.and_time(start);
    // A start inside a DST gap opens at the first existing minute after it.
    let begin = (0..=180)
        .find_map(|m| {
            tz.from_local_datetime(&(local + Duration::minutes(m)))
                .earliest()
        })?
        .with_timezone(&Utc);
    Some(Opening {
        start: begin,
        end: begin + Duration::minutes(i64::from(w.duration_minutes)),
    })
}

/// Where the window stands at `now`: open (until when) or closed (and its next opening).
/// `None` only for a window that never opens (no day, a bad zone or start time: validation
/// refuses those).
pub fn state(w: &MaintenanceWindow, now: DateTime<Utc>) -> Option<State> {
    let tz = zone(&w.timezone).ok()?;
    let start = parse_hh_mm(&w.start)?;
    let today = now.with_timezone(&tz).date_naive();
    // Yesterday's opening may still run past midnight; a week ahead holds every weekday.
    (-1..=8)
        .filter_map(|d| opening_on(w, tz, start, today + Duration::days(d)))
        .find(|o| o.end > now)
        .map(|o| {
            if o.start <= now {
                State::Open(o)
            } else {
                State::Closed(o)
            }
        })
}

/// Openings of the window that start before `until` and end after `from`, in order.
pub fn openings(w: &MaintenanceWindow, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Opening> {
    let (Ok(tz), Some(start)) = (zone(&w.timezone), parse_hh_mm(&w.start)) else {
        return Vec::new();
    };
    let first = from.with_timezone(&tz).date_naive() - Duration::days(1);
    let days = (until - from).num_days() + 2;
    (0..=days)
        .filter_map(|d| opening_on(w, tz, start, first + Duration::days(d)))
        .filter(|o| o.start < until && o.end > from)
        .collect()
}

/// Whether every window of `windows` is open together at some time in the week from `now`
/// (a wave across them can run inside one opening of each).
pub fn overlap(windows: &[&MaintenanceWindow], now: DateTime<Utc>) -> bool {
    let until = now + Duration::days(8);
    let Some((first, rest)) = windows.split_first() else {
        return true;
    };
    openings(first, now, until).iter().any(|o| {
        rest.iter().all(|w| {
            openings(w, now, until)
                .iter()
                .any(|p| p.start < o.end && o.start < p.end)
        })
    })
}

/// An instant as UTC and as the site's local time: `2026-12-05 04:00 UTC (Sat 22:00 CST)`.
pub fn describe(t: DateTime<Utc>, timezone: &str) -> String {
    let utc = t.format("%Y-%m-%d %H:%M UTC");
    match zone(timezone) {
        Ok(tz) => format!("{utc} ({})", t.with_timezone(&tz).format("%a %H:%M %Z")),
        Err(_) => utc.to_string(),
    }
}

/// A site's window as a plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteWindow {
    pub site: String,
    /// `open`, `closed` or `none` (no window: unrestricted).
    pub state: &'static str,
    /// The opening that is running (`open`) or comes next (`closed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opening: Option<Opening>,
    /// For people: "open until ...", "opens ...", "no window (unrestricted)".
    pub text: String,
}

/// A wave's windows, and a warning when its sites' windows are never open together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveWindows {
    pub wave: String,
    pub sites: Vec<SiteWindow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The windows of each wave of a release or migration plan that has steps, as of `now`.
pub fn of_plan(
    inv: &crate::model::Inventory,
    body: &crate::plan::PlanBody,
    now: DateTime<Utc>,
) -> Vec<WaveWindows> {
    if !matches!(
        body.kind,
        crate::plan::SavedPlanKind::Release | crate::plan::SavedPlanKind::Migration
    ) {
        return Vec::new();
    }
    body.waves
        .iter()
        .enumerate()
        .filter(|(w, _)| body.steps.iter().any(|s| s.wave == *w))
        .map(|(w, wave)| {
            let mut sites: Vec<&str> = body
                .steps
                .iter()
                .filter(|s| s.wave == w)
                .map(|s| s.target.site.as_str())
                .collect();
            sites.dedup();
            let windows: Vec<(&str, Option<&MaintenanceWindow>)> = sites
                .iter()
                .map(|s| (*s, inv.site(s).and_then(|x| x.maintenance_window.as_ref())))
                .collect();
            let declared: Vec<&MaintenanceWindow> = windows.iter().filter_map(|(_, w)| *w).collect();
            let warning = (declared.len() > 1 && !overlap(&declared, now)).then(|| {
                format!(
                    "the windows of wave `{}`'s sites are never open together: it runs across several windows (each site's steps are held until its own window opens)",
                    wave.name
                )
            });
            WaveWindows {
                wave: wave.name.clone(),
                sites: windows.into_iter().map(|(s, w)| site_window(s, w, now)).collect(),
                warning,
            }
        })
        .collect()
}

fn site_window(site: &str, w: Option<&MaintenanceWindow>, now: DateTime<Utc>) -> SiteWindow {
    let (state, opening, text) = match w.map(|w| (w, state(w, now))) {
        None => ("none", None, "no window (unrestricted)".to_owned()),
        Some((w, Some(State::Open(o)))) => (
            "open",
            Some(o),
            format!("open now, until {}", describe(o.end, &w.timezone)),
        ),
        Some((w, Some(State::Closed(o)))) => (
            "closed",
            Some(o),
            format!("opens {}", describe(o.start, &w.timezone)),
        ),
        Some((_, None)) => ("closed", None, "never opens".to_owned()),
    };
    SiteWindow {
        site: site.to_owned(),
        state,
        opening,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[Weekday], start: &str, minutes: u32, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            duration_minutes: minutes,
            timezone: tz.into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn open_closed_and_the_next_opening_in_the_sites_zone() {
        // Sat/Sun 22:00 Chicago for 4 h; 2026-12-05 is a Saturday, CST is UTC-6.
        let w = window(
            &[Weekday::Sat, Weekday::Sun],
            "22:00",
            240,
            "America/Chicago",
        );
        let tuesday = at("2026-12-01T20:00:00Z");
        assert_eq!(
            state(&w, tuesday),
            Some(State::Closed(Opening {
                start: at("2026-12-06T04:00:00Z"),
                end: at("2026-12-06T08:00:00Z")
            }))
        );
        // Sunday 01:30 local is still Saturday night's opening.
        assert!(
            matches!(state(&w, at("2026-12-06T07:30:00Z")), Some(State::Open(o)) if o.end == at("2026-12-06T08:00:00Z"))
        );
        // Just after it closes, the next is Sunday night's.
        assert_eq!(
            state(&w, at("2026-12-06T08:00:00Z")),
            Some(State::Closed(Opening {
                start: at("2026-12-07T04:00:00Z"),
                end: at("2026-12-07T08:00:00Z")
            }))
        );
        assert_eq!(
            describe(at("2026-12-06T04:00:00Z"), "America/Chicago"),
            "2026-12-06 04:00 UTC (Sat 22:00 CST)"
        );
    }

    #[test]
    fn daylight_saving_changes_move_the_utc_start_not_the_local_one() {
        // Sunday 01:00 Toronto, 2 h. Summer (EDT, UTC-4) and winter (EST, UTC-5).
        let w = window(&[Weekday::Sun], "01:00", 120, "America/Toronto");
        let summer = state(&w, at("2026-07-01T00:00:00Z")).unwrap();
        assert!(matches!(summer, State::Closed(o) if o.start == at("2026-07-05T05:00:00Z")));
        let winter = state(&w, at("2026-12-01T00:00:00Z")).unwrap();
        assert!(matches!(winter, State::Closed(o) if o.start == at("2026-12-06T06:00:00Z")));
        // 02:30 on the spring-forward Sunday (2026-03-08) does not exist: it opens at 03:00.
        let gap = window(&[Weekday::Sun], "02:30", 60, "America/Toronto");
        let o = state(&gap, at("2026-03-07T12:00:00Z")).unwrap();
        assert!(
            matches!(o, State::Closed(o) if o.start == at("2026-03-08T07:00:00Z")),
            "{o:?}"
        );
    }

    #[test]
    fn a_window_never_open_and_bad_names() {
        assert_eq!(
            state(&window(&[], "01:00", 60, "UTC"), at("2026-12-01T00:00:00Z")),
            None
        );
        assert!(zone("Mars/Olympus").is_err());
        assert!(zone("UTC").is_ok());
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("7:00"), None);
        assert!(parse_hh_mm("07:05").is_some());
    }

    #[test]
    fn windows_of_a_wave_overlap_or_not() {
        let now = at("2026-12-01T00:00:00Z");
        let sat_chicago = window(&[Weekday::Sat], "22:00", 240, "America/Chicago");
        let sun_utc_early = window(&[Weekday::Sun], "05:00", 60, "UTC");
        let mon = window(&[Weekday::Mon], "05:00", 60, "UTC");
        assert!(overlap(&[&sat_chicago, &sun_utc_early], now));
        assert!(!overlap(&[&sat_chicago, &mon], now));
        assert!(overlap(&[], now));
    }
}
