//! What a benchmark run does: workloads, the mixed workload's proportions, and the parsing of
//! sizes and durations given on the command line.

use std::time::Duration;

use serde::Serialize;

/// One kind of operation a worker performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Set,
    Properties,
    Get,
    List,
    Delete,
}

impl Op {
    pub(crate) const ALL: [Op; 5] = [Op::Set, Op::Properties, Op::Get, Op::List, Op::Delete];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Properties => "properties",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What the workers do, chosen with `--workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// Upload new objects (S3: PUT).
    Set,
    /// Metadata of a prepared object (S3: HEAD).
    Properties,
    /// Download a prepared object: /object/get with `keys`, then a GET of the returned URL (S3: GET).
    Get,
    /// One page of the prepared folder (S3: one ListObjectsV2 request, delimiter `/`, max-keys
    /// 1000, the first page).
    List,
    /// Delete prepared objects, each once (S3: DELETE); the run ends when none are left.
    Delete,
    /// 45% get, 30% properties, 15% set, 10% delete: reads use the first three quarters of the
    /// prepared objects, deletes the last quarter and the objects its sets create.
    Mixed,
}

impl Workload {
    /// Whether the workload reads or removes objects that must exist first.
    pub(crate) fn needs_objects(self) -> bool {
        !matches!(self, Workload::Set)
    }
}

/// Proportions of the mixed workload, in percent, in the order they are drawn.
pub(crate) const MIXED: [(Op, u32); 4] = [(Op::Get, 45), (Op::Properties, 30), (Op::Set, 15), (Op::Delete, 10)];

/// The operation for a draw `roll` in `0..100`: the mixed workload takes the first entry whose
/// running total exceeds it; every other workload always does its one operation.
pub(crate) fn pick(workload: Workload, roll: u32) -> Op {
    match workload {
        Workload::Set => Op::Set,
        Workload::Properties => Op::Properties,
        Workload::Get => Op::Get,
        Workload::List => Op::List,
        Workload::Delete => Op::Delete,
        Workload::Mixed => {
            let mut total = 0;
            for (op, share) in MIXED {
                total += share;
                if roll < total {
                    return op;
                }
            }
            MIXED[MIXED.len() - 1].0
        }
    }
}

/// A byte count: a plain integer, or a number with a unit (`4KiB`, `4 KiB`, `1GiB`, `500 MB`;
/// `K`, `M`, `G` alone are binary, as with `dd`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim();
    let shorthand = match unit {
        "k" | "K" => Some(1u64 << 10),
        "m" | "M" => Some(1 << 20),
        "g" | "G" => Some(1 << 30),
        "t" | "T" => Some(1 << 40),
        _ => None,
    };
    if let (Some(multiplier), Ok(n)) = (shorthand, number.parse::<u64>()) {
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| format!("'{text}' is too large"));
    }
    crate::config::parse_byte_count(text).map_err(|_| format!("'{text}' is not a size (try 4096, 4KiB or 1GiB)"))
}

/// A duration: seconds as a plain number, or with a unit (`500ms`, `10s`, `2m`, `1h`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("'{text}' is not a duration (try 10s, 500ms or 2m)");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_proportions_are_the_issues() {
        let mut counts = [0u32; 5];
        for roll in 0..100 {
            counts[pick(Workload::Mixed, roll).index()] += 1;
        }
        assert_eq!(counts[Op::Get.index()], 45);
        assert_eq!(counts[Op::Properties.index()], 30);
        assert_eq!(counts[Op::Set.index()], 15);
        assert_eq!(counts[Op::Delete.index()], 10);
        assert_eq!(counts[Op::List.index()], 0);
        assert_eq!(MIXED.iter().map(|(_, share)| share).sum::<u32>(), 100);
    }

    #[test]
    fn mixed_boundaries() {
        assert_eq!(pick(Workload::Mixed, 0), Op::Get);
        assert_eq!(pick(Workload::Mixed, 44), Op::Get);
        assert_eq!(pick(Workload::Mixed, 45), Op::Properties);
        assert_eq!(pick(Workload::Mixed, 74), Op::Properties);
        assert_eq!(pick(Workload::Mixed, 75), Op::Set);
        assert_eq!(pick(Workload::Mixed, 89), Op::Set);
        assert_eq!(pick(Workload::Mixed, 90), Op::Delete);
        assert_eq!(pick(Workload::Mixed, 99), Op::Delete);
        // Out of range rolls still give an operation.
        assert_eq!(pick(Workload::Mixed, 1000), Op::Delete);
    }

    #[test]
    fn single_workloads_do_one_thing() {
        for roll in [0, 50, 99] {
            assert_eq!(pick(Workload::Set, roll), Op::Set);
            assert_eq!(pick(Workload::Properties, roll), Op::Properties);
            assert_eq!(pick(Workload::Get, roll), Op::Get);
            assert_eq!(pick(Workload::List, roll), Op::List);
            assert_eq!(pick(Workload::Delete, roll), Op::Delete);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("4KB"), Ok(4000));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-4KiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
