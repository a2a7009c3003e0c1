//! Customer file names: kept for display, never used as paths.
//!
//! A name becomes a `stem` of ASCII letters, digits, `-` and `_` (at most 60
//! characters) for storage keys, and a display name with control characters
//! and any directory part removed. A name that tries to climb directories is
//! refused outright: no real browser sends one.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    #[error("the file name must not contain directory parts such as '..'")]
    Traversal,
}

/// A customer's file name, made safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanName {
    /// Shown back to the customer (and in emails, escaped there).
    pub display: String,
    /// Used inside storage keys.
    pub stem: String,
}

const MAX_STEM: usize = 60;
const MAX_DISPLAY: usize = 255;

/// Cleans `raw`, the name a browser sent with the file.
pub fn clean(raw: &str) -> Result<CleanName, FilenameError> {
    if raw.split(['/', '\\']).any(|part| part.trim() == "..") {
        return Err(FilenameError::Traversal);
    }
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let display: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_DISPLAY)
        .collect();
    let display = if display.is_empty() {
        "photo".to_owned()
    } else {
        display
    };
    Ok(CleanName {
        stem: stem_of(&display),
        display,
    })
}

fn stem_of(display: &str) -> String {
    let without_ext = display.rsplit_once('.').map_or(display, |(stem, _)| stem);
    let mut stem = String::with_capacity(without_ext.len().min(MAX_STEM));
    for c in without_ext.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        };
        if c == '_' && stem.ends_with('_') {
            continue;
        }
        stem.push(c);
        if stem.len() == MAX_STEM {
            break;
        }
    }
    let stem = stem.trim_matches(['_', '-']);
    if stem.is_empty() {
        "photo".to_owned()
    } else {
        stem.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_keep_their_stem() {
        let n = clean("grandma.jpg").unwrap();
        assert_eq!(n.display, "grandma.jpg");
        assert_eq!(n.stem, "grandma");
    }

    #[test]
    fn unsafe_characters_become_underscores() {
        let n = clean("Oma & Opa (1952).JPEG").unwrap();
        assert_eq!(n.stem, "Oma_Opa_1952");
        let n = clean("фото.png").unwrap();
        assert_eq!(n.stem, "photo");
        assert_eq!(n.display, "фото.png");
    }

    #[test]
    fn traversal_is_refused() {
        assert_eq!(clean("../../etc/passwd.jpg"), Err(FilenameError::Traversal));
        assert_eq!(clean("..\\..\\win.ini"), Err(FilenameError::Traversal));
    }

    #[test]
    fn directories_are_dropped_and_stems_are_bounded() {
        let n = clean("C:\\Users\\me\\scan.tif").unwrap();
        assert_eq!(n.display, "scan.tif");
        let long = format!("{}.png", "a".repeat(500));
        let n = clean(&long).unwrap();
        assert_eq!(n.stem.len(), 60);
        assert!(n.display.chars().count() <= 255);
        assert_eq!(clean("").unwrap().stem, "photo");
        assert_eq!(clean("\u{0}\n.jpg").unwrap().stem, "photo");
    }
}
