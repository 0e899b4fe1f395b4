//! Change freezes: windows in a time zone (weekdays and/or dates, with a
//! local start and end time) during which routing changes are refused
//! (`config push` without `--emergency`) or deferred (a gateway that sees a
//! non-emergency revision written inside a window applies it when the window
//! ends). Everything takes the instant as an argument, so tests need no clock.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// A weekday in config (`"saturday"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Day {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<Day> for Weekday {
    fn from(d: Day) -> Weekday {
        match d {
            Day::Monday => Weekday::Monday,
            Day::Tuesday => Weekday::Tuesday,
            Day::Wednesday => Weekday::Wednesday,
            Day::Thursday => Weekday::Thursday,
            Day::Friday => Weekday::Friday,
            Day::Saturday => Weekday::Saturday,
            Day::Sunday => Weekday::Sunday,
        }
    }
}

/// One freeze window as written in the table (`[[freezes]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeDoc {
    /// Name, shown in refusals and the admin API.
    pub name: String,
    /// IANA time zone the window is read in, e.g. `Europe/London`.
    pub time_zone: String,
    /// Local weekdays the window applies on, e.g. `["saturday"]`.
    #[serde(default)]
    pub weekdays: Vec<Day>,
    /// Local dates the window applies on, e.g. `["2026-12-24"]`.
    #[serde(default)]
    pub dates: Vec<Date>,
    /// Local start time `HH:MM` on those days. Default `00:00`.
    pub start: Option<Time>,
    /// Local end time `HH:MM` on those days (exclusive). Default end of day.
    pub end: Option<Time>,
}

/// A compiled freeze window.
#[derive(Debug, Clone)]
pub struct Freeze {
    /// Window name.
    pub name: String,
    tz: TimeZone,
    weekdays: Vec<Weekday>,
    dates: Vec<Date>,
    start: Time,
    end: Option<Time>,
}

/// A freeze in force at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFreeze {
    /// Window name.
    pub name: String,
    /// When it ends.
    pub until: Timestamp,
}

/// Validates the `[[freezes]]` list; errors carry `freezes[i].field` paths.
pub fn validate(docs: &[FreezeDoc]) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    for (i, f) in docs.iter().enumerate() {
        if TimeZone::get(&f.time_zone).is_err() {
            errs.push(ConfigError::at(
                format!("freezes[{i}].time_zone"),
                format!("{:?} is not an IANA time zone", f.time_zone),
            ));
        }
        if f.weekdays.is_empty() && f.dates.is_empty() {
            errs.push(ConfigError::at(
                format!("freezes[{i}]"),
                "needs weekdays or dates",
            ));
        }
        if let (Some(s), Some(e)) = (f.start, f.end)
            && e <= s
        {
            errs.push(ConfigError::at(
                format!("freezes[{i}].end"),
                format!("{e} is not after start {s}"),
            ));
        }
    }
    errs
}

impl Freeze {
    /// Compiles a validated window.
    pub fn compile(doc: &FreezeDoc) -> Freeze {
        Freeze {
            name: doc.name.clone(),
            tz: TimeZone::get(&doc.time_zone).expect("validated time zone"),
            weekdays: doc.weekdays.iter().map(|&d| d.into()).collect(),
            dates: doc.dates.clone(),
            start: doc.start.unwrap_or(Time::midnight()),
            end: doc.end,
        }
    }

    /// The window in force at `now`, with its end, if any.
    pub fn active_at(&self, now: Timestamp) -> Option<ActiveFreeze> {
        let local: Zoned = now.to_zoned(self.tz.clone());
        let day = local.date();
        if !(self.weekdays.contains(&day.weekday()) || self.dates.contains(&day)) {
            return None;
        }
        let t = local.time();
        if t < self.start || self.end.is_some_and(|e| t >= e) {
            return None;
        }
        // DST-correct end instant: resolve the local wall time in the zone.
        let until = match self.end {
            Some(e) => day
                .to_datetime(e)
                .to_zoned(self.tz.clone())
                .ok()?
                .timestamp(),
            None => day
                .tomorrow()
                .ok()?
                .to_zoned(self.tz.clone())
                .ok()?
                .timestamp(),
        };
        Some(ActiveFreeze {
            name: self.name.clone(),
            until,
        })
    }
}

/// The first window active at `now` among `freezes` (the latest end wins
/// when several overlap).
pub fn active(freezes: &[Freeze], now: Timestamp) -> Option<ActiveFreeze> {
    freezes
        .iter()
        .filter_map(|f| f.active_at(now))
        .max_by_key(|a| a.until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturday_london() -> Freeze {
        Freeze::compile(&FreezeDoc {
            name: "wedding-saturday".into(),
            time_zone: "Europe/London".into(),
            weekdays: vec![Day::Saturday],
            dates: vec![],
            start: Some(Time::constant(8, 0, 0, 0)),
            end: Some(Time::constant(23, 0, 0, 0)),
        })
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn saturday_window_in_local_time() {
        let f = saturday_london();
        let cases: &[(&str, &str, Option<&str>)] = &[
            // 2026-07-04 is a Saturday; London is UTC+1 in summer.
            (
                "summer saturday 09:00 local",
                "2026-07-04T08:00:00Z",
                Some("2026-07-04T22:00:00Z"),
            ),
            ("summer saturday 07:59 local", "2026-07-04T06:59:00Z", None),
            ("summer saturday 23:00 local", "2026-07-04T22:00:00Z", None),
            ("friday", "2026-07-03T12:00:00Z", None),
            // 2026-12-05 is a Saturday; London is UTC in winter.
            (
                "winter saturday 08:00 local",
                "2026-12-05T08:00:00Z",
                Some("2026-12-05T23:00:00Z"),
            ),
        ];
        for (name, now, until) in cases {
            let got = f.active_at(ts(now)).map(|a| a.until);
            assert_eq!(got, until.map(ts), "case {name}");
        }
    }

    #[test]
    fn whole_day_dates_across_dst() {
        // 2026-03-29: clocks go forward in London; the day is 23 hours long.
        let f = Freeze::compile(&FreezeDoc {
            name: "dst-day".into(),
            time_zone: "Europe/London".into(),
            weekdays: vec![],
            dates: vec!["2026-03-29".parse().unwrap()],
            start: None,
            end: None,
        });
        let a = f.active_at(ts("2026-03-29T12:00:00Z")).unwrap();
        assert_eq!(a.until, ts("2026-03-29T23:00:00Z"));
        assert!(f.active_at(ts("2026-03-28T23:59:59Z")).is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let errs = validate(&[FreezeDoc {
            name: "x".into(),
            time_zone: "Mars/Olympus".into(),
            weekdays: vec![],
            dates: vec![],
            start: Some(Time::constant(10, 0, 0, 0)),
            end: Some(Time::constant(9, 0, 0, 0)),
        }]);
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["freezes[0].time_zone", "freezes[0]", "freezes[0].end"]
        );
    }
}
