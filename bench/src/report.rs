//! The table of scenarios and the targets of performance.md, as ratios within this run.

use std::time::Duration;

use authd::config::HashingConfig;

use crate::load::Outcome;

/// One line of the table.
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) outcome: Outcome,
}

impl Row {
    pub(crate) fn new(label: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            label: label.into(),
            outcome,
        }
    }

    fn p99(&self) -> u64 {
        self.outcome.latency.value_at_quantile(0.99)
    }
}

/// The server's resident memory over the overload scenario, from /proc.
pub(crate) struct Memory {
    base_kib: u64,
    peak_kib: u64,
    hash_memory_kib: u64,
}

impl Memory {
    /// Resets the kernel's peak-RSS mark of `pid` and returns its RSS now, in KiB.
    pub(crate) fn reset_peak(pid: u32) -> anyhow::Result<u64> {
        // "5" resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs).
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
        status_kib(pid, "VmRSS")
    }

    pub(crate) fn read(pid: u32, base_kib: u64, hashing: &HashingConfig) -> anyhow::Result<Self> {
        Ok(Self {
            base_kib,
            peak_kib: status_kib(pid, "VmHWM")?,
            hash_memory_kib: hashing.worker_count() as u64 * u64::from(hashing.memory_kib),
        })
    }
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// Everything one run measured.
#[derive(Default)]
pub(crate) struct Summary {
    pub(crate) workers: usize,
    pub(crate) health: Option<Row>,
    pub(crate) validate_warm: Option<Row>,
    pub(crate) validate_cold: Option<Row>,
    pub(crate) health_at_rate: Option<Row>,
    pub(crate) validate_at_rate: Option<Row>,
    /// ValidateToken under login saturation, and the logins meanwhile.
    pub(crate) mixed: Option<(Row, Row)>,
    pub(crate) refresh: Option<Row>,
    pub(crate) register: Option<Row>,
    pub(crate) login: Option<Row>,
    pub(crate) hash_time: Option<Duration>,
    pub(crate) overload: Option<(Row, Option<Memory>)>,
}

impl Summary {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers,
            ..Self::default()
        }
    }

    fn rows(&self) -> Vec<&Row> {
        let mixed = self.mixed.as_ref().map(|(v, l)| [v, l]);
        let overload = self.overload.as_ref().map(|(row, _)| row);
        [&self.health, &self.validate_warm, &self.validate_cold]
            .into_iter()
            .flatten()
            .chain(
                [&self.health_at_rate, &self.validate_at_rate]
                    .into_iter()
                    .flatten(),
            )
            .chain(mixed.into_iter().flatten())
            .chain(
                [&self.refresh, &self.register, &self.login]
                    .into_iter()
                    .flatten(),
            )
            .chain(overload)
            .collect()
    }

    pub(crate) fn print(&self) {
        let rows = self.rows();
        let errors: u64 = rows.iter().map(|row| row.outcome.error_count()).sum();
        let expected = self
            .overload
            .as_ref()
            .and_then(|(row, _)| row.outcome.errors.get("ResourceExhausted").copied())
            .unwrap_or(0);
        if errors > expected {
            println!(
                "\nTHIS RUN HAD {} UNEXPECTED ERRORS (see the errors column)",
                errors - expected
            );
        }
        if expected > 0 {
            println!(
                "\n{expected} RESOURCE_EXHAUSTED in the overload scenario: the refusals it \
                 exists to provoke"
            );
        }
        let baseline = self
            .health
            .as_ref()
            .map_or(f64::NAN, |row| row.outcome.throughput());
        println!(
            "\n{:<32} {:>9} {:>8} {:>8} {:>8} {:>7}  errors (p99 us of failing calls)",
            "scenario", "calls/s", "p50 us", "p99 us", "p999 us", "/health"
        );
        for row in rows {
            let o = &row.outcome;
            let errors = if o.errors.is_empty() {
                "-".to_owned()
            } else {
                let codes: Vec<String> = o.errors.iter().map(|(c, n)| format!("{c}={n}")).collect();
                format!(
                    "{} ({})",
                    codes.join(" "),
                    o.error_latency.value_at_quantile(0.99)
                )
            };
            println!(
                "{:<32} {:>9.0} {:>8} {:>8} {:>8} {:>7.2}  {errors}",
                row.label,
                o.throughput(),
                o.latency.value_at_quantile(0.5),
                row.p99(),
                o.latency.value_at_quantile(0.999),
                o.throughput() / baseline,
            );
        }
        self.print_targets(baseline);
    }

    fn print_targets(&self, baseline: f64) {
        println!("\ntargets (performance.md), ratios within this run:");
        let throughput = |row: &Option<Row>| row.as_ref().map(|r| r.outcome.throughput());
        if let Some(cold) = throughput(&self.validate_cold) {
            target(
                "validate-cold / health throughput",
                cold / baseline,
                ">=",
                0.6,
            );
        }
        if let Some(warm) = throughput(&self.validate_warm) {
            target(
                "validate-warm / health throughput",
                warm / baseline,
                ">=",
                0.85,
            );
        }
        if let (Some(health), Some(validate)) = (&self.health_at_rate, &self.validate_at_rate) {
            let ratio = validate.p99() as f64 / health.p99() as f64;
            target("validate p99 / health p99, same rate", ratio, "<=", 2.0);
        }
        if let (Some(unloaded), Some((loaded, _))) = (&self.validate_at_rate, &self.mixed) {
            let ratio = loaded.p99() as f64 / unloaded.p99() as f64;
            target("validate p99 under logins / unloaded", ratio, "<=", 2.0);
        }
        if let (Some(login), Some(hash)) = (throughput(&self.login), self.hash_time) {
            let bound = self.workers as f64 / hash.as_secs_f64();
            println!(
                "  one argon2 hash: {:.1} ms (median of 9, this run); {} workers -> bound {bound:.1}/s",
                hash.as_secs_f64() * 1000.0,
                self.workers
            );
            target(
                "login / (workers / one hash time)",
                login / bound,
                ">=",
                0.8,
            );
        }
        if let Some((row, memory)) = &self.overload {
            let refused = row
                .outcome
                .errors
                .get("ResourceExhausted")
                .copied()
                .unwrap_or(0);
            println!(
                "  overload: {} answered, {refused} refused with RESOURCE_EXHAUSTED, refusal p99 {} us",
                row.outcome.ok,
                row.outcome.error_latency.value_at_quantile(0.99)
            );
            if let Some(m) = memory {
                let bound = m.base_kib + m.hash_memory_kib;
                println!(
                    "  overload memory: RSS {} MiB before, peak {} MiB; base + workers x argon2 \
                     memory = {} MiB, so {} MiB of slack used",
                    m.base_kib / 1024,
                    m.peak_kib / 1024,
                    bound / 1024,
                    m.peak_kib.saturating_sub(bound) / 1024
                );
            }
        }
        for (label, row) in [("refresh", &self.refresh), ("register", &self.register)] {
            if let Some(row) = row {
                println!(
                    "  {label}: {:.0}/s, errors: {}",
                    row.outcome.throughput(),
                    row.outcome.error_count()
                );
            }
        }
    }
}

fn target(label: &str, value: f64, comparison: &str, goal: f64) {
    let met = match comparison {
        ">=" => value >= goal,
        _ => value <= goal,
    };
    println!(
        "  {label:<40} {value:>6.2}  (target {comparison} {goal}) {}",
        if met { "met" } else { "NOT MET" }
    );
}
