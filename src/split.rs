//! Traffic split: chooses the target pool for a client version. Owns canary
//! overrides, sticky assignment and weighted choice; knows nothing about
//! calendars (the caller hands it the active season, and the table compiled
//! one weight profile per season).
//!
//! Weights are compiled into cumulative ranges over 10,000 buckets, so a
//! pick is one bucket and a short scan; raising one weight moves only the
//! buckets at the end of its range (a canary at 5% raised to 10% keeps its
//! first 5%). A client with a sticky identity (client id, API key, or a
//! cookie the gateway sets) always gets the bucket [`bucket_of`] its
//! identity: a fixed, specified hash, so every replica, every reload and
//! every season profile place it at the same point of the range.

use std::collections::HashSet;

use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::IntCounter;

use crate::config::{ConfigError, Document, StickySource, WeightDoc};
use crate::headers::Traffic;
use crate::season::SeasonId;

/// Index of a pool in the table.
pub type PoolId = u16;

/// Buckets a split is divided into (0.01% resolution).
pub const BUCKETS: u32 = 10_000;

/// A compiled weighted split: `(exclusive bucket end, pool)`, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    ranges: Vec<(u32, PoolId)>,
}

impl Split {
    /// Builds a split from `(pool, weight)` pairs whose weights sum to 100
    /// (validated), or from equal shares when `weights` is `None`.
    pub fn compile(targets: &[(PoolId, u32)]) -> Split {
        let total: u32 = targets.iter().map(|t| t.1).sum::<u32>().max(1);
        let mut acc = 0u64;
        let mut ranges = Vec::with_capacity(targets.len());
        for &(pool, weight) in targets {
            acc += u64::from(weight);
            let end = (acc * u64::from(BUCKETS) / u64::from(total)) as u32;
            if weight > 0 {
                ranges.push((end, pool));
            }
        }
        Split { ranges }
    }

    /// Equal shares over `pools` (rounding goes to the last).
    pub fn even(pools: &[PoolId]) -> Split {
        Split::compile(&pools.iter().map(|&p| (p, 1)).collect::<Vec<_>>())
    }

    /// The pool owning `bucket` (0..BUCKETS).
    pub fn pick(&self, bucket: u32) -> PoolId {
        self.ranges
            .iter()
            .find(|(end, _)| bucket < *end)
            .or(self.ranges.last())
            .map(|r| r.1)
            .expect("a compiled split has a pool")
    }

    /// A random bucket, for clients without a sticky identity.
    pub fn random_bucket() -> u32 {
        fastrand::u32(..BUCKETS)
    }
}

/// The bucket (0..BUCKETS) of a sticky identity: FNV-1a (64-bit) of the
/// bytes, murmur3's `fmix64` finalizer to spread them, then a multiply-shift
/// onto the buckets. Fixed by this definition (no per-process key), so
/// every replica and every release agrees; the unit tests pin values.
#[inline]
pub fn bucket_of(id: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    ((u128::from(h) * u128::from(BUCKETS)) >> 64) as u32
}

/// A client version's split on one route: the default profile, one per
/// season that overrides it, and the pools a canary override may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiles {
    /// The default profile (the route's `split` entry, or even shares).
    pub default: Split,
    /// Indexed by `SeasonId`; `None` = the default applies.
    by_season: Box<[Option<Split>]>,
    /// `never`: the first pool of the default profile.
    primary: PoolId,
    /// `always`: the last pool of the default profile.
    canary: PoolId,
    /// Every pool named in any profile, for overrides by pool name.
    pools: Box<[PoolId]>,
}

impl Profiles {
    /// Every pool a profile or a canary override can pick.
    pub fn pools(&self) -> &[PoolId] {
        &self.pools
    }

    /// Builds the profiles from the default `(pool, weight)` list (at least
    /// one pool) and per-season lists; `seasons` is the calendar's number of
    /// season names.
    pub fn compile(
        default: &[(PoolId, u32)],
        by_season: &[(SeasonId, Vec<(PoolId, u32)>)],
        seasons: usize,
    ) -> Profiles {
        let mut table = vec![None; seasons];
        let mut pools: Vec<PoolId> = default.iter().map(|t| t.0).collect();
        for (season, targets) in by_season {
            table[*season as usize] = Some(Split::compile(targets));
            pools.extend(targets.iter().map(|t| t.0));
        }
        pools.sort_unstable();
        pools.dedup();
        Profiles {
            default: Split::compile(default),
            by_season: table.into(),
            primary: default.first().expect("a split has a pool").0,
            canary: default.last().expect("a split has a pool").0,
            pools: pools.into(),
        }
    }

    /// The profile in force during `season`.
    #[inline]
    pub fn for_season(&self, season: Option<SeasonId>) -> &Split {
        season
            .and_then(|s| self.by_season.get(s as usize))
            .and_then(Option::as_ref)
            .unwrap_or(&self.default)
    }
}

/// A route's sticky-identity and canary-override settings.
#[derive(Debug)]
pub struct SplitSettings {
    sticky: Box<[StickySource]>,
    cookie: Box<str>,
    canary_header: HeaderName,
    canary_clients: HashSet<Box<str>>,
    /// `switchyard_canary_override_ignored_total{route}`.
    ignored: IntCounter,
}

impl SplitSettings {
    /// Compiles a validated route's settings; `ignored` counts canary
    /// headers from clients not on the allow-list.
    pub fn compile(route: &crate::config::RouteDoc, ignored: IntCounter) -> SplitSettings {
        SplitSettings {
            sticky: route.sticky.clone().into(),
            cookie: route.sticky_cookie.as_str().into(),
            canary_header: HeaderName::try_from(route.canary_header.to_ascii_lowercase())
                .expect("validated header name"),
            canary_clients: route
                .canary_clients
                .iter()
                .map(|c| c.as_str().into())
                .collect(),
            ignored,
        }
    }
}

impl SplitSettings {
    /// The canary-override header's name.
    pub fn canary_header(&self) -> &HeaderName {
        &self.canary_header
    }

    /// Whether a client (its client-id header value) is on the allow-list.
    fn listed(&self, client_id: Option<&HeaderValue>) -> bool {
        client_id
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| self.canary_clients.contains(c))
    }

    /// Whether a request from `client_id` (its client-id header value) may
    /// override the split (canary header, explicit beta version): always
    /// without `canary_clients`, else only for a listed client. A refusal
    /// is counted.
    pub fn override_allowed(&self, client_id: Option<&HeaderValue>) -> bool {
        let allowed = self.canary_clients.is_empty() || self.listed(client_id);
        if !allowed {
            self.ignored.inc();
        }
        allowed
    }
}

/// The split's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// The target pool.
    pub pool: PoolId,
    /// The bucket used (`None` when a canary override chose the pool).
    pub bucket: Option<u32>,
    /// A `Set-Cookie` value for a client the gateway just gave an identity.
    pub set_cookie: Option<HeaderValue>,
}

/// Picks the target pool: an allow-listed client's canary override first,
/// then the active season's profile at the client's sticky bucket (or a
/// random one). `traffic` is what the request carries of the route's
/// client-id, API-key and canary headers (found with the region header in
/// one pass); `headers` is read only for a sticky cookie. `pool_name` names
/// a pool id, for overrides by pool name. Allocates only for a new cookie.
pub fn pick<'t>(
    settings: &SplitSettings,
    profiles: &Profiles,
    season: Option<SeasonId>,
    traffic: &Traffic<'_>,
    headers: &HeaderMap,
    pool_name: impl Fn(PoolId) -> &'t str,
) -> Picked {
    if let Some(wanted) = traffic.canary {
        let allowed = !settings.canary_clients.is_empty() && settings.listed(traffic.client_id);
        let w = wanted.as_bytes();
        let chosen = allowed
            .then(|| {
                if w.eq_ignore_ascii_case(b"always") {
                    Some(profiles.canary)
                } else if w.eq_ignore_ascii_case(b"never") {
                    Some(profiles.primary)
                } else {
                    profiles
                        .pools
                        .iter()
                        .copied()
                        .find(|&p| pool_name(p).as_bytes() == w)
                }
            })
            .flatten();
        match chosen {
            Some(pool) => {
                return Picked {
                    pool,
                    bucket: None,
                    set_cookie: None,
                };
            }
            None => settings.ignored.inc(),
        }
    }
    let (bucket, set_cookie) = sticky_bucket(settings, traffic, headers);
    Picked {
        pool: profiles.for_season(season).pick(bucket),
        bucket: Some(bucket),
        set_cookie,
    }
}

/// The client's bucket from the first sticky source it carries; a new
/// cookie identity when `cookie` is a source and it carries none; else a
/// random bucket.
fn sticky_bucket(
    settings: &SplitSettings,
    traffic: &Traffic<'_>,
    headers: &HeaderMap,
) -> (u32, Option<HeaderValue>) {
    for source in settings.sticky.iter() {
        let id = match source {
            StickySource::ClientId => traffic.client_id.map(HeaderValue::as_bytes),
            StickySource::ApiKey => traffic.api_key.map(HeaderValue::as_bytes),
            StickySource::Cookie => cookie(headers, &settings.cookie),
        };
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            return (bucket_of(id), None);
        }
    }
    if settings.sticky.contains(&StickySource::Cookie) {
        let id = format!("{:016x}", fastrand::u64(..));
        let set = format!(
            "{}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
            settings.cookie
        );
        let value = HeaderValue::try_from(set).expect("validated cookie name, hex value");
        return (bucket_of(id.as_bytes()), Some(value));
    }
    (Split::random_bucket(), None)
}

/// The value of cookie `name` in the request's `Cookie` headers (1 to 64
/// bytes), if present.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
            (!value.is_empty() && value.len() <= 64).then_some(value)
        })
}

/// Checks the routes' `profiles`, `sticky`, `sticky_cookie` and
/// `canary_header`; errors carry field paths.
pub fn validate(doc: &Document) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let pools: HashSet<&str> = doc.pools.iter().map(|p| p.name.as_str()).collect();
    for (i, r) in doc.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let served = |v: &str| match &r.versions {
            Some(list) => list.iter().any(|x| x == v),
            None => doc.versions.iter().any(|x| x.name == v),
        };
        for (season, profile) in &r.profiles {
            for (version, weights) in profile {
                let field = format!("{path}.profiles.{season}.{version}");
                if !served(version) {
                    errs.push(ConfigError::at(
                        field.clone(),
                        format!("version {version:?} is not served on this route"),
                    ));
                }
                weights_ok(&field, weights, &pools, &mut errs);
            }
        }
        let mut seen = HashSet::new();
        for (j, s) in r.sticky.iter().enumerate() {
            if !seen.insert(*s) {
                errs.push(ConfigError::at(
                    format!("{path}.sticky[{j}]"),
                    "listed twice",
                ));
            }
        }
        let c = &r.sticky_cookie;
        if c.is_empty()
            || c.len() > 64
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            errs.push(ConfigError::at(
                format!("{path}.sticky_cookie"),
                format!("{c:?} is not a cookie name (1-64 of A-Z a-z 0-9 - _ .)"),
            ));
        }
        if HeaderName::try_from(r.canary_header.as_str()).is_err() {
            errs.push(ConfigError::at(
                format!("{path}.canary_header"),
                format!("{:?} is not a valid header name", r.canary_header),
            ));
        }
    }
    errs
}

/// A weight list names known pools and sums to 100.
fn weights_ok(
    field: &str,
    weights: &[WeightDoc],
    pools: &HashSet<&str>,
    errs: &mut Vec<ConfigError>,
) {
    if weights.is_empty() {
        errs.push(ConfigError::at(field, "at least one pool is required"));
        return;
    }
    let mut sum = 0u64;
    for (j, w) in weights.iter().enumerate() {
        sum += u64::from(w.weight);
        if !pools.contains(w.pool.as_str()) {
            errs.push(ConfigError::at(
                format!("{field}[{j}].pool"),
                format!("unknown pool {:?}", w.pool),
            ));
        }
    }
    if sum != 100 {
        errs.push(ConfigError::at(
            field,
            format!("weights must sum to 100, got {sum}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_weights() {
        let s = Split::compile(&[(0, 95), (1, 5)]);
        assert_eq!(s.pick(0), 0);
        assert_eq!(s.pick(9_499), 0);
        assert_eq!(s.pick(9_500), 1);
        assert_eq!(s.pick(9_999), 1);
    }

    #[test]
    fn zero_weight_never_picked() {
        let s = Split::compile(&[(0, 0), (1, 100)]);
        assert!((0..BUCKETS).all(|b| s.pick(b) == 1));
    }

    #[test]
    fn raising_a_canary_keeps_existing_canary_buckets() {
        let five = Split::compile(&[(0, 95), (1, 5)]);
        let ten = Split::compile(&[(0, 90), (1, 10)]);
        // Buckets on the canary at 5% remain on it at 10%: ranges grow from the end.
        let moved = (0..BUCKETS)
            .filter(|&b| five.pick(b) == 1 && ten.pick(b) != 1)
            .count();
        assert_eq!(moved, 0);
    }

    #[test]
    fn sticky_hash_is_pinned() {
        // These values are part of the contract: a change would move
        // clients between pools on a rolling upgrade.
        for (id, bucket) in [
            ("acme-weddings", 3705),
            ("client-0", 5412),
            ("client-1", 9735),
            ("", 9367),
            ("k", 1704),
        ] {
            assert_eq!(bucket_of(id.as_bytes()), bucket, "id {id:?}");
        }
    }

    #[test]
    fn sticky_buckets_spread_evenly() {
        // 100,000 ids over 100 bucket ranges: each within 15% of its share.
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            counts[(bucket_of(format!("c{i}").as_bytes()) / 100) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn season_profiles_override_the_default() {
        let p = Profiles::compile(
            &[(0, 90), (1, 10)],
            &[(1, vec![(0, 98), (1, 2)]), (2, vec![(0, 100), (1, 0)])],
            3,
        );
        let share = |s: Option<SeasonId>| {
            (0..BUCKETS)
                .filter(|&b| p.for_season(s).pick(b) == 1)
                .count()
        };
        assert_eq!(share(None), 1_000);
        assert_eq!(share(Some(0)), 1_000, "season without a profile: default");
        assert_eq!(share(Some(1)), 200);
        assert_eq!(share(Some(2)), 0);
        // The peak canary set lies inside the default one.
        assert!(
            (0..BUCKETS)
                .filter(|&b| p.for_season(Some(1)).pick(b) == 1)
                .all(|b| p.default.pick(b) == 1)
        );
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; sy=abc123".parse().unwrap());
        h.append(http::header::COOKIE, "syx=no".parse().unwrap());
        assert_eq!(cookie(&h, "sy"), Some(&b"abc123"[..]));
        assert_eq!(cookie(&h, "s"), None);
        assert_eq!(cookie(&h, "syx"), Some(&b"no"[..]));
    }

    #[test]
    fn even_split_covers_every_pool() {
        let s = Split::even(&[3, 4, 5]);
        let counts = [3, 4, 5].map(|p| (0..BUCKETS).filter(|&b| s.pick(b) == p).count());
        assert!(
            counts.iter().all(|&c| (3_333..=3_334).contains(&c)),
            "{counts:?}"
        );
    }
}
