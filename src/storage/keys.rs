//! The storage key layout of DESIGN.md, in one place.
//!
//! Keys are built only from ids the shop made and sanitised stems, never from
//! what a customer typed, so no key can climb out of its area.

use uuid::Uuid;

/// The areas of the bucket, also the `area` label of the storage metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Temp,
    Originals,
    Restored,
    Downloads,
}

impl Area {
    pub const ALL: [Area; 4] = [Area::Temp, Area::Originals, Area::Restored, Area::Downloads];

    pub fn prefix(self) -> &'static str {
        match self {
            Area::Temp => "uploads/temp",
            Area::Originals => "uploads/originals",
            Area::Restored => "uploads/restored",
            Area::Downloads => "downloads",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Area::Temp => "temp",
            Area::Originals => "originals",
            Area::Restored => "restored",
            Area::Downloads => "downloads",
        }
    }
}

/// `uploads/temp/{session_id}/{file_id}.{ext}`
pub fn temp(session_id: Uuid, file_id: Uuid, ext: &str) -> String {
    format!(
        "{}/{}/{}.{ext}",
        Area::Temp.prefix(),
        session_id.simple(),
        file_id.simple()
    )
}

/// `uploads/temp/{session_id}/`: everything one upload session holds.
pub fn temp_session_prefix(session_id: Uuid) -> String {
    format!("{}/{}", Area::Temp.prefix(), session_id.simple())
}

/// `uploads/originals/{order_id}/{NNN}_{stem}_original.{ext}`
pub fn original(order_id: Uuid, position: u32, stem: &str, ext: &str) -> String {
    format!(
        "{}/{}/{position:03}_{stem}_original.{ext}",
        Area::Originals.prefix(),
        order_id.simple()
    )
}

/// `uploads/restored/{order_id}/{NNN}_{stem}_restored.{ext}`
pub fn restored(order_id: Uuid, position: u32, stem: &str, ext: &str) -> String {
    format!(
        "{}/{}/{position:03}_{stem}_restored.{ext}",
        Area::Restored.prefix(),
        order_id.simple()
    )
}

/// `uploads/restored/{order_id}/steps/{NNN}_{stem}_{S}-{step}.{ext}`: the
/// output of a chain step that is not the photo's last, the next step's input.
pub fn step_output(order_id: Uuid, position: u32, stem: &str, step: u32, name: &str, ext: &str) -> String {
    format!(
        "{}/{}/steps/{position:03}_{stem}_{step}-{name}.{ext}",
        Area::Restored.prefix(),
        order_id.simple()
    )
}

/// Every prefix that holds an order's photos (originals, restored, ZIPs).
pub fn order_prefixes(order_id: Uuid) -> [String; 3] {
    [Area::Originals, Area::Restored, Area::Downloads]
        .map(|area| format!("{}/{}", area.prefix(), order_id.simple()))
}

/// `downloads/{order_id}/{timestamp}_all_photos.zip`
pub fn download_zip(order_id: Uuid, timestamp: i64) -> String {
    format!(
        "{}/{}/{timestamp}_all_photos.zip",
        Area::Downloads.prefix(),
        order_id.simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let s = Uuid::from_u128(1);
        let f = Uuid::from_u128(2);
        assert_eq!(
            temp(s, f, "jpg"),
            "uploads/temp/00000000000000000000000000000001/00000000000000000000000000000002.jpg"
        );
        assert_eq!(
            original(s, 7, "grandma", "png"),
            "uploads/originals/00000000000000000000000000000001/007_grandma_original.png"
        );
        assert_eq!(
            restored(s, 12, "a-b", "jpg"),
            "uploads/restored/00000000000000000000000000000001/012_a-b_restored.jpg"
        );
        assert_eq!(
            download_zip(s, 1700000000),
            "downloads/00000000000000000000000000000001/1700000000_all_photos.zip"
        );
    }
}
