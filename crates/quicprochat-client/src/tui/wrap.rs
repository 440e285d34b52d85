//! Word wrapping of styled text into terminal lines, with a hanging indent
//! for continuation lines (so wrapped messages line up after the time
//! column). Widths are display columns (`unicode-width`), not bytes.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Builds the lines of one entry: push styled pieces, then [`Wrapper::finish`].
pub(crate) struct Wrapper {
    width: usize,
    indent: usize,
    lines: Vec<Line<'static>>,
    spans: Vec<Span<'static>>,
    used: usize,
    /// Nothing but the indent on the current line yet.
    fresh: bool,
}

impl Wrapper {
    /// Lines at most `width` columns; continuation lines start with `indent` spaces.
    pub(crate) fn new(width: usize, indent: usize) -> Wrapper {
        let width = width.max(1);
        // On very narrow panes the indent would leave no room for text.
        let indent = if indent + 8 > width { 0 } else { indent };
        Wrapper { width, indent, lines: Vec::new(), spans: Vec::new(), used: 0, fresh: true }
    }

    /// Appends text in one style, breaking lines between words, and inside
    /// words only when a word is longer than a line.
    pub(crate) fn push(&mut self, text: &str, style: Style) {
        for piece in text.split_inclusive(' ') {
            let word = piece.trim_end_matches(' ');
            let spaces = piece.len() - word.len();
            // A word longer than a whole line is split where it stands.
            let fits_a_line = word.width() <= self.width - self.indent;
            if !self.fresh && self.used + word.width() > self.width && fits_a_line {
                self.newline();
            }
            let mut rest = word;
            while self.used + rest.width() > self.width {
                let (head, tail) = split_at_width(rest, self.width - self.used, self.fresh);
                self.add(head, style);
                self.newline();
                rest = tail;
            }
            self.add(rest, style);
            let room = self.width - self.used;
            self.add(&" ".repeat(spaces.min(room)), style);
        }
    }

    /// The finished lines (at least one).
    pub(crate) fn finish(mut self) -> Vec<Line<'static>> {
        if !self.spans.is_empty() || self.lines.is_empty() {
            self.lines.push(Line::from(std::mem::take(&mut self.spans)));
        }
        self.lines
    }

    fn newline(&mut self) {
        self.lines.push(Line::from(std::mem::take(&mut self.spans)));
        self.used = 0;
        self.fresh = true;
        if self.indent > 0 {
            self.spans.push(Span::raw(" ".repeat(self.indent)));
            self.used = self.indent;
        }
    }

    fn add(&mut self, text: &str, style: Style) {
        if text.is_empty() {
            return;
        }
        self.used += text.width();
        self.fresh = false;
        self.spans.push(Span::styled(text.to_owned(), style));
    }
}

/// Splits `text` after at most `width` columns; on a fresh line at least one
/// character is taken, so wrapping always makes progress.
fn split_at_width(text: &str, width: usize, fresh: bool) -> (&str, &str) {
    let mut used = 0;
    for (index, c) in text.char_indices() {
        let char_width = c.width().unwrap_or(0);
        if used + char_width > width {
            if index == 0 && fresh {
                let end = c.len_utf8();
                return (&text[..end], &text[end..]);
            }
            return (&text[..index], &text[index..]);
        }
        used += char_width;
    }
    (text, "")
}

#[cfg(test)]
mod tests {
    use super::Wrapper;
    use ratatui::style::Style;

    fn wrap(width: usize, indent: usize, pieces: &[&str]) -> Vec<String> {
        let mut wrapper = Wrapper::new(width, indent);
        for piece in pieces {
            wrapper.push(piece, Style::new());
        }
        wrapper.finish().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn wraps_between_words_with_a_hanging_indent() {
        assert_eq!(wrap(20, 4, &["abc ", "one two three four five"]), ["abc one two three ", "    four five"]);
        assert_eq!(wrap(12, 0, &["x ", "abcdefghijklmnopqrstuvwxyz"]), ["x abcdefghij", "klmnopqrstuv", "wxyz"]);
        assert_eq!(wrap(10, 0, &[""]), [""]);
    }

    #[test]
    fn counts_wide_characters_as_two_columns() {
        assert_eq!(wrap(4, 0, &["日本語"]), ["日本", "語"]);
    }
}
