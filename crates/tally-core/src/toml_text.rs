//! Where in a TOML file's text a value is: its line, and the key it was given to. The
//! definition, the servers' configs and the device's config all name a problem by line and key.

/// The 1-based line of the byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a TOML value at `offset` is given to (`seats` in `seats = "two"`), read
/// from the text before it on its line; `None` if the value is not right after `key =`.
pub fn toml_key_at(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let key = line.trim_end().strip_suffix('=')?.trim_end();
    let is_key = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"');
    let start = key
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_key(c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = key[start..].trim_matches('"');
    (!key.is_empty()).then_some(key)
}
