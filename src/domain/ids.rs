//! Public ids: a prefix that says what the id names, then a UUIDv7
//! (time-ordered) in its 32-hex-digit form, e.g. `ord_0190…`.

use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Order,
    Image,
    UploadSession,
    File,
    Job,
    Email,
    Refund,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Order => "ord_",
            IdKind::Image => "img_",
            IdKind::UploadSession => "ups_",
            IdKind::File => "fil_",
            IdKind::Job => "job_",
            IdKind::Email => "eml_",
            IdKind::Refund => "rfd_",
        }
    }
}

/// A new, time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub fn format_id(kind: IdKind, id: Uuid) -> String {
    format!("{}{}", kind.prefix(), id.simple())
}

/// The id in `s` if it is `kind`'s prefix and a UUID (simple or hyphenated).
pub fn parse_id(kind: IdKind, s: &str) -> Option<Uuid> {
    let rest = s.strip_prefix(kind.prefix())?;
    if rest.len() != 32 && rest.len() != 36 {
        return None;
    }
    Uuid::try_parse(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_the_wrong_kind() {
        let id = new_id();
        let s = format_id(IdKind::Order, id);
        assert!(s.starts_with("ord_") && s.len() == 36);
        assert_eq!(parse_id(IdKind::Order, &s), Some(id));
        assert_eq!(parse_id(IdKind::Order, &format!("ord_{id}")), Some(id));
        assert_eq!(parse_id(IdKind::Image, &s), None);
        for bad in [
            "",
            "ord_",
            "ord_xyz",
            "ord_0190",
            "garbage",
            &format!("ORD_{}", id.simple()),
        ] {
            assert_eq!(parse_id(IdKind::Order, bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = new_id();
        let b = new_id();
        assert!(a < b);
    }
}
