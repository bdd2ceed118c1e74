//! A scenario's verdict: one markdown table of invariants (what was observed, the
//! bound it must meet, whether it did), plus free-form notes with the figures behind it.
//! The binary's exit status is the conjunction of every `ok`.

use std::fmt::Display;
use std::time::Duration;

pub struct Report {
    pub scenario: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    pub elapsed: Duration,
}

struct Row {
    invariant: String,
    observed: String,
    bound: String,
    ok: bool,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            rows: Vec::new(),
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Records one invariant.
    pub fn check(
        &mut self,
        invariant: &str,
        observed: impl Display,
        bound: impl Display,
        ok: bool,
    ) -> &mut Self {
        self.rows.push(Row {
            invariant: invariant.to_owned(),
            observed: observed.to_string(),
            bound: bound.to_string(),
            ok,
        });
        self
    }

    /// `observed ≤ bound` for counts.
    pub fn at_most(&mut self, invariant: &str, observed: i64, bound: i64) -> &mut Self {
        self.check(invariant, observed, format!("≤ {bound}"), observed <= bound)
    }

    /// A duration that must stay within `bound`; `None` = it did not happen while the
    /// scenario waited for it (as long as `bound`).
    pub fn within(
        &mut self,
        invariant: &str,
        observed: Option<Duration>,
        bound: Duration,
    ) -> &mut Self {
        self.within_waited(invariant, observed, bound, bound)
    }

    /// [`Self::within`] for a wait longer than the bound (to tell late from never).
    pub fn within_waited(
        &mut self,
        invariant: &str,
        observed: Option<Duration>,
        bound: Duration,
        waited: Duration,
    ) -> &mut Self {
        let shown = observed.map_or_else(
            || format!("not within {}", secs(waited)),
            |d| secs(d).to_string(),
        );
        let ok = observed.is_some_and(|d| d <= bound);
        self.check(invariant, shown, format!("≤ {}", secs(bound)), ok)
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// A scenario that could not run to its checks (a panic, a missing tool).
    pub fn aborted(scenario: &str, why: &str) -> Self {
        let mut r = Self::new(scenario);
        r.check("scenario ran to completion", why, "completes", false);
        r
    }

    pub fn ok(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.ok)
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "\n### {} — {} ({:.0} s)\n\n| invariant | observed | bound | ok |\n|---|---|---|---|\n",
            self.scenario,
            if self.ok() { "PASS" } else { "FAIL" },
            self.elapsed.as_secs_f64()
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.invariant,
                r.observed,
                r.bound,
                if r.ok { "yes" } else { "**NO**" }
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("\n{n}"));
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// `1.23 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
