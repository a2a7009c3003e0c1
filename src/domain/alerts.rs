//! The Monitor's four alerts and the state machine each one runs:
//! `ok → firing` once its condition has held for the rule's `for`,
//! `firing → resolved` when it clears, `resolved → firing` for a new
//! episode. Pure: the caller brings the clock and the measurements.

use std::{fmt, str::FromStr, time::Duration};

use time::OffsetDateTime;

use super::{IllegalTransition, UnknownStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertName {
    QueueBackup,
    SlowProcessing,
    HighErrorRate,
    StorageLimit,
}

impl AlertName {
    pub const ALL: [AlertName; 4] = [
        AlertName::QueueBackup,
        AlertName::SlowProcessing,
        AlertName::HighErrorRate,
        AlertName::StorageLimit,
    ];

    /// The `alert` label and the `alerts.name` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::QueueBackup => "queue_backup",
            AlertName::SlowProcessing => "slow_processing",
            AlertName::HighErrorRate => "high_error_rate",
            AlertName::StorageLimit => "storage_limit",
        }
    }
}

impl FromStr for AlertName {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnknownStatus {
                kind: "alert name",
                value: s.to_owned(),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Ok,
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Ok => "ok",
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn can_transition_to(self, next: Self) -> bool {
        use AlertStatus::*;
        matches!(
            (self, next),
            (Ok, Firing) | (Firing, Resolved) | (Resolved, Firing)
        )
    }

    pub fn transition(self, next: Self) -> Result<Self, IllegalTransition> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                kind: "alert",
                from: self.as_str(),
                to: next.as_str(),
            })
        }
    }
}

impl FromStr for AlertStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Self::Ok),
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            _ => Err(UnknownStatus {
                kind: "alert",
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alert's row says now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertState {
    pub status: AlertStatus,
    /// Since when the condition has held without a break; `None` while clear.
    pub breach_since: Option<OffsetDateTime>,
}

/// What one measurement means for an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes but (maybe) when the breach began.
    Stay,
    /// A new episode: the condition has held for the rule's `for`.
    Fire,
    /// The episode is over.
    Resolve,
}

/// Judges one measurement: `breached` is whether the condition holds now.
/// Returns the new `breach_since` and the verdict.
pub fn judge(
    state: AlertState,
    breached: bool,
    now: OffsetDateTime,
    hold: Duration,
) -> (Option<OffsetDateTime>, Verdict) {
    if !breached {
        let verdict = if state.status == AlertStatus::Firing {
            Verdict::Resolve
        } else {
            Verdict::Stay
        };
        return (None, verdict);
    }
    let since = state.breach_since.unwrap_or(now);
    let held = now - since >= hold;
    let verdict = if state.status != AlertStatus::Firing && held {
        Verdict::Fire
    } else {
        Verdict::Stay
    };
    (Some(since), verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_breach_fires_only_after_it_held_for_the_rule() {
        let ok = AlertState {
            status: AlertStatus::Ok,
            breach_since: None,
        };
        let (since, verdict) = judge(ok, true, at(0), MINUTE);
        assert_eq!((since, verdict), (Some(at(0)), Verdict::Stay));
        let pending = AlertState {
            breach_since: since,
            ..ok
        };
        assert_eq!(judge(pending, true, at(59), MINUTE).1, Verdict::Stay);
        assert_eq!(judge(pending, true, at(60), MINUTE), (Some(at(0)), Verdict::Fire));
    }

    #[test]
    fn a_break_in_the_breach_starts_the_wait_again() {
        let pending = AlertState {
            status: AlertStatus::Ok,
            breach_since: Some(at(0)),
        };
        assert_eq!(judge(pending, false, at(30), MINUTE), (None, Verdict::Stay));
    }

    #[test]
    fn a_zero_hold_fires_at_once_and_firing_fires_once() {
        let resolved = AlertState {
            status: AlertStatus::Resolved,
            breach_since: None,
        };
        assert_eq!(judge(resolved, true, at(0), Duration::ZERO).1, Verdict::Fire);
        let firing = AlertState {
            status: AlertStatus::Firing,
            breach_since: Some(at(0)),
        };
        assert_eq!(judge(firing, true, at(500), Duration::ZERO).1, Verdict::Stay);
        assert_eq!(
            judge(firing, false, at(501), Duration::ZERO),
            (None, Verdict::Resolve)
        );
    }

    #[test]
    fn only_the_episode_edges_are_legal() {
        use AlertStatus::*;
        assert!(Ok.transition(Firing).is_ok());
        assert!(Firing.transition(Resolved).is_ok());
        assert!(Resolved.transition(Firing).is_ok());
        assert!(Ok.transition(Resolved).is_err());
        assert!(Firing.transition(Firing).is_err());
        assert!(Resolved.transition(Ok).is_err());
        for name in AlertName::ALL {
            assert_eq!(name.as_str().parse::<AlertName>().unwrap(), name);
        }
    }
}
