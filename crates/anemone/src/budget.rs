//! The compile budget. The ANE accepts about 119 compiles per process, then compiles fail
//! silently and the process crashes; unloading does not give slots back and cache hits do
//! not use one (REFERENCE.md §2: maderix README, libane, measured). Every backend counts
//! against a budget so that code which would crash an ANE fails the same way everywhere.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// When to warn and when to refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Compiles after which each new compile prints a warning.
    pub warn_at: usize,
    /// Compiles after which a new compile is refused.
    pub refuse_at: usize,
}

impl Default for BudgetLimits {
    /// Warn at 100, refuse at 115, as projects that run on the ANE do (REFERENCE.md §2).
    fn default() -> BudgetLimits {
        BudgetLimits { warn_at: 100, refuse_at: 115 }
    }
}

/// A counter of real compiles with its limits.
#[derive(Debug)]
pub struct CompileBudget {
    limits: BudgetLimits,
    used: AtomicUsize,
    /// Said in errors: "per process" on the ANE, "per device" on the simulator.
    scope: &'static str,
}

/// What a successful charge says about the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Within the limits, below the warning threshold.
    Ok,
    /// Past the warning threshold: `remaining` compiles are left.
    Warn {
        /// Compiles charged so far, this one included.
        used: usize,
        /// Compiles left before the budget refuses.
        remaining: usize,
    },
}

impl CompileBudget {
    /// A fresh budget with no compiles used. `scope` is appended to the refusal message
    /// (e.g. `" per process"`), so it starts with a space.
    pub fn new(limits: BudgetLimits, scope: &'static str) -> CompileBudget {
        CompileBudget { limits, used: AtomicUsize::new(0), scope }
    }

    /// The warning and refusal thresholds this budget was made with.
    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    /// Compiles used so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Compiles left before refusal.
    pub fn remaining(&self) -> usize {
        self.limits.refuse_at.saturating_sub(self.used())
    }

    /// Gives back a compile that was charged but did not happen.
    pub fn refund(&self) {
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_sub(1));
    }

    /// Takes one compile from the budget, or refuses when it is spent.
    pub fn charge(&self) -> Result<Charge> {
        let refuse_at = self.limits.refuse_at;
        let prev = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| (u < refuse_at).then_some(u + 1))
            .map_err(|used| Error::BudgetExhausted { used, limit: refuse_at, scope: self.scope })?;
        let used = prev + 1;
        if used > self.limits.warn_at {
            Ok(Charge::Warn { used, remaining: refuse_at - used })
        } else {
            Ok(Charge::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_then_refuses() {
        let b = CompileBudget::new(BudgetLimits { warn_at: 2, refuse_at: 3 }, " per device");
        assert_eq!(b.charge().unwrap(), Charge::Ok);
        assert_eq!(b.charge().unwrap(), Charge::Ok);
        assert_eq!(b.charge().unwrap(), Charge::Warn { used: 3, remaining: 0 });
        let e = b.charge().unwrap_err().to_string();
        assert!(e.contains("3 compiles of 3 allowed per device"), "{e}");
        assert!(e.contains("dynamic weights"), "{e}");
        assert_eq!(b.used(), 3);
        b.refund();
        assert_eq!(b.used(), 2);
        assert_eq!(b.charge().unwrap(), Charge::Warn { used: 3, remaining: 0 });
    }

    #[test]
    fn default_limits_match_the_reference() {
        assert_eq!(BudgetLimits::default(), BudgetLimits { warn_at: 100, refuse_at: 115 });
    }
}
