//! Surname-stroke order (姓氏笔画为序), the order official lists of deputies are printed in.
//!
//! The stroke counts are Unicode's Unihan `kTotalStrokes` (its first value: the count of the
//! mainland's G-source form) for every ideograph from U+3400 to U+9FFF, one byte each in
//! `strokes.bin`, written by `scripts/gen-strokes` from Debian's `unicode-data` package
//! (Unicode 15.0).
//!
//! **The order.** First the stroke count of the surname's first character (the surname, or
//! the first of a two-character surname such as 欧阳); surnames of the same count stay
//! together, ordered by that character's code point; within one surname, the stroke counts of
//! the following characters one by one; then a shorter name first; then the code points, so
//! the order is total and the same on every machine. A character with no count (a letter, a
//! rare ideograph outside the table) sorts after every counted one. (Printed lists order
//! surnames of equal count by their first stroke's shape, 横竖撇点折; Unihan has no
//! stroke-order data, so the code point stands in for it, and a committee that needs the
//! shape order sets it by hand.)

use std::cmp::Ordering;

const FIRST: u32 = 0x3400;
static TABLE: &[u8; 27648] = include_bytes!("strokes.bin");

/// The total stroke count of an ideograph, if Unihan gives one.
pub fn strokes(c: char) -> Option<u8> {
    let code = u32::from(c);
    let i = code.checked_sub(FIRST)? as usize;
    TABLE.get(i).copied().filter(|&n| n > 0)
}

/// The key a name sorts by (module documentation).
fn key(name: &str) -> (u16, Option<char>, Vec<u16>, usize, &str) {
    let count = |c: char| strokes(c).map_or(u16::MAX, u16::from);
    let mut chars = name.chars().filter(|c| !c.is_whitespace() && *c != '·');
    let first = chars.next();
    (
        first.map_or(u16::MAX, count),
        first,
        chars.map(count).collect(),
        name.chars().count(),
        name,
    )
}

/// Surname-stroke order of two names (module documentation).
pub fn surname_order(a: &str, b: &str) -> Ordering {
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the table gives the counts a dictionary gives. Method: characters whose counts
    // are not in doubt, from one stroke to many, both blocks.
    #[test]
    fn known_stroke_counts() {
        for (c, n) in [
            ('一', 1),
            ('丁', 2),
            ('马', 3),
            ('王', 4),
            ('司', 5),
            ('刘', 6),
            ('李', 7),
            ('张', 7),
            ('欧', 8),
            ('曾', 12),
            ('龚', 11),
            ('㐀', 5),
        ] {
            assert_eq!(strokes(c), Some(n), "{c}");
        }
        assert_eq!(strokes('A'), None);
        assert_eq!(strokes('\u{4DC0}'), None, "a hexagram, not an ideograph");
    }

    // Goal: a list sorts as printed lists do: by the surname's strokes, then the next
    // character's. Method: a list whose order is known (王 4, 司马 5+3, 刘 6, 李 7 = 张 7, 欧阳
    // 8, 曾 12), shuffled.
    #[test]
    fn a_list_in_surname_stroke_order() {
        // Surnames of one count stay together: 王 and 邓 both have 4 strokes.
        let mut names = vec!["邓文", "王秀英", "王文", "邓芳"];
        names.sort_by(|a, b| surname_order(a, b));
        assert_eq!(names, ["王文", "王秀英", "邓文", "邓芳"]);

        let mut names = vec![
            "曾敏",
            "李刚",
            "王芳",
            "欧阳洋",
            "刘华",
            "张伟",
            "司马洋",
            "王一",
        ];
        names.sort_by(|a, b| surname_order(a, b));
        // 王一 (4, 1) before 王芳 (4, 7); 张 and 李 both have 7 strokes: 张 U+5F20 before
        // 李 U+674E.
        assert_eq!(
            names,
            [
                "王一",
                "王芳",
                "司马洋",
                "刘华",
                "张伟",
                "李刚",
                "欧阳洋",
                "曾敏"
            ]
        );
    }
}
