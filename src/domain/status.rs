//! The state machines of DESIGN.md, enforced in one place.
//!
//! Every status column has an enum here whose `transition` refuses illegal
//! moves; the database's CHECK constraints hold the same sets of states.
//! Pure: no I/O, no clocks.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {kind} transition {from} -> {to}")]
pub struct IllegalTransition {
    pub kind: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {value:?}")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a status enum: its states with their database names, its legal
/// edges, and its terminal states.
macro_rules! state_machine {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            states: { $($variant:ident => $text:literal),+ $(,)? },
            edges: [ $($from:ident -> $to:ident),* $(,)? ],
            terminal: [ $($terminal:ident),* $(,)? ],
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn is_terminal(self) -> bool {
                matches!(self, $(Self::$terminal)|*)
            }

            pub fn can_transition_to(self, next: Self) -> bool {
                matches!((self, next), $((Self::$from, Self::$to))|*)
            }

            pub fn transition(self, next: Self) -> Result<Self, IllegalTransition> {
                if self.can_transition_to(next) {
                    Ok(next)
                } else {
                    Err(IllegalTransition { kind: $kind, from: self.as_str(), to: next.as_str() })
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_machine! {
    /// An order: paid work from payment to outcome. An operator's retry of a
    /// failed photo reopens a finished order (`completed`/`failed → processing`).
    OrderStatus ("order") {
        states: {
            PendingPayment => "pending_payment",
            Processing => "processing",
            Completed => "completed",
            Failed => "failed",
            Refunded => "refunded",
        },
        edges: [
            PendingPayment -> Processing,
            Processing -> Completed,
            Processing -> Failed,
            PendingPayment -> Refunded,
            Processing -> Refunded,
            Completed -> Refunded,
            Failed -> Refunded,
            Completed -> Processing,
            Failed -> Processing,
        ],
        terminal: [Completed, Failed, Refunded],
    }
}

impl OrderStatus {
    /// Orders that still have work to do (and an actor to do it).
    pub fn is_live(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Processing)
    }
}

state_machine! {
    /// One photo of an order. `pending`/`uploaded` may fail without being
    /// processed: its original was lost, or its order was cancelled. An
    /// operator may retry a failed photo (`failed → processing`), and the
    /// customer have a restored one redone (`completed → processing`).
    ImageStatus ("image") {
        states: {
            Pending => "pending",
            Uploaded => "uploaded",
            Processing => "processing",
            Completed => "completed",
            Failed => "failed",
        },
        edges: [
            Pending -> Uploaded,
            Uploaded -> Processing,
            Processing -> Completed,
            Processing -> Failed,
            Pending -> Failed,
            Uploaded -> Failed,
            Failed -> Processing,
            Completed -> Processing,
        ],
        terminal: [Completed, Failed],
    }
}

state_machine! {
    /// A restoration job. A transient failure goes back to `queued` for its
    /// next attempt, as does a finished chain step for the next step, and a
    /// completed job the customer asked to have redone; unstarted jobs fail
    /// when their order is cancelled.
    JobStatus ("job") {
        states: {
            Pending => "pending",
            Queued => "queued",
            Processing => "processing",
            Completed => "completed",
            Failed => "failed",
        },
        edges: [
            Pending -> Queued,
            Queued -> Processing,
            Processing -> Completed,
            Processing -> Failed,
            Failed -> Queued,
            Processing -> Queued,
            Pending -> Failed,
            Queued -> Failed,
            Completed -> Queued,
        ],
        terminal: [Completed, Failed],
    }
}

state_machine! {
    /// An email row of the queue.
    EmailStatus ("email") {
        states: {
            Pending => "pending",
            Sending => "sending",
            Sent => "sent",
            Failed => "failed",
        },
        edges: [
            Pending -> Sending,
            Sending -> Sent,
            Sending -> Failed,
            Failed -> Pending,
            Sending -> Pending,
        ],
        terminal: [Sent, Failed],
    }
}

state_machine! {
    /// An upload session. Payment for an older checkout may land after the
    /// customer edited the photos (`open`/`payment_failed` → `paid`); editing
    /// voids a started checkout (→ `open`). A checkout completed with a
    /// delayed payment method waits for the money (`awaiting_payment`).
    UploadSessionStatus ("upload session") {
        states: {
            Open => "open",
            CheckoutStarted => "checkout_started",
            AwaitingPayment => "awaiting_payment",
            Paid => "paid",
            PaymentFailed => "payment_failed",
            Expired => "expired",
        },
        edges: [
            Open -> CheckoutStarted,
            CheckoutStarted -> Paid,
            Open -> Paid,
            PaymentFailed -> Paid,
            CheckoutStarted -> PaymentFailed,
            PaymentFailed -> CheckoutStarted,
            CheckoutStarted -> Open,
            PaymentFailed -> Open,
            Open -> Expired,
            CheckoutStarted -> Expired,
            PaymentFailed -> Expired,
            Open -> AwaitingPayment,
            CheckoutStarted -> AwaitingPayment,
            PaymentFailed -> AwaitingPayment,
            AwaitingPayment -> Paid,
            AwaitingPayment -> PaymentFailed,
        ],
        terminal: [Paid, Expired],
    }
}

impl UploadSessionStatus {
    /// Photos may still be added or removed.
    pub fn accepts_changes(self) -> bool {
        matches!(self, Self::Open | Self::CheckoutStarted | Self::PaymentFailed)
    }

    pub fn can_checkout(self) -> bool {
        self.accepts_changes()
    }
}

state_machine! {
    /// A checkout opened at the payment provider, as the shop tracks it. A
    /// delayed payment waits in `awaiting_payment` and may still succeed
    /// after it was reported failed; a payment may land on a checkout the
    /// shop had voided (`expired → paid`); a payment the shop could not
    /// honour is given back (`refunded`).
    CheckoutStatus ("checkout") {
        states: {
            Open => "open",
            AwaitingPayment => "awaiting_payment",
            Paid => "paid",
            Failed => "failed",
            Expired => "expired",
            Refunded => "refunded",
        },
        edges: [
            Open -> Paid,
            Open -> AwaitingPayment,
            Open -> Failed,
            Open -> Expired,
            Open -> Refunded,
            AwaitingPayment -> Paid,
            AwaitingPayment -> Failed,
            AwaitingPayment -> Refunded,
            Failed -> Paid,
            Failed -> Refunded,
            Expired -> Paid,
            Expired -> Refunded,
        ],
        terminal: [Paid, Refunded],
    }
}

impl CheckoutStatus {
    /// The status `GET /api/checkout/{id}` shows.
    pub fn api_status(self) -> &'static str {
        match self {
            Self::Open | Self::AwaitingPayment => "pending",
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

state_machine! {
    /// A refund the shop makes: written `pending` before the provider is
    /// called, `sending` while one instance calls it, then `succeeded`, or
    /// back to `pending` after a transient error, or `failed` for good.
    RefundStatus ("refund") {
        states: {
            Pending => "pending",
            Sending => "sending",
            Succeeded => "succeeded",
            Failed => "failed",
        },
        edges: [
            Pending -> Sending,
            Sending -> Succeeded,
            Sending -> Pending,
            Sending -> Failed,
        ],
        terminal: [Succeeded, Failed],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every ordered pair against the edges written out here, apart
    /// from the implementation.
    fn check_all_pairs<S>(all: &[S], edges: &[(S, S)])
    where
        S: Copy + PartialEq + fmt::Debug + fmt::Display,
        S: StatusLike,
    {
        for &from in all {
            for &to in all {
                let legal = edges.contains(&(from, to));
                match from.try_to(to) {
                    Ok(next) => assert!(legal && next == to, "{from} -> {to} must be refused"),
                    Err(e) => {
                        assert!(!legal, "{from} -> {to} must be allowed");
                        let text = e.to_string();
                        assert!(
                            text.contains(&from.to_string()) && text.contains(&to.to_string()),
                            "{text}"
                        );
                    }
                }
            }
        }
    }

    trait StatusLike: Sized {
        fn try_to(self, next: Self) -> Result<Self, IllegalTransition>;
    }

    macro_rules! status_like {
        ($($t:ty),*) => {$(
            impl StatusLike for $t {
                fn try_to(self, next: Self) -> Result<Self, IllegalTransition> { self.transition(next) }
            }
        )*};
    }
    status_like!(
        OrderStatus,
        ImageStatus,
        JobStatus,
        EmailStatus,
        UploadSessionStatus,
        CheckoutStatus,
        RefundStatus
    );

    fn round_trip<S>(all: &[S])
    where
        S: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + serde::Serialize,
        <S as FromStr>::Err: fmt::Debug,
    {
        for &s in all {
            let text = s.to_string();
            assert_eq!(text.parse::<S>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(text));
        }
    }

    #[test]
    fn order_transitions() {
        use OrderStatus::*;
        check_all_pairs(
            OrderStatus::ALL,
            &[
                (PendingPayment, Processing),
                (Processing, Completed),
                (Processing, Failed),
                (PendingPayment, Refunded),
                (Processing, Refunded),
                (Completed, Refunded),
                (Failed, Refunded),
                (Completed, Processing),
                (Failed, Processing),
            ],
        );
        round_trip(OrderStatus::ALL);
        assert!(Processing.is_live() && !Completed.is_live());
    }

    #[test]
    fn image_transitions() {
        use ImageStatus::*;
        check_all_pairs(
            ImageStatus::ALL,
            &[
                (Pending, Uploaded),
                (Uploaded, Processing),
                (Processing, Completed),
                (Processing, Failed),
                (Pending, Failed),
                (Uploaded, Failed),
                (Failed, Processing),
                (Completed, Processing),
            ],
        );
        round_trip(ImageStatus::ALL);
    }

    #[test]
    fn job_transitions() {
        use JobStatus::*;
        check_all_pairs(
            JobStatus::ALL,
            &[
                (Pending, Queued),
                (Queued, Processing),
                (Processing, Completed),
                (Processing, Failed),
                (Failed, Queued),
                (Processing, Queued),
                (Pending, Failed),
                (Queued, Failed),
                (Completed, Queued),
            ],
        );
        round_trip(JobStatus::ALL);
    }

    #[test]
    fn email_transitions() {
        use EmailStatus::*;
        check_all_pairs(
            EmailStatus::ALL,
            &[
                (Pending, Sending),
                (Sending, Sent),
                (Sending, Failed),
                (Failed, Pending),
                (Sending, Pending),
            ],
        );
        round_trip(EmailStatus::ALL);
    }

    #[test]
    fn upload_session_transitions() {
        use UploadSessionStatus::*;
        check_all_pairs(
            UploadSessionStatus::ALL,
            &[
                (Open, CheckoutStarted),
                (CheckoutStarted, Paid),
                (Open, Paid),
                (PaymentFailed, Paid),
                (CheckoutStarted, PaymentFailed),
                (PaymentFailed, CheckoutStarted),
                (CheckoutStarted, Open),
                (PaymentFailed, Open),
                (Open, Expired),
                (CheckoutStarted, Expired),
                (PaymentFailed, Expired),
                (Open, AwaitingPayment),
                (CheckoutStarted, AwaitingPayment),
                (PaymentFailed, AwaitingPayment),
                (AwaitingPayment, Paid),
                (AwaitingPayment, PaymentFailed),
            ],
        );
        round_trip(UploadSessionStatus::ALL);
        assert!(!AwaitingPayment.accepts_changes() && !AwaitingPayment.can_checkout());
        assert!(Open.accepts_changes() && !Paid.accepts_changes() && !Expired.can_checkout());
    }

    #[test]
    fn checkout_transitions() {
        use CheckoutStatus::*;
        check_all_pairs(
            CheckoutStatus::ALL,
            &[
                (Open, Paid),
                (Open, AwaitingPayment),
                (Open, Failed),
                (Open, Expired),
                (Open, Refunded),
                (AwaitingPayment, Paid),
                (AwaitingPayment, Failed),
                (AwaitingPayment, Refunded),
                (Failed, Paid),
                (Failed, Refunded),
                (Expired, Paid),
                (Expired, Refunded),
            ],
        );
        round_trip(CheckoutStatus::ALL);
        assert_eq!(Open.api_status(), "pending");
        assert_eq!(AwaitingPayment.api_status(), "pending");
    }

    #[test]
    fn refund_transitions() {
        use RefundStatus::*;
        check_all_pairs(
            RefundStatus::ALL,
            &[
                (Pending, Sending),
                (Sending, Succeeded),
                (Sending, Pending),
                (Sending, Failed),
            ],
        );
        round_trip(RefundStatus::ALL);
    }

    #[test]
    fn unknown_values_are_refused_by_name() {
        let err = "shipped".parse::<OrderStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown order status \"shipped\"");
    }
}
