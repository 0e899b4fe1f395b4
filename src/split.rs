//! Traffic split: chooses the target pool for a client version. Weights are
//! compiled into cumulative ranges over 10,000 buckets, so a pick is one
//! random (or, later, hashed) bucket and a short scan; raising one weight
//! moves only the buckets at the end of its range.

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
    fn even_split_covers_every_pool() {
        let s = Split::even(&[3, 4, 5]);
        let counts = [3, 4, 5].map(|p| (0..BUCKETS).filter(|&b| s.pick(b) == p).count());
        assert!(
            counts.iter().all(|&c| (3_333..=3_334).contains(&c)),
            "{counts:?}"
        );
    }
}
