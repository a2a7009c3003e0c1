//! The customer's review window: after an order finishes, each restored
//! photo may once be redone or refunded, for a number of days. Pure.

use std::{fmt, str::FromStr};

use time::{Duration, OffsetDateTime};

/// What the customer asked for one photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewAction {
    /// Run the photo's chain again.
    Redo,
    /// Give the photo's price back.
    Refund,
}

impl ReviewAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::Redo => "redo",
            ReviewAction::Refund => "refund",
        }
    }
}

impl fmt::Display for ReviewAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewAction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "redo" => Ok(ReviewAction::Redo),
            "refund" => Ok(ReviewAction::Refund),
            _ => Err(()),
        }
    }
}

/// Until when a window that opened at `opened` (the order's first finish)
/// stays open; `None` when the shop has no window (`days` 0).
pub fn closes_at(opened: OffsetDateTime, days: u32) -> Option<OffsetDateTime> {
    (days > 0).then(|| opened + Duration::days(i64::from(days)))
}

/// Whether the window is open at `now`.
pub fn is_open(opened: OffsetDateTime, days: u32, now: OffsetDateTime) -> bool {
    closes_at(opened, days).is_some_and(|closes| now < closes)
}

/// What a customer's refund of one photo gives back: its price, or what is
/// left of the payment when less (earlier refunds took the rest).
pub fn photo_refund(unit_amount: i64, amount_total: i64, already_refunded: i64) -> i64 {
    unit_amount.min(amount_total - already_refunded).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_for_its_days_and_not_a_moment_longer() {
        let opened = OffsetDateTime::UNIX_EPOCH;
        assert!(is_open(opened, 7, opened));
        assert!(is_open(opened, 7, opened + Duration::days(7) - Duration::SECOND));
        assert!(!is_open(opened, 7, opened + Duration::days(7)));
        assert!(!is_open(opened, 0, opened), "no window when days is 0");
    }

    #[test]
    fn a_photo_refund_never_exceeds_what_is_left_of_the_payment() {
        assert_eq!(photo_refund(650, 1300, 0), 650);
        assert_eq!(photo_refund(650, 1300, 1000), 300);
        assert_eq!(photo_refund(650, 1300, 1300), 0);
    }

    #[test]
    fn actions_read_as_they_print() {
        for a in [ReviewAction::Redo, ReviewAction::Refund] {
            assert_eq!(a.as_str().parse::<ReviewAction>(), Ok(a));
        }
        assert!("both".parse::<ReviewAction>().is_err());
    }
}
