//! Latency histograms (HdrHistogram, microseconds) and the report a run prints, as text or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram can hold: one hour, in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies and counts of one kind of operation (or of all of them).
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) latency: Histogram<u64>,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) bytes: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            // Three significant figures: 0.1% resolution at any magnitude.
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            ops: 0,
            errors: 0,
            bytes: 0,
        }
    }

    /// A successful operation that took `elapsed` and moved `bytes` of object data.
    pub(crate) fn success(&mut self, elapsed: Duration, bytes: u64) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros);
        self.ops += 1;
        self.bytes += bytes;
    }

    pub(crate) fn error(&mut self) {
        self.errors += 1;
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
    }

    /// The figures of this tally over a run of `elapsed`.
    pub(crate) fn summary(&self, elapsed: Duration) -> Summary {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Summary {
            ops: self.ops,
            errors: self.errors,
            bytes: self.bytes,
            ops_per_s: self.ops as f64 / seconds,
            mb_per_s: self.bytes as f64 / 1e6 / seconds,
            latency_ms: Percentiles::of(&self.latency),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// The figures of one tally.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    /// Object bytes moved (uploaded or downloaded), not counting protocol overhead.
    pub(crate) bytes: u64,
    pub(crate) ops_per_s: f64,
    /// Object bytes per second in decimal megabytes (1 MB = 1,000,000 bytes).
    pub(crate) mb_per_s: f64,
    pub(crate) latency_ms: Percentiles,
}

/// How the objects a workload needs were put in place.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PrepareSummary {
    pub(crate) objects: u64,
    pub(crate) connections: usize,
    pub(crate) seconds: f64,
    pub(crate) ops_per_s: f64,
    pub(crate) errors: u64,
}

/// How the S3 target sent each upload of a run that used multipart uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct MultipartSummary {
    pub(crate) part_size: u64,
    /// Parts per object.
    pub(crate) parts: u64,
    /// Parts in flight at once.
    pub(crate) concurrency: usize,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) target: String,
    pub(crate) workload: String,
    pub(crate) concurrency: usize,
    pub(crate) object_size: u64,
    pub(crate) seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prepare: Option<PrepareSummary>,
    pub(crate) total: Summary,
    /// Per operation, when the workload mixes several.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) by_op: BTreeMap<String, Summary>,
    /// The first few error messages.
    pub(crate) error_samples: Vec<String>,
    /// For list: the most entries one page returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) list_entries: Option<u64>,
    /// For S3 uploads larger than the part size: how they were split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) multipart: Option<MultipartSummary>,
}

fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

fn summary_line(label: &str, s: &Summary) -> String {
    format!(
        "{label:<11} {:>9} ops {:>6} err {:>10.1} ops/s {:>9.2} MB/s   p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>8.3} ms",
        s.ops,
        s.errors,
        s.ops_per_s,
        s.mb_per_s,
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.latency_ms.p999,
        s.latency_ms.max
    )
}

impl Report {
    pub(crate) fn to_text(&self) -> String {
        let mut out = format!(
            "{} {} : {} connections, objects of {}, {:.2} s\n",
            self.target,
            self.workload,
            self.concurrency,
            size_text(self.object_size),
            self.seconds
        );
        if let Some(prepare) = &self.prepare {
            out.push_str(&format!(
                "prepared    {:>9} objects in {:.2} s ({:.1} ops/s, {} connections, {} errors)\n",
                prepare.objects, prepare.seconds, prepare.ops_per_s, prepare.connections, prepare.errors
            ));
        }
        if let Some(m) = &self.multipart {
            out.push_str(&format!(
                "multipart   {} parts of {} per object, {} in flight\n",
                m.parts,
                size_text(m.part_size),
                m.concurrency
            ));
        }
        if self.workload == "prepare" {
            return out.trim_end().to_owned();
        }
        out.push_str(&summary_line("total", &self.total));
        for (op, summary) in &self.by_op {
            out.push('\n');
            out.push_str(&summary_line(&format!("  {op}"), summary));
        }
        if let Some(entries) = self.list_entries {
            out.push_str(&format!("\nentries per page: {entries}"));
        }
        for sample in &self.error_samples {
            out.push_str(&format!("\nerror: {sample}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        // HdrHistogram with three significant figures: within 0.1% (plus rounding).
        (actual - expected).abs() <= expected * 0.002 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut tally = Tally::new();
        // 1 ms .. 1000 ms, one each.
        for ms in 1..=1000u64 {
            tally.success(Duration::from_millis(ms), 10);
        }
        let p = Percentiles::of(&tally.latency);
        assert!(close(p.p50, 500.0), "p50 {}", p.p50);
        assert!(close(p.p90, 900.0), "p90 {}", p.p90);
        assert!(close(p.p99, 990.0), "p99 {}", p.p99);
        assert!(close(p.p999, 999.0), "p99.9 {}", p.p999);
        assert!(close(p.max, 1000.0), "max {}", p.max);
        assert!(close(p.mean, 500.5), "mean {}", p.mean);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_not_p50() {
        let mut tally = Tally::new();
        for _ in 0..985 {
            tally.success(Duration::from_micros(200), 0);
        }
        for _ in 0..15 {
            tally.success(Duration::from_millis(50), 0);
        }
        let p = Percentiles::of(&tally.latency);
        assert!(close(p.p50, 0.2), "p50 {}", p.p50);
        assert!(close(p.p99, 50.0), "p99 {}", p.p99);
        assert!(close(p.p999, 50.0), "p99.9 {}", p.p999);
    }

    #[test]
    fn rates_and_merging() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        for _ in 0..100 {
            a.success(Duration::from_millis(1), 1_000_000);
        }
        for _ in 0..100 {
            b.success(Duration::from_millis(3), 1_000_000);
        }
        b.error();
        a.merge(&b);
        let s = a.summary(Duration::from_secs(2));
        assert_eq!(s.ops, 200);
        assert_eq!(s.errors, 1);
        assert!(close(s.ops_per_s, 100.0));
        assert!(close(s.mb_per_s, 100.0));
        assert!(close(s.latency_ms.p50, 1.0), "p50 {}", s.latency_ms.p50);
        assert!(close(s.latency_ms.p99, 3.0), "p99 {}", s.latency_ms.p99);
    }

    #[test]
    fn empty_and_sub_microsecond() {
        let empty = Tally::new().summary(Duration::from_secs(1));
        assert_eq!(empty.ops, 0);
        assert_eq!(empty.latency_ms.p99, 0.0);
        let mut tally = Tally::new();
        tally.success(Duration::from_nanos(10), 0);
        assert_eq!(tally.latency.max(), 1);
    }

    #[test]
    fn text_and_json_carry_the_figures() {
        let mut tally = Tally::new();
        tally.success(Duration::from_millis(2), 4096);
        let report = Report {
            target: "stowage".into(),
            workload: "set".into(),
            concurrency: 16,
            object_size: 4096,
            seconds: 1.0,
            prepare: None,
            total: tally.summary(Duration::from_secs(1)),
            by_op: BTreeMap::new(),
            error_samples: vec!["boom".into()],
            list_entries: None,
            multipart: None,
        };
        let text = report.to_text();
        assert!(
            text.contains("stowage set : 16 connections, objects of 4 KiB"),
            "{text}"
        );
        assert!(text.contains("error: boom"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["total"]["ops"], 1);
        assert_eq!(json["object_size"], 4096);
        assert!(json["total"]["latency_ms"]["p99"].as_f64().unwrap() > 1.9);
        assert!(json.get("by_op").is_none());
        assert!(json.get("multipart").is_none());
    }

    #[test]
    fn multipart_uploads_are_reported() {
        let mut tally = Tally::new();
        tally.success(Duration::from_secs(4), 1 << 30);
        let report = Report {
            target: "s3".into(),
            workload: "set".into(),
            concurrency: 1,
            object_size: 1 << 30,
            seconds: 4.0,
            prepare: None,
            total: tally.summary(Duration::from_secs(4)),
            by_op: BTreeMap::new(),
            error_samples: vec![],
            list_entries: None,
            multipart: Some(MultipartSummary {
                part_size: 16 << 20,
                parts: 64,
                concurrency: 4,
            }),
        };
        let text = report.to_text();
        assert!(
            text.contains("multipart   64 parts of 16 MiB per object, 4 in flight"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["multipart"]["part_size"], 16 << 20);
        assert_eq!(json["multipart"]["parts"], 64);
        assert_eq!(json["multipart"]["concurrency"], 4);
    }
}
