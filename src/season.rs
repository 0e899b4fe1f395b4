//! The season calendar: regions (each in an IANA time zone), named season
//! rules (local months, weekdays, dates and an hour window) in priority
//! order, and which rule is active in each region right now.
//!
//! Owns the calendar and the answer "which season is it in this request's
//! region"; knows nothing about what a season changes (the table maps a
//! season to weight profiles in `split` and quota multipliers in `limit`).
//!
//! The active rule per region is computed off the request path: at compile
//! time, when the control plane publishes a table, and by [`keep_current`]
//! at the next instant it could change (local midnight, a rule's start or
//! end time, a DST transition of the zone). A request pays one relaxed
//! atomic load ([`Calendar::active`]). All time arithmetic is jiff's in the
//! region's zone, so DST days (23 or 25 hours) and local midnight are exact.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use prometheus::IntGauge;

use crate::config::{CalendarDoc, ConfigError, Document};
use crate::control::Clock;
use crate::table::TableHandle;

/// Index of a region in [`Calendar::regions`].
pub type RegionId = u8;
/// Index of a distinct season name in [`Calendar::seasons`].
pub type SeasonId = u8;
/// Index of a season rule in [`Calendar::rules`] (priority order).
pub type RuleId = u8;

/// Most regions a calendar may hold.
pub const MAX_REGIONS: usize = 64;
/// Most season rules a calendar may hold (`u8::MAX` marks "none").
pub const MAX_RULES: usize = 254;
/// Largest accepted `limit_multiplier`.
pub const MAX_MULTIPLIER: f64 = 1000.0;

const NONE: u8 = u8::MAX;

/// Region-header values (`region_map` keys and region names) to regions,
/// ASCII case-insensitively, without hashing or copying the value: the
/// keys, lower-cased, are grouped by length and sorted within a group, so a
/// lookup indexes its length's group and binary-searches it, lower-casing
/// the value's bytes as it compares. A 2-letter country code among 250
/// takes 8 short compares; the usual few keys per length, one or two.
#[derive(Debug, Default)]
struct RegionValues {
    /// `keys[starts[n]..starts[n + 1]]` are the keys of length `n`.
    starts: Box<[u32]>,
    /// Sorted by (length, bytes).
    keys: Box<[(Box<[u8]>, RegionId)]>,
}

impl RegionValues {
    fn compile(values: HashMap<String, RegionId>) -> RegionValues {
        let mut keys: Vec<(Box<[u8]>, RegionId)> = values
            .into_iter()
            .map(|(v, r)| (v.to_ascii_lowercase().into_bytes().into(), r))
            .collect();
        keys.sort_unstable_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
        let longest = keys.last().map_or(0, |k| k.0.len());
        let starts = (0..=longest + 1)
            .map(|n| keys.partition_point(|k| k.0.len() < n) as u32)
            .collect();
        RegionValues {
            starts,
            keys: keys.into(),
        }
    }

    /// The region of a header value (surrounding blanks ignored).
    #[inline]
    fn get(&self, value: &[u8]) -> Option<RegionId> {
        let value = value.trim_ascii();
        let group = self.starts.get(value.len()..value.len() + 2)?;
        let group = &self.keys[group[0] as usize..group[1] as usize];
        let lower = value.iter().map(u8::to_ascii_lowercase);
        let i = group
            .binary_search_by(|(k, _)| k.iter().copied().cmp(lower.clone()))
            .ok()?;
        Some(group[i].1)
    }
}

/// One compiled season rule: when it matches (in its region's local time)
/// and what it selects.
#[derive(Debug)]
pub struct Rule {
    /// The season this rule belongs to.
    pub season: SeasonId,
    /// Quota multiplier while the rule is active.
    pub multiplier: f64,
    /// Bit `m` set = month `m` (1-12) matches; 0 = every month.
    months: u16,
    /// Bit `d` set = weekday `d` (Monday = 0) matches; 0 = every day.
    weekdays: u8,
    /// Local dates; empty = every date.
    dates: Vec<Date>,
    start: Time,
    end: Option<Time>,
}

impl Rule {
    /// Whether the rule matches the local date and time `dt`.
    pub fn matches(&self, dt: DateTime) -> bool {
        let t = dt.time();
        self.matches_day(dt.date()) && t >= self.start && self.end.is_none_or(|e| t < e)
    }

    /// Whether the rule's month, weekday and date conditions hold on `d`.
    fn matches_day(&self, d: Date) -> bool {
        (self.months == 0 || self.months & (1 << d.month()) != 0)
            && (self.weekdays == 0
                || self.weekdays & (1 << d.weekday().to_monday_zero_offset()) != 0)
            && (self.dates.is_empty() || self.dates.contains(&d))
    }
}

/// A compiled region: its zone, the rules that apply there (priority
/// order) and the rule active now.
#[derive(Debug)]
pub struct Region {
    /// Region name, e.g. `us-east-1`.
    pub name: Arc<str>,
    /// IANA zone name, e.g. `America/New_York`.
    pub time_zone: Arc<str>,
    tz: TimeZone,
    rules: Vec<RuleId>,
    /// The active rule, or [`NONE`].
    active: AtomicU8,
    /// Unix seconds of the next instant the active rule may change.
    recheck_at: AtomicI64,
    /// `switchyard_season_active{region, season}` per season, in season order.
    gauges: Vec<IntGauge>,
}

/// The compiled calendar of one routing table.
#[derive(Debug, Default)]
pub struct Calendar {
    /// Regions by id.
    pub regions: Vec<Region>,
    /// Season rules, highest priority first.
    pub rules: Vec<Rule>,
    /// Distinct season names, by id (first appearance order).
    pub seasons: Vec<Arc<str>>,
    header: Option<HeaderName>,
    /// Header value (a `region_map` key or a region name) -> region.
    by_value: RegionValues,
    home: RegionId,
}

/// One region's state, for `/admin/season`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegionStatus {
    /// Region name.
    pub region: String,
    /// IANA zone.
    pub time_zone: String,
    /// Whether requests without a known region header land here.
    pub home: bool,
    /// Local date and time when the status was taken.
    pub local_time: String,
    /// The active season, if any.
    pub season: Option<String>,
    /// The active rule's quota multiplier (1 without a season).
    pub limit_multiplier: f64,
    /// The next instant the season is re-evaluated (a possible boundary).
    pub recheck_at: String,
}

impl Calendar {
    /// Compiles a validated calendar. `gauge` resolves the
    /// `switchyard_season_active` handle of a (region, season) pair. The
    /// active rules are evaluated at `now`.
    pub fn compile(
        doc: &CalendarDoc,
        now: Timestamp,
        gauge: impl Fn(&str, &str) -> IntGauge,
    ) -> Calendar {
        let mut seasons: Vec<Arc<str>> = Vec::new();
        let mut rules = Vec::with_capacity(doc.seasons.len());
        for s in &doc.seasons {
            let season = match seasons.iter().position(|n| **n == *s.name) {
                Some(i) => i,
                None => {
                    seasons.push(s.name.as_str().into());
                    seasons.len() - 1
                }
            } as SeasonId;
            rules.push(Rule {
                season,
                multiplier: s.limit_multiplier,
                months: s.months.iter().fold(0u16, |m, &n| m | (1 << n)),
                weekdays: s.weekdays.iter().fold(0u8, |m, &d| {
                    m | (1 << jiff::civil::Weekday::from(d).to_monday_zero_offset())
                }),
                dates: s.dates.clone(),
                start: s.start.unwrap_or(Time::midnight()),
                end: s.end,
            });
        }
        let regions: Vec<Region> = doc
            .regions
            .iter()
            .map(|r| Region {
                name: r.name.as_str().into(),
                time_zone: r.time_zone.as_str().into(),
                tz: TimeZone::get(&r.time_zone).expect("validated time zone"),
                rules: doc
                    .seasons
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.regions.is_empty() || s.regions.contains(&r.name))
                    .map(|(i, _)| i as RuleId)
                    .collect(),
                active: AtomicU8::new(NONE),
                recheck_at: AtomicI64::new(0),
                gauges: seasons.iter().map(|s| gauge(&r.name, s)).collect(),
            })
            .collect();
        let id = |name: &str| {
            regions
                .iter()
                .position(|r| *r.name == *name)
                .expect("validated region") as RegionId
        };
        // A `region_map` key that is also a region's name maps as the map says.
        let mut by_value: HashMap<String, RegionId> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.to_ascii_lowercase(), i as RegionId))
            .collect();
        for (value, region) in &doc.region_map {
            by_value.insert(value.to_ascii_lowercase(), id(region));
        }
        let cal = Calendar {
            home: doc.home_region.as_deref().map_or(0, id),
            header: doc
                .region_header
                .as_deref()
                .map(|h| HeaderName::try_from(h).expect("validated header name")),
            by_value: RegionValues::compile(by_value),
            regions,
            rules,
            seasons,
        };
        cal.refresh(now);
        cal
    }

    /// The region header, if the calendar has one: the request path finds
    /// its value with the route's other traffic headers
    /// ([`crate::headers::TrafficNames`]).
    pub fn header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    /// The request's region from the region header's value (`None`: the
    /// request has none): the value looked up in `region_map` or as a
    /// region name (ASCII case-insensitively), else the home region.
    /// Allocates nothing.
    #[inline]
    pub fn region_of(&self, value: Option<&HeaderValue>) -> RegionId {
        value
            .and_then(|v| self.by_value.get(v.as_bytes()))
            .unwrap_or(self.home)
    }

    /// The rule active in `region` (one atomic load), if any.
    #[inline]
    pub fn active(&self, region: RegionId) -> Option<RuleId> {
        let r = self
            .regions
            .get(region as usize)?
            .active
            .load(Ordering::Relaxed);
        (r != NONE).then_some(r)
    }

    /// The season of a rule.
    #[inline]
    pub fn season(&self, rule: Option<RuleId>) -> Option<SeasonId> {
        rule.map(|r| self.rules[r as usize].season)
    }

    /// A season's id by name.
    pub fn season_id(&self, name: &str) -> Option<SeasonId> {
        self.seasons
            .iter()
            .position(|s| **s == *name)
            .map(|i| i as SeasonId)
    }

    /// The rule active in `region` at `now` and the next instant after
    /// `now` at which that may change: the next local midnight, the start or
    /// end later today of a rule whose day matches, or the zone's next offset
    /// transition (after which local times repeat or are skipped).
    pub fn evaluate(&self, region: RegionId, now: Timestamp) -> (Option<RuleId>, Timestamp) {
        let r = &self.regions[region as usize];
        let local = r.tz.to_datetime(now);
        let active = r
            .rules
            .iter()
            .copied()
            .find(|&i| self.rules[i as usize].matches(local));
        let day = local.date();
        let mut next = day
            .tomorrow()
            .ok()
            .and_then(|d| r.tz.to_timestamp(d.to_datetime(Time::midnight())).ok())
            .unwrap_or(Timestamp::MAX);
        for &i in &r.rules {
            let rule = &self.rules[i as usize];
            if !rule.matches_day(day) {
                continue;
            }
            for t in [Some(rule.start), rule.end].into_iter().flatten() {
                if t > local.time()
                    && let Ok(at) = r.tz.to_timestamp(day.to_datetime(t))
                    && at > now
                {
                    next = next.min(at);
                }
            }
        }
        if let Some(tr) = r.tz.following(now).take(2).find(|t| t.timestamp() > now) {
            next = next.min(tr.timestamp());
        }
        (active, next)
    }

    /// Re-evaluates every region at `now`, publishing each active rule (and
    /// the season gauges). Returns the earliest next change (`Timestamp::MAX`
    /// without regions).
    pub fn refresh(&self, now: Timestamp) -> Timestamp {
        let mut earliest = Timestamp::MAX;
        for (i, r) in self.regions.iter().enumerate() {
            let (active, next) = self.evaluate(i as RegionId, now);
            let value = active.unwrap_or(NONE);
            let before = r.active.swap(value, Ordering::Relaxed);
            r.recheck_at.store(next.as_second(), Ordering::Relaxed);
            let season = self.season(active);
            for (s, g) in r.gauges.iter().enumerate() {
                g.set(i64::from(season == Some(s as SeasonId)));
            }
            if before != value {
                tracing::info!(
                    region = %r.name,
                    season = season.map_or("none", |s| &*self.seasons[s as usize]),
                    "season changed"
                );
            }
            earliest = earliest.min(next);
        }
        earliest
    }

    /// Every region's state as of `now`, for `/admin/season`.
    pub fn status(&self, now: Timestamp) -> Vec<RegionStatus> {
        self.regions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rule = self.active(i as RegionId);
                RegionStatus {
                    region: r.name.to_string(),
                    time_zone: r.time_zone.to_string(),
                    home: i == self.home as usize,
                    local_time: r.tz.to_datetime(now).to_string(),
                    season: self
                        .season(rule)
                        .map(|s| self.seasons[s as usize].to_string()),
                    limit_multiplier: rule.map_or(1.0, |x| self.rules[x as usize].multiplier),
                    recheck_at: Timestamp::from_second(r.recheck_at.load(Ordering::Relaxed))
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// Keeps the published table's calendar current until `shutdown`: sleeps
/// until the earliest next change (at most a second, so a clock step or a
/// newly published table is picked up promptly) and re-evaluates.
pub async fn keep_current(
    tables: Arc<TableHandle>,
    clock: Arc<dyn Clock>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = clock.now();
        let wait = match tables.load() {
            Some(t) => {
                let next = t.calendar.refresh(now);
                // 1 ms past the boundary: tokio's timer rounds up to the
                // millisecond, so the re-evaluation lands on the new side.
                Duration::try_from(next.duration_since(now))
                    .unwrap_or(Duration::ZERO)
                    .saturating_add(Duration::from_millis(1))
                    .min(Duration::from_secs(1))
            }
            None => Duration::from_millis(100),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Checks `calendar` and the routes' `profiles` season names; errors carry
/// field paths (`calendar.seasons[2].months[0]`).
pub fn validate(doc: &Document) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let c = &doc.calendar;
    let mut err = |path: String, reason: String| errs.push(ConfigError::at(path, reason));
    let mut names = std::collections::HashSet::new();
    if c.regions.len() > MAX_REGIONS {
        err(
            "calendar.regions".into(),
            format!("at most {MAX_REGIONS} regions, got {}", c.regions.len()),
        );
    }
    for (i, r) in c.regions.iter().enumerate() {
        if r.name.is_empty() || r.name.len() > 64 {
            err(
                format!("calendar.regions[{i}].name"),
                "must be 1 to 64 characters".into(),
            );
        }
        if !names.insert(r.name.to_ascii_lowercase()) {
            err(
                format!("calendar.regions[{i}].name"),
                format!("duplicate region {:?}", r.name),
            );
        }
        if TimeZone::get(&r.time_zone).is_err() {
            err(
                format!("calendar.regions[{i}].time_zone"),
                format!("{:?} is not an IANA time zone", r.time_zone),
            );
        }
    }
    let known = |name: &str| c.regions.iter().any(|r| r.name == name);
    if let Some(home) = &c.home_region
        && !known(home)
    {
        err(
            "calendar.home_region".into(),
            format!("unknown region {home:?}"),
        );
    }
    if let Some(h) = &c.region_header
        && HeaderName::try_from(h.as_str()).is_err()
    {
        err(
            "calendar.region_header".into(),
            format!("{h:?} is not a valid header name"),
        );
    }
    for (value, region) in &c.region_map {
        if !known(region) {
            err(
                format!("calendar.region_map.{value}"),
                format!("unknown region {region:?}"),
            );
        }
        if value.is_empty() || value.len() > 64 {
            err(
                format!("calendar.region_map.{value}"),
                "header values must be 1 to 64 characters".into(),
            );
        }
    }
    if !c.seasons.is_empty() && c.regions.is_empty() {
        err(
            "calendar.regions".into(),
            "at least one region is required when seasons are defined".into(),
        );
    }
    if c.seasons.len() > MAX_RULES {
        err(
            "calendar.seasons".into(),
            format!("at most {MAX_RULES} seasons, got {}", c.seasons.len()),
        );
    }
    for (i, s) in c.seasons.iter().enumerate() {
        let path = format!("calendar.seasons[{i}]");
        if s.name.is_empty() || s.name.len() > 64 {
            err(format!("{path}.name"), "must be 1 to 64 characters".into());
        }
        for (j, r) in s.regions.iter().enumerate() {
            if !known(r) {
                err(
                    format!("{path}.regions[{j}]"),
                    format!("unknown region {r:?}"),
                );
            }
        }
        for (j, m) in s.months.iter().enumerate() {
            if !(1..=12).contains(m) {
                err(
                    format!("{path}.months[{j}]"),
                    format!("months are 1 to 12, got {m}"),
                );
            }
        }
        if s.months.is_empty()
            && s.weekdays.is_empty()
            && s.dates.is_empty()
            && s.start.is_none()
            && s.end.is_none()
        {
            err(
                path.clone(),
                "needs months, weekdays, dates or a start/end window (it would always match)"
                    .into(),
            );
        }
        if let Some(e) = s.end
            && e <= s.start.unwrap_or(Time::midnight())
        {
            err(
                format!("{path}.end"),
                format!(
                    "{e} is not after start {}",
                    s.start.unwrap_or(Time::midnight())
                ),
            );
        }
        if !(s.limit_multiplier.is_finite()
            && s.limit_multiplier > 0.0
            && s.limit_multiplier <= MAX_MULTIPLIER)
        {
            err(
                format!("{path}.limit_multiplier"),
                format!(
                    "must be greater than 0 and at most {MAX_MULTIPLIER}, got {}",
                    s.limit_multiplier
                ),
            );
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        for season in r.profiles.keys() {
            if !c.seasons.iter().any(|s| s.name == *season) {
                err(
                    format!("routes[{i}].profiles.{season}"),
                    format!("unknown season {season:?}: not in calendar.seasons"),
                );
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RegionDoc, SeasonDoc};
    use crate::control::freeze::Day;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn region(name: &str, tz: &str) -> RegionDoc {
        RegionDoc {
            name: name.into(),
            time_zone: tz.into(),
        }
    }

    fn season(name: &str) -> SeasonDoc {
        SeasonDoc {
            name: name.into(),
            regions: vec![],
            months: vec![],
            weekdays: vec![],
            dates: vec![],
            start: None,
            end: None,
            limit_multiplier: 1.0,
        }
    }

    fn compile(doc: &CalendarDoc) -> Calendar {
        Calendar::compile(doc, Timestamp::UNIX_EPOCH, |r, s| {
            IntGauge::new("t", format!("{r} {s}")).unwrap()
        })
    }

    /// The season name active in region `r` at `now`, and the next change.
    fn at(cal: &Calendar, r: RegionId, now: &str) -> (Option<String>, Timestamp) {
        let (rule, next) = cal.evaluate(r, ts(now));
        (
            cal.season(rule)
                .map(|s| cal.seasons[s as usize].to_string()),
            next,
        )
    }

    #[test]
    fn saturday_starts_and_ends_at_local_midnight_in_two_zones() {
        let cal = compile(&CalendarDoc {
            regions: vec![
                region("eu-west-1", "Europe/Dublin"),
                region("ap-southeast-1", "Asia/Singapore"),
            ],
            seasons: vec![SeasonDoc {
                weekdays: vec![Day::Saturday],
                ..season("saturday")
            }],
            ..Default::default()
        });
        let sat = Some("saturday".to_string());
        // (case, region, instant, season, next change)
        let cases: &[(&str, RegionId, &str, Option<String>, &str)] = &[
            // Singapore is UTC+8 all year: Saturday 2026-07-04 00:00 SGT = Fri 16:00Z.
            (
                "sg friday 23:59:59",
                1,
                "2026-07-03T15:59:59Z",
                None,
                "2026-07-03T16:00:00Z",
            ),
            (
                "sg saturday 00:00",
                1,
                "2026-07-03T16:00:00Z",
                sat.clone(),
                "2026-07-04T16:00:00Z",
            ),
            (
                "sg saturday 23:59:59",
                1,
                "2026-07-04T15:59:59Z",
                sat.clone(),
                "2026-07-04T16:00:00Z",
            ),
            (
                "sg sunday 00:00",
                1,
                "2026-07-04T16:00:00Z",
                None,
                "2026-07-05T16:00:00Z",
            ),
            // Dublin is UTC+1 in summer: Saturday starts at Fri 23:00Z.
            (
                "dublin when sg turns saturday",
                0,
                "2026-07-03T16:00:00Z",
                None,
                "2026-07-03T23:00:00Z",
            ),
            (
                "dublin friday 23:59:59",
                0,
                "2026-07-03T22:59:59Z",
                None,
                "2026-07-03T23:00:00Z",
            ),
            (
                "dublin saturday 00:00",
                0,
                "2026-07-03T23:00:00Z",
                sat.clone(),
                "2026-07-04T23:00:00Z",
            ),
            (
                "dublin saturday 23:59:59",
                0,
                "2026-07-04T22:59:59Z",
                sat.clone(),
                "2026-07-04T23:00:00Z",
            ),
            (
                "dublin sunday 00:00",
                0,
                "2026-07-04T23:00:00Z",
                None,
                "2026-07-05T23:00:00Z",
            ),
        ];
        for (case, r, now, want, next) in cases {
            let (got, got_next) = at(&cal, *r, now);
            assert_eq!(&got, want, "case {case}");
            assert_eq!(got_next, ts(next), "case {case}: next change");
        }
    }

    #[test]
    fn dst_transition_moves_boundaries_in_utc() {
        // London Saturdays 08:00-23:00 around the clocks going back on
        // Sunday 2026-10-25 at 01:00Z (BST -> GMT).
        let cal = compile(&CalendarDoc {
            regions: vec![region("eu-west-2", "Europe/London")],
            seasons: vec![SeasonDoc {
                weekdays: vec![Day::Saturday],
                start: Some(Time::constant(8, 0, 0, 0)),
                end: Some(Time::constant(23, 0, 0, 0)),
                ..season("saturday")
            }],
            ..Default::default()
        });
        let sat = Some("saturday".to_string());
        let cases: &[(&str, &str, Option<String>, &str)] = &[
            // BST (UTC+1): 08:00 local is 07:00Z.
            (
                "bst 07:59:59 local",
                "2026-10-24T06:59:59Z",
                None,
                "2026-10-24T07:00:00Z",
            ),
            (
                "bst 08:00 local",
                "2026-10-24T07:00:00Z",
                sat.clone(),
                "2026-10-24T22:00:00Z",
            ),
            (
                "bst 22:59:59 local",
                "2026-10-24T21:59:59Z",
                sat.clone(),
                "2026-10-24T22:00:00Z",
            ),
            (
                "bst 23:00 local",
                "2026-10-24T22:00:00Z",
                None,
                "2026-10-24T23:00:00Z",
            ),
            // Sunday 00:00 BST; next: the transition at 01:00Z (02:00 BST -> 01:00 GMT).
            (
                "sunday midnight",
                "2026-10-24T23:00:00Z",
                None,
                "2026-10-25T01:00:00Z",
            ),
            // The Sunday is 25 hours long: Monday starts at 00:00Z.
            (
                "sunday after the change",
                "2026-10-25T01:00:00Z",
                None,
                "2026-10-26T00:00:00Z",
            ),
            // GMT (UTC+0): the next Saturday's window is an hour later in UTC.
            (
                "gmt 07:59:59 local",
                "2026-10-31T07:59:59Z",
                None,
                "2026-10-31T08:00:00Z",
            ),
            (
                "gmt 08:00 local",
                "2026-10-31T08:00:00Z",
                sat.clone(),
                "2026-10-31T23:00:00Z",
            ),
        ];
        for (case, now, want, next) in cases {
            let (got, got_next) = at(&cal, 0, now);
            assert_eq!(&got, want, "case {case}");
            assert_eq!(got_next, ts(next), "case {case}: next change");
        }
    }

    #[test]
    fn southern_hemisphere_season_wraps_the_new_year() {
        // Sydney, November to February; AEDT (UTC+11) from 2026-10-04 to 2027-04-04.
        let cal = compile(&CalendarDoc {
            regions: vec![region("au-southeast-2", "Australia/Sydney")],
            seasons: vec![SeasonDoc {
                months: vec![11, 12, 1, 2],
                ..season("peak")
            }],
            ..Default::default()
        });
        let peak = Some("peak".to_string());
        let cases: &[(&str, &str, Option<String>, &str)] = &[
            (
                "oct 31 23:59:59",
                "2026-10-31T12:59:59Z",
                None,
                "2026-10-31T13:00:00Z",
            ),
            (
                "nov 1 00:00",
                "2026-10-31T13:00:00Z",
                peak.clone(),
                "2026-11-01T13:00:00Z",
            ),
            (
                "dec 31 23:59:59",
                "2026-12-31T12:59:59Z",
                peak.clone(),
                "2026-12-31T13:00:00Z",
            ),
            (
                "jan 1 00:00",
                "2026-12-31T13:00:00Z",
                peak.clone(),
                "2027-01-01T13:00:00Z",
            ),
            (
                "feb 28 23:59:59",
                "2027-02-28T12:59:59Z",
                peak.clone(),
                "2027-02-28T13:00:00Z",
            ),
            (
                "mar 1 00:00",
                "2027-02-28T13:00:00Z",
                None,
                "2027-03-01T13:00:00Z",
            ),
            (
                "july (winter)",
                "2027-07-15T02:00:00Z",
                None,
                "2027-07-15T14:00:00Z",
            ),
        ];
        for (case, now, want, next) in cases {
            let (got, got_next) = at(&cal, 0, now);
            assert_eq!(&got, want, "case {case}");
            assert_eq!(got_next, ts(next), "case {case}: next change");
        }
    }

    #[test]
    fn first_listed_season_wins_when_several_match() {
        let saturday = SeasonDoc {
            weekdays: vec![Day::Saturday],
            limit_multiplier: 5.1,
            ..season("saturday")
        };
        let peak = SeasonDoc {
            months: vec![5, 6, 7, 8, 9, 10],
            limit_multiplier: 2.9,
            ..season("peak")
        };
        let doc = |seasons: Vec<SeasonDoc>| CalendarDoc {
            regions: vec![region("us-east-1", "America/New_York")],
            seasons,
            ..Default::default()
        };
        // Saturday 2026-07-04 noon in New York: both match.
        let now = "2026-07-04T16:00:00Z";
        let cal = compile(&doc(vec![saturday.clone(), peak.clone()]));
        assert_eq!(at(&cal, 0, now).0.as_deref(), Some("saturday"));
        let cal = compile(&doc(vec![peak.clone(), saturday.clone()]));
        assert_eq!(at(&cal, 0, now).0.as_deref(), Some("peak"));
        // A July Friday: only peak.
        assert_eq!(
            at(&cal, 0, "2026-07-03T16:00:00Z").0.as_deref(),
            Some("peak")
        );
        // A December Saturday: only saturday.
        assert_eq!(
            at(&cal, 0, "2026-12-05T16:00:00Z").0.as_deref(),
            Some("saturday")
        );
    }

    #[test]
    fn region_values_match_whole_values_in_any_case() {
        let mut values: HashMap<String, RegionId> = (0..300)
            .map(|i| (format!("c{i}"), (i % 7) as RegionId))
            .collect();
        values.insert("a-region-name-of-64-bytes-".repeat(3)[..64].into(), 8);
        values.insert("Mixed-Case".into(), 9);
        let v = RegionValues::compile(values.clone());
        for (value, region) in &values {
            for case in [value.to_ascii_lowercase(), value.to_ascii_uppercase()] {
                assert_eq!(v.get(case.as_bytes()), Some(*region), "{case}");
            }
        }
        for miss in ["c300", "c", "c1x", "", "mixed-cas", &"x".repeat(65)] {
            assert_eq!(v.get(miss.as_bytes()), None, "{miss:?}");
        }
        assert_eq!(RegionValues::default().get(b"c1"), None, "no keys");
    }

    #[test]
    fn refresh_publishes_the_active_rule_per_region() {
        let mut doc = CalendarDoc {
            regions: vec![
                region("us-east-1", "America/New_York"),
                region("ap-southeast-1", "Asia/Singapore"),
            ],
            seasons: vec![
                SeasonDoc {
                    regions: vec!["us-east-1".into()],
                    months: vec![5, 6, 7, 8, 9, 10],
                    limit_multiplier: 4.2,
                    ..season("peak")
                },
                SeasonDoc {
                    regions: vec!["ap-southeast-1".into()],
                    months: vec![11, 12, 1, 2],
                    limit_multiplier: 3.0,
                    ..season("peak")
                },
            ],
            region_header: Some("x-geo".into()),
            ..Default::default()
        };
        doc.region_map.insert("SG".into(), "ap-southeast-1".into());
        let cal = compile(&doc);
        assert_eq!(cal.seasons.len(), 1, "one season name, two rules");
        cal.refresh(ts("2026-07-01T12:00:00Z"));
        assert_eq!(cal.active(0), Some(0));
        assert_eq!(cal.active(1), None);
        cal.refresh(ts("2026-12-01T12:00:00Z"));
        assert_eq!(cal.active(0), None);
        assert_eq!(cal.active(1), Some(1));
        assert_eq!(cal.rules[1].multiplier, 3.0);

        let of = |v: &'static str| cal.region_of(Some(&HeaderValue::from_static(v)));
        assert_eq!(cal.region_of(None), 0, "home region by default");
        assert_eq!(of("sg"), 1, "mapped, case-insensitively");
        assert_eq!(of(" SG "), 1, "blanks around the value ignored");
        assert_eq!(of("AP-SOUTHEAST-1"), 1, "a region name");
        assert_eq!(of("mars"), 0, "unknown: home");
        assert_eq!(of("s"), 0, "a prefix of a key: home");
        assert_eq!(of("sgx"), 0, "a key plus more: home");
        assert_eq!(of(""), 0, "empty: home");
    }
}
