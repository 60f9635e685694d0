//! `--shard i/n`: this machine's share of a batch, so n machines split one job list with no
//! coordinator. `i` is 0-based (as `$SLURM_ARRAY_TASK_ID` with `--array=0-(n-1)` and a
//! Kubernetes Indexed Job's `$JOB_COMPLETION_INDEX`); job `k` of the full, sorted list belongs
//! to shard `k % n`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One of `count` shards, `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether job `job_index` (its position in the full job list) is this shard's.
    pub fn contains(&self, job_index: usize) -> bool {
        job_index % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::option("--shard", format!("`{s}`: {reason}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected i/n, e.g. 0/4 (0-based index i of n shards)".into()))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad(format!("the index `{i}` is not a whole number >= 0")))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("the shard count `{n}` is not a whole number >= 1")))?;
        if count == 0 {
            return Err(bad("the shard count must be at least 1".into()));
        }
        if index >= count {
            return Err(bad(format!(
                "the index is 0-based and must be below the count ({})",
                count
            )));
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
        for bad in ["3/2", "2/2", "0/0", "a/b", "1", "-1/2", "1/-2", ""] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn shards_cover_every_job_once() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for job in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.contains(job)).count(), 1);
        }
    }
}
