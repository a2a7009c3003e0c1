//! The rules of money: what a checkout sells (its quote), whether a payment
//! matches what was sold, and why the shop gives money back. Pure: the
//! workflows in `shop` apply them inside their transactions.

use serde::{Deserialize, Serialize};

/// One line of a checkout, as sent to the payment provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// What the line is for: `repair` (every photo), later an option's id.
    pub kind: String,
    pub name: String,
    /// Minor units per unit.
    pub unit_amount: i64,
    pub quantity: u32,
}

impl LineItem {
    pub fn amount(&self) -> i64 {
        self.unit_amount * i64::from(self.quantity)
    }
}

/// What a checkout sells: its line items, what each photo costs, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub currency: String,
    pub line_items: Vec<LineItem>,
    /// The price of each photo, in the checkout's order: what a photo's
    /// refund gives back.
    pub photo_amounts: Vec<i64>,
    pub amount_total: i64,
}

/// What the shop sold, as its checkout froze it.
#[derive(Debug, Clone, Copy)]
pub struct Sold<'a> {
    pub amount_total: i64,
    pub currency: &'a str,
    pub livemode: bool,
}

/// What a payment event (or the provider, when asked) says was paid.
#[derive(Debug, Clone, Copy)]
pub struct Paid<'a> {
    pub amount_total: Option<i64>,
    pub currency: Option<&'a str>,
    pub livemode: bool,
}

/// Why a payment is not the one the shop sold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("paid {paid:?} where the checkout sold {sold}")]
    Amount { sold: i64, paid: Option<i64> },
    #[error("paid in {paid:?} where the checkout sold in {sold}")]
    Currency { sold: String, paid: Option<String> },
    #[error("a {paid} payment for a {sold} checkout")]
    Livemode { sold: &'static str, paid: &'static str },
}

impl Mismatch {
    /// The audit row's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Mismatch::Amount { .. } => "amount_mismatch",
            Mismatch::Currency { .. } => "currency_mismatch",
            Mismatch::Livemode { .. } => "livemode_mismatch",
        }
    }
}

fn mode(live: bool) -> &'static str {
    if live { "live" } else { "test" }
}

/// A payment is honoured only when its total, currency and mode are exactly
/// what the checkout sold.
pub fn check(sold: Sold<'_>, paid: Paid<'_>) -> Result<(), Mismatch> {
    if paid.livemode != sold.livemode {
        return Err(Mismatch::Livemode {
            sold: mode(sold.livemode),
            paid: mode(paid.livemode),
        });
    }
    if !paid
        .currency
        .is_some_and(|c| c.eq_ignore_ascii_case(sold.currency))
    {
        return Err(Mismatch::Currency {
            sold: sold.currency.to_owned(),
            paid: paid.currency.map(str::to_owned),
        });
    }
    if paid.amount_total != Some(sold.amount_total) {
        return Err(Mismatch::Amount {
            sold: sold.amount_total,
            paid: paid.amount_total,
        });
    }
    Ok(())
}

/// Why the shop gives money back (the `refunds.reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// Photos of the order that could not be restored.
    FailedPhotos,
    /// A payment whose total, currency or mode is not what was sold.
    PaymentMismatch,
    /// A second payment for photos already paid.
    DuplicatePayment,
    /// A payment that landed after its photos were deleted.
    PhotosGone,
    /// An operator's refund (admin API).
    Operator,
    /// The customer's own request within the review window.
    Customer,
}

impl RefundReason {
    pub const ALL: &'static [Self] = &[
        Self::FailedPhotos,
        Self::PaymentMismatch,
        Self::DuplicatePayment,
        Self::PhotosGone,
        Self::Operator,
        Self::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedPhotos => "failed_photos",
            Self::PaymentMismatch => "payment_mismatch",
            Self::DuplicatePayment => "duplicate_payment",
            Self::PhotosGone => "photos_gone",
            Self::Operator => "operator",
            Self::Customer => "customer",
        }
    }
}

impl std::str::FromStr for RefundReason {
    type Err = super::UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| super::UnknownStatus {
                kind: "refund reason",
                value: s.to_owned(),
            })
    }
}

/// What a finished order gives back for the photos it could not restore:
/// every failed photo not refunded yet, at its own price; all of what is
/// left of the payment when every photo failed.
pub fn failed_photos_refund(
    photo_amounts_unrefunded_failed: &[i64],
    all_failed: bool,
    amount_total: i64,
    amount_refunded: i64,
) -> i64 {
    let left = (amount_total - amount_refunded).max(0);
    if all_failed {
        return left;
    }
    photo_amounts_unrefunded_failed.iter().sum::<i64>().min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_payment_matches() {
        let sold = Sold {
            amount_total: 1000,
            currency: "usd",
            livemode: false,
        };
        let paid = |amount, currency, livemode| Paid {
            amount_total: amount,
            currency,
            livemode,
        };
        assert_eq!(check(sold, paid(Some(1000), Some("USD"), false)), Ok(()));
        assert_eq!(
            check(sold, paid(Some(1), Some("usd"), false))
                .unwrap_err()
                .reason(),
            "amount_mismatch"
        );
        assert_eq!(
            check(sold, paid(None, Some("usd"), false)).unwrap_err().reason(),
            "amount_mismatch"
        );
        assert_eq!(
            check(sold, paid(Some(1000), Some("jpy"), false))
                .unwrap_err()
                .reason(),
            "currency_mismatch"
        );
        assert_eq!(
            check(sold, paid(Some(1000), None, false)).unwrap_err().reason(),
            "currency_mismatch"
        );
        assert_eq!(
            check(sold, paid(Some(1000), Some("usd"), true))
                .unwrap_err()
                .reason(),
            "livemode_mismatch"
        );
    }

    #[test]
    fn failed_photos_give_back_their_own_price_and_a_total_failure_everything() {
        assert_eq!(failed_photos_refund(&[500], false, 1000, 0), 500);
        assert_eq!(failed_photos_refund(&[500, 500], true, 1000, 0), 1000);
        assert_eq!(failed_photos_refund(&[500], true, 1000, 300), 700);
        assert_eq!(failed_photos_refund(&[500, 500], false, 1500, 1200), 300);
        assert_eq!(failed_photos_refund(&[], false, 1000, 0), 0);
    }

    #[test]
    fn refund_reasons_round_trip() {
        for r in RefundReason::ALL {
            assert_eq!(r.as_str().parse::<RefundReason>().unwrap(), *r);
        }
        assert!("gift".parse::<RefundReason>().is_err());
    }
}
