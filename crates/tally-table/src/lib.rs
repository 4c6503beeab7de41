//! A plain text table whose columns line up when cells hold Chinese (double-width) characters.

use unicode_width::UnicodeWidthStr;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&str, Align)]) -> Self {
        Table {
            headers: headers.iter().map(|(h, _)| (*h).to_owned()).collect(),
            align: headers.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row has one cell per column"
        );
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.width());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.width();
                if i > 0 {
                    text.push_str("  ");
                }
                match self.align[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        text.push_str(&" ".repeat(pad));
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }

    /// The same rows as CSV, through [`csv_text`]: RFC 4180 quoting (`\r` too) and text cells
    /// guarded against spreadsheet formulas.
    pub fn to_csv(&self) -> String {
        csv_text(std::iter::once(&self.headers).chain(&self.rows))
    }
}

/// The first characters that make a spreadsheet (Excel, LibreOffice Calc, Google Sheets) read
/// a cell as a formula or a command, after OWASP's "CSV Injection" guidance: `=`, `+`, `-`,
/// `@`, tab and carriage return. Their fullwidth forms (`＝＋－＠`, what a Chinese input method
/// types) are added: no name or message of ours begins with one, so escaping them costs
/// nothing, and we could not rule out a spreadsheet that folds them to the ASCII forms.
pub const FORMULA_STARTS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];

/// One cell as it goes into a CSV file.
///
/// Numbers are numbers: a cell that is a decimal number (digits with an optional sign,
/// fraction and `%`, as the tables write counts and percentages) is written as it is, so a
/// spreadsheet sums it. Counts are never negative, so in practice no number begins with `-`;
/// the sign is allowed only because `-5` cannot run anything. The tables' mark for "no value",
/// a lone `-`, is written as it is too: a sign with nothing after it is no formula.
///
/// Every other cell is text (names, messages, ids, written-in names from polling units); if
/// it begins with one of `FORMULA_STARTS` it gets a leading apostrophe, which spreadsheets
/// take as "this cell is text" (`=1+1` becomes `'=1+1`). A reader of the CSV who wants the
/// text back removes one leading apostrophe from a text cell that begins with `'` followed by
/// one of those characters.
pub fn csv_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell == "-" || is_number(cell) || !cell.starts_with(FORMULA_STARTS) {
        std::borrow::Cow::Borrowed(cell)
    } else {
        std::borrow::Cow::Owned(format!("'{cell}"))
    }
}

/// Whether a cell is a plain decimal number: `-?[0-9]+(\.[0-9]+)?%?`.
fn is_number(cell: &str) -> bool {
    let unsigned = cell.strip_prefix('-').unwrap_or(cell);
    let unsigned = unsigned.strip_suffix('%').unwrap_or(unsigned);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// Rows as CSV text through the `csv` crate (RFC 4180: a cell holding a comma, a quote, a
/// line feed or a carriage return is quoted), each cell through [`csv_cell`], `\n` after
/// every row. Every CSV file and CSV output of the `tally` command is written here.
pub fn csv_text<R, C>(rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = C>,
    C: AsRef<str>,
{
    let mut writer = csv::WriterBuilder::new()
        // A row is written with the cells it has, as before; the csv crate would otherwise
        // refuse a row whose length differs from the first's.
        .flexible(true)
        .from_writer(Vec::new());
    for row in rows {
        let cells: Vec<String> = row
            .into_iter()
            .map(|c| csv_cell(c.as_ref()).into_owned())
            .collect();
        // Writing to a Vec does no I/O, and rows of any length are allowed: nothing can fail.
        writer
            .write_record(&cells)
            .expect("writing CSV into memory cannot fail");
    }
    let bytes = writer
        .into_inner()
        .expect("flushing CSV into memory cannot fail");
    // Every cell is a &str, and the csv crate adds only ASCII quotes, commas and newlines.
    String::from_utf8(bytes).expect("CSV of UTF-8 cells is UTF-8")
}

/// Formats a count with thousands separators: 560000 → 560,000.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An exact percentage with one decimal, from integers: 501 of 1000 → "50.1%".
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let tenths = (u128::from(part) * 1000 + u128::from(whole) / 2) / u128::from(whole);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: columns line up in a terminal when names are Chinese.
    // Method: render two rows of different display widths and compare the column offsets.
    #[test]
    fn chinese_names_align() {
        let mut t = Table::new(&[("name", Align::Left), ("votes", Align::Right)]);
        t.row(vec!["欧阳建国".into(), "1".into()]);
        t.row(vec!["Li".into(), "1,000".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2].width(), lines[3].width(), "{text}");
        assert_eq!(thousands(560_000), "560,000");
        assert_eq!(percent(501, 1000), "50.1%");
    }

    // Goal: a CSV cell cannot start a formula in a spreadsheet, numbers stay numbers, and a
    // carriage return inside a cell cannot end the row.
    // Method: write hostile and ordinary cells and read the text back with the csv crate.
    #[test]
    fn csv_guards_formulas_and_quotes_carriage_returns() {
        let mut t = Table::new(&[
            ("name", Align::Left),
            ("votes", Align::Right),
            ("share", Align::Right),
        ]);
        t.row(vec![
            "=HYPERLINK(\"http://x\")".into(),
            "12".into(),
            "50.1%".into(),
        ]);
        t.row(vec!["+1".into(), "0".into(), "-".into()]);
        t.row(vec!["-2+3".into(), "-5".into(), "1.5".into()]);
        t.row(vec!["@SUM(A1)".into(), "7".into(), "".into()]);
        t.row(vec!["\tx".into(), "1".into(), "2".into()]);
        t.row(vec!["a\rb".into(), "1".into(), "2".into()]);
        t.row(vec!["＝1".into(), "1".into(), "2".into()]);
        t.row(vec!["刘华".into(), "1,000".into(), "x,\"y\"".into()]);
        let text = t.to_csv();
        let rows: Vec<Vec<String>> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let cells = |i: usize| rows[i].iter().map(String::as_str).collect::<Vec<_>>();
        assert_eq!(cells(0), ["name", "votes", "share"]);
        assert_eq!(cells(1), ["'=HYPERLINK(\"http://x\")", "12", "50.1%"]);
        assert_eq!(cells(2), ["'+1", "0", "-"]);
        assert_eq!(cells(3), ["'-2+3", "-5", "1.5"]);
        assert_eq!(cells(4), ["'@SUM(A1)", "7", ""]);
        assert_eq!(cells(5), ["'\tx", "1", "2"]);
        assert_eq!(cells(6), ["a\rb", "1", "2"]);
        assert_eq!(cells(7), ["'＝1", "1", "2"]);
        assert_eq!(cells(8), ["刘华", "1,000", "x,\"y\""]);
        assert_eq!(rows.len(), 9, "{text:?}");
        // The carriage return is inside quotes, so a reader that splits rows on \r sees none.
        assert!(text.contains("\"a\rb\""), "{text:?}");
        // Ordinary rows are byte for byte what they were before the csv crate wrote them.
        let mut plain = Table::new(&[("contest", Align::Left), ("votes", Align::Right)]);
        plain.row(vec!["T01-C01".into(), "560000".into()]);
        plain.row(vec!["张三, 李四".into(), "3".into()]);
        assert_eq!(
            plain.to_csv(),
            "contest,votes\nT01-C01,560000\n\"张三, 李四\",3\n"
        );
    }

    // Goal: only plain decimal numbers count as numbers.
    // Method: classify a few cells.
    #[test]
    fn numbers_are_told_from_text() {
        for n in ["0", "12", "-5", "1.5", "50.1%", "-0.5%"] {
            assert!(is_number(n), "{n}");
        }
        for t in [
            "", "-", ".5", "5.", "1e3", "--5", "5-", "1,000", "-x", "%", "-%",
        ] {
            assert!(!is_number(t), "{t}");
        }
    }
}
