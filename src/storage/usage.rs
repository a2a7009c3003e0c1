//! Bytes stored per area (`restoreclick_storage_bytes{area}`), kept
//! incrementally: every put, move and delete through [`super::Storage`]
//! adjusts its area's count, and a full listing (at start-up and every
//! `storage.usage_reconcile`) sets the counts to what the bucket holds, so a
//! scrape never lists the bucket. With several instances, each one's counts
//! also miss the others' writes until its next reconcile.

use std::sync::atomic::{AtomicI64, Ordering};

use super::keys::Area;

#[derive(Debug, Default)]
pub struct Usage {
    bytes: [AtomicI64; 4],
}

fn index(area: Area) -> usize {
    match area {
        Area::Temp => 0,
        Area::Originals => 1,
        Area::Restored => 2,
        Area::Downloads => 3,
    }
}

/// The area a key lies in, if any.
pub fn area_of(key: &str) -> Option<Area> {
    Area::ALL.into_iter().find(|a| {
        key.strip_prefix(a.prefix())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

impl Usage {
    /// Adds `delta` bytes (negative for a delete) to the area of `key`.
    pub fn record(&self, key: &str, delta: i64) {
        if let Some(area) = area_of(key) {
            self.bytes[index(area)].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Sets an area's count to what a listing found.
    pub fn set(&self, area: Area, bytes: u64) {
        self.bytes[index(area)].store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub fn bytes(&self, area: Area) -> u64 {
        u64::try_from(self.bytes[index(area)].load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        Area::ALL.into_iter().map(|a| self.bytes(a)).sum()
    }

    /// Sets the `restoreclick_storage_bytes{area}` gauges.
    pub fn publish(&self) {
        for area in Area::ALL {
            metrics::gauge!("restoreclick_storage_bytes", "area" => area.label())
                .set(self.bytes(area) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_count_in_their_area_only() {
        let usage = Usage::default();
        usage.record("uploads/temp/s/f.jpg", 100);
        usage.record("uploads/originals/o/001_a_original.jpg", 40);
        usage.record("uploads/temporary/x", 7);
        usage.record("elsewhere", 9);
        assert_eq!(usage.bytes(Area::Temp), 100);
        assert_eq!(usage.bytes(Area::Originals), 40);
        usage.record("uploads/temp/s/f.jpg", -100);
        assert_eq!(usage.bytes(Area::Temp), 0);
        assert_eq!(usage.total(), 40);
    }

    #[test]
    fn a_count_never_shows_below_zero() {
        let usage = Usage::default();
        usage.record("downloads/o/1_all_photos.zip", -5);
        assert_eq!(usage.bytes(Area::Downloads), 0);
        usage.set(Area::Downloads, 12);
        assert_eq!(usage.bytes(Area::Downloads), 12);
    }
}
