//! The table of scenarios and the targets of performance.md, as ratios within this run.

use std::time::Duration;

use authd::config::HashingConfig;

use crate::{footprint::CacheMemory, load::Outcome};

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

/// A throughput scenario run in rounds: pooled over them, and each round's calls/s.
pub(crate) struct Rounds {
    pub(crate) row: Row,
    pub(crate) rates: Vec<f64>,
}

impl Rounds {
    pub(crate) fn new(label: impl Into<String>) -> anyhow::Result<Self> {
        Ok(Self {
            row: Row::new(label, Outcome::new()?),
            rates: Vec::new(),
        })
    }

    pub(crate) fn add_round(&mut self, outcome: Outcome) -> anyhow::Result<()> {
        self.rates.push(outcome.throughput());
        self.row.outcome.merge(outcome)
    }

    /// Each round's throughput over `baseline`'s in the same round.
    fn round_ratios(&self, baseline: &Self) -> Vec<f64> {
        let pairs = self.rates.iter().zip(&baseline.rates);
        pairs.map(|(rate, base)| rate / base).collect()
    }

    /// This scenario's throughput over `baseline`'s as its target counts it: the median
    /// of the rounds' ratios.
    fn print_ratio_to(&self, baseline: &Self, label: &str, goal: f64) {
        let pooled = self.row.outcome.throughput() / baseline.row.outcome.throughput();
        median_target(label, self.round_ratios(baseline), ">=", goal, pooled);
    }
}

/// The open-loop phases at one rate, each pooled over its rounds, and every round's p99s.
pub(crate) struct AtRate {
    health: Option<Row>,
    validate: Row,
    /// ValidateToken while a background load keeps the hash pool full (logins, or crafted
    /// registrations), and that load meanwhile.
    loaded: Option<(Row, Row)>,
    rounds: Vec<RoundP99>,
}

/// One round's p99 latency of each phase, in microseconds.
struct RoundP99 {
    health: Option<u64>,
    validate: u64,
    loaded: Option<u64>,
}

impl AtRate {
    /// `loaded` names the background load, if any ("logins").
    pub(crate) fn new(rate: f64, health: bool, loaded: Option<&str>) -> anyhow::Result<Self> {
        let row = |label: String| anyhow::Ok(Row::new(label, Outcome::new()?));
        Ok(Self {
            health: health
                .then(|| row(format!("health @{rate:.0}/s")))
                .transpose()?,
            validate: row(format!("validate-cold @{rate:.0}/s"))?,
            loaded: loaded
                .map(|load| {
                    anyhow::Ok((
                        row(format!("validate-cold @{rate:.0}/s + {load}"))?,
                        row(format!("  {load} meanwhile"))?,
                    ))
                })
                .transpose()?,
            rounds: Vec::new(),
        })
    }

    pub(crate) fn add_round(
        &mut self,
        health: Option<Outcome>,
        validate: Outcome,
        loaded: Option<(Outcome, Outcome)>,
    ) -> anyhow::Result<()> {
        let p99 = |outcome: &Outcome| outcome.latency.value_at_quantile(0.99);
        self.rounds.push(RoundP99 {
            health: health.as_ref().map(p99),
            validate: p99(&validate),
            loaded: loaded.as_ref().map(|(validate, _)| p99(validate)),
        });
        if let (Some(pooled), Some(health)) = (&mut self.health, health) {
            pooled.outcome.merge(health)?;
        }
        self.validate.outcome.merge(validate)?;
        if let (Some((pooled, pooled_logins)), Some((validate, logins))) =
            (&mut self.loaded, loaded)
        {
            pooled.outcome.merge(validate)?;
            pooled_logins.outcome.merge(logins)?;
        }
        Ok(())
    }

    fn rows(&self) -> impl Iterator<Item = &Row> {
        let loaded = self.loaded.as_ref().map(|(v, l)| [v, l]);
        self.health
            .iter()
            .chain([&self.validate])
            .chain(loaded.into_iter().flatten())
    }

    /// A p99 ratio as its target counts it: the median of the rounds' ratios, each round
    /// comparing phases run seconds apart; the pooled ratio is printed beside it.
    fn print_ratio(&self, label: &str, ratio: impl Fn(&RoundP99) -> Option<f64>, pooled: f64) {
        let ratios = self.rounds.iter().filter_map(ratio).collect();
        median_target(label, ratios, "<=", 2.0, pooled);
    }
}

/// A target met or not by the median of the rounds' `ratios`, with every round's ratio
/// and the ratio of all rounds pooled printed beneath.
fn median_target(label: &str, mut ratios: Vec<f64>, comparison: &str, goal: f64, pooled: f64) {
    let median = median(&mut ratios);
    target(label, median, comparison, goal);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "    median of {} rounds: {}; all rounds pooled: {pooled:.2}",
        ratios.len(),
        each.join(" ")
    );
}

/// The median of the finite `values` (NaN if none), which it leaves sorted and finite.
fn median(values: &mut Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator as f64
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

pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// Argon2 measured in this run on the idle server, before any load.
#[derive(Clone, Copy)]
pub(crate) struct HashTimes {
    /// One hash with nothing else running.
    pub(crate) one: Duration,
    /// Hashes per second with every worker hashing at once: below workers / `one` by
    /// what memory-hard hashes lose sharing the caches and memory bandwidth.
    pub(crate) all_workers_rate: f64,
}

/// Everything one run measured.
#[derive(Default)]
pub(crate) struct Summary {
    pub(crate) workers: usize,
    pub(crate) health: Option<Rounds>,
    pub(crate) validate_warm: Option<Rounds>,
    pub(crate) validate_cold: Option<Rounds>,
    pub(crate) validate_uncached: Option<Rounds>,
    pub(crate) cache_memory: Option<CacheMemory>,
    /// How soon a logout is REVOKED on the other server, and whether its database pushes
    /// revocations (PostgreSQL), if known.
    pub(crate) revocation: Option<(Outcome, Option<bool>)>,
    /// The latency and mixed scenarios.
    pub(crate) at_rate: Option<AtRate>,
    /// ValidateToken alone and while crafted registrations keep the hash pool busy.
    pub(crate) crafted: Option<AtRate>,
    pub(crate) refresh: Option<Row>,
    pub(crate) register: Option<Row>,
    pub(crate) login: Option<Rounds>,
    /// One argon2 hash timed before each login round.
    pub(crate) login_round_hash_times: Vec<Duration>,
    pub(crate) hash_times: Option<HashTimes>,
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
        let overload = self.overload.as_ref().map(|(row, _)| row);
        [
            &self.health,
            &self.validate_warm,
            &self.validate_cold,
            &self.validate_uncached,
        ]
        .into_iter()
        .flatten()
        .map(|rounds| &rounds.row)
        .chain(self.at_rate.iter().flat_map(AtRate::rows))
        .chain(self.crafted.iter().flat_map(AtRate::rows))
        .chain([&self.refresh, &self.register].into_iter().flatten())
        .chain(self.login.as_ref().map(|login| &login.row))
        .chain(overload)
        .collect()
    }

    pub(crate) fn print(&self) {
        let rows = self.rows();
        let errors: u64 = rows
            .iter()
            .map(|row| row.outcome.error_count())
            .sum::<u64>()
            + self
                .revocation
                .as_ref()
                .map_or(0, |(outcome, _)| outcome.error_count());
        let refused = |row: &Row, code: &str| row.outcome.errors.get(code).copied().unwrap_or(0);
        // Provoked on purpose: the overload's refusals, and the crafted registrations'
        // (refused where the estimate judges them weak, or as busy beyond the pool).
        let expected = self
            .overload
            .as_ref()
            .map_or(0, |(row, _)| refused(row, "ResourceExhausted"))
            + self
                .crafted
                .as_ref()
                .and_then(|crafted| crafted.loaded.as_ref())
                .map_or(0, |(_, load)| {
                    refused(load, "InvalidArgument") + refused(load, "ResourceExhausted")
                });
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
            .map_or(f64::NAN, |health| health.row.outcome.throughput());
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
        self.print_targets();
    }

    fn print_revocation(&self) {
        let Some((outcome, pushed)) = &self.revocation else {
            return;
        };
        let ms = |q: f64| outcome.latency.value_at_quantile(q) as f64 / 1e3;
        let how = match pushed {
            Some(true) => "pushed (PostgreSQL LISTEN/NOTIFY)",
            Some(false) => "polled every AUTHD_REVOCATION_SYNC",
            None => "a running server's database",
        };
        println!(
            "\nrevocation, logout on one server until REVOKED on the other ({how}): {} trials, \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failed",
            outcome.ok,
            ms(0.5),
            ms(0.99),
            outcome.latency.max() as f64 / 1e3,
            outcome.error_count(),
        );
    }

    fn print_cache_memory(&self) {
        let Some(cache) = &self.cache_memory else {
            return;
        };
        println!(
            "\ncache memory: the server verified {} distinct tokens; its RSS went from {:.1} \
             to {:.1} MiB: {:.0} bytes per cached token",
            cache.tokens,
            cache.before_kib as f64 / 1024.0,
            cache.after_kib as f64 / 1024.0,
            cache.bytes_per_token(),
        );
    }

    fn print_targets(&self) {
        self.print_cache_memory();
        self.print_revocation();
        println!("\ntargets (performance.md), ratios within this run:");
        if let Some((outcome, Some(true))) = &self.revocation {
            let p99_ms = outcome.latency.value_at_quantile(0.99) as f64 / 1e3;
            target(
                "revocation p99 ms on another replica, pushed",
                p99_ms,
                "<=",
                100.0,
            );
        }
        if let Some(health) = &self.health {
            if let Some(cold) = &self.validate_cold {
                cold.print_ratio_to(health, "validate-cold / health throughput", 0.6);
            }
            if let Some(warm) = &self.validate_warm {
                warm.print_ratio_to(health, "validate-warm / health throughput", 0.85);
            }
            if let Some(uncached) = &self.validate_uncached {
                uncached.print_ratio_to(health, "validate-uncached / health throughput", 0.5);
            }
        }
        if let Some(at_rate) = &self.at_rate {
            let validate = at_rate.validate.p99();
            if let Some(health) = &at_rate.health {
                at_rate.print_ratio(
                    "validate p99 / health p99, same rate",
                    |round| Some(ratio(round.validate, round.health?)),
                    ratio(validate, health.p99()),
                );
            }
            if let Some((loaded, _)) = &at_rate.loaded {
                at_rate.print_ratio(
                    "validate p99 under logins / unloaded",
                    |round| Some(ratio(round.loaded?, round.validate)),
                    ratio(loaded.p99(), validate),
                );
            }
        }
        if let Some(crafted) = &self.crafted
            && let Some((loaded, _)) = &crafted.loaded
        {
            crafted.print_ratio(
                "validate p99 while crafted registers run / unloaded",
                |round| Some(ratio(round.loaded?, round.validate)),
                ratio(loaded.p99(), crafted.validate.p99()),
            );
        }
        if let (Some(login), Some(hash)) = (&self.login, &self.hash_times) {
            let bound = |one: Duration| self.workers as f64 / one.as_secs_f64();
            let times = &self.login_round_hash_times;
            let ratios = login.rates.iter().zip(times);
            let ratios = ratios.map(|(rate, one)| rate / bound(*one)).collect();
            let mut millis: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
            let typical = Duration::from_secs_f64(median(&mut millis) / 1e3);
            println!(
                "  one argon2 hash before each login round (median of 3): {:.1} to {:.1} ms, \
                 median {:.1} ms; {} workers -> bound {:.1}/s",
                millis.first().copied().unwrap_or(f64::NAN),
                millis.last().copied().unwrap_or(f64::NAN),
                typical.as_secs_f64() * 1e3,
                self.workers,
                bound(typical)
            );
            let throughput = login.row.outcome.throughput();
            let pooled = throughput / bound(typical);
            median_target(
                "login / (workers / one hash time)",
                ratios,
                ">=",
                0.8,
                pooled,
            );
            println!(
                "    at the start: one hash {:.1} ms (median of 9); {} workers hashing at once, \
                 no RPC: {:.1}/s ({:.2} of that bound); login / that: {:.2}",
                hash.one.as_secs_f64() * 1e3,
                self.workers,
                hash.all_workers_rate,
                hash.all_workers_rate / bound(hash.one),
                throughput / hash.all_workers_rate
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_round_and_ignores_rounds_without_a_ratio() {
        // A round with no call has a p99 of 0: its ratio is infinite or NaN.
        let mut ratios = vec![5.6, 0.6, f64::INFINITY, 2.2, f64::NAN, 0.8, 0.9];
        assert_eq!(median(&mut ratios), 0.9);
        assert_eq!(ratios, [0.6, 0.8, 0.9, 2.2, 5.6]);
        assert_eq!(median(&mut vec![3.0, 1.0, 2.0, 4.0]), 2.5);
        assert!(median(&mut vec![f64::NAN]).is_nan());
    }

    /// `micros.len()` calls in one second, with these latencies.
    fn outcome(micros: &[u64]) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::new()?;
        for &us in micros {
            outcome.ok += 1;
            outcome.latency.record(us)?;
        }
        outcome.elapsed = Duration::from_secs(1);
        Ok(outcome)
    }

    #[test]
    fn throughput_ratios_pair_each_round_with_the_baselines_same_round() -> anyhow::Result<()> {
        let (mut health, mut validate) = (Rounds::new("health")?, Rounds::new("validate")?);
        for (base, calls) in [(100, 90), (200, 100), (50, 45)] {
            health.add_round(outcome(&vec![10; base])?)?;
            validate.add_round(outcome(&vec![10; calls])?)?;
        }
        assert_eq!(validate.round_ratios(&health), [0.9, 0.5, 0.9]);
        let mut ratios = validate.round_ratios(&health);
        assert_eq!(median(&mut ratios), 0.9);
        // Pooled, the slow second round would pull the figure down to 235 / 350.
        assert_eq!(validate.row.outcome.ok, 235);
        assert_eq!(health.row.outcome.throughput(), 350.0 / 3.0);
        Ok(())
    }

    #[test]
    fn rounds_are_pooled_and_each_keeps_its_own_p99() -> anyhow::Result<()> {
        let mut at_rate = AtRate::new(100.0, true, Some("logins"))?;
        at_rate.add_round(
            Some(outcome(&[100; 10])?),
            outcome(&[200; 10])?,
            Some((outcome(&[400; 10])?, outcome(&[9000; 2])?)),
        )?;
        at_rate.add_round(
            Some(outcome(&[1000; 10])?),
            outcome(&[300; 30])?,
            Some((outcome(&[300; 10])?, outcome(&[9000; 2])?)),
        )?;
        let p99s: Vec<_> = at_rate
            .rounds
            .iter()
            .map(|r| (r.health, r.validate, r.loaded))
            .collect();
        assert_eq!(
            p99s,
            [(Some(100), 200, Some(400)), (Some(1000), 300, Some(300))]
        );
        assert_eq!(at_rate.validate.outcome.ok, 40);
        assert_eq!(at_rate.validate.outcome.throughput(), 20.0);
        assert_eq!(at_rate.validate.p99(), 300);
        let labels: Vec<_> = at_rate.rows().map(|row| row.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "health @100/s",
                "validate-cold @100/s",
                "validate-cold @100/s + logins",
                "  logins meanwhile"
            ]
        );
        Ok(())
    }
}
