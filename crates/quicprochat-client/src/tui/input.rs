//! The input line of `qpc tui`: a single-line editor with a cursor and a
//! history of submitted lines (Up/Down), like a shell prompt.
//!
//! Pure state: it knows nothing about keys or terminals; `app.rs` maps keys
//! onto these operations and `ui.rs` draws [`InputLine::text`] and the cursor.

/// Longest history kept, in lines.
const HISTORY_LIMIT: usize = 200;

/// The line being typed, its cursor and the history of submitted lines.
#[derive(Debug, Default)]
pub(crate) struct InputLine {
    chars: Vec<char>,
    /// Cursor position in chars, `0..=chars.len()`.
    cursor: usize,
    history: Vec<String>,
    /// Index into `history` while browsing it with Up/Down.
    browsing: Option<usize>,
    /// What was typed before browsing started, restored by Down past the end.
    draft: String,
}

impl InputLine {
    /// The current text.
    pub(crate) fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Cursor position in chars.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// Inserts a character at the cursor.
    pub(crate) fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
        self.browsing = None;
    }

    /// Inserts a pasted string at the cursor; line breaks become spaces.
    pub(crate) fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            self.insert(if c == '\n' || c == '\r' { ' ' } else { c });
        }
    }

    /// Deletes the character before the cursor.
    pub(crate) fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub(crate) fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub(crate) fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1] == ' ' {
            start -= 1;
        }
        while start > 0 && self.chars[start - 1] != ' ' {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    pub(crate) fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub(crate) fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    pub(crate) fn home(&mut self) {
        self.cursor = 0;
    }

    pub(crate) fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    /// Empties the line (Esc, Ctrl-U) and stops browsing the history.
    pub(crate) fn clear(&mut self) {
        self.set(String::new());
        self.browsing = None;
    }

    /// Takes the line for submission and records it in the history.
    pub(crate) fn submit(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY_LIMIT {
                self.history.remove(0);
            }
        }
        self.clear();
        text
    }

    /// Shows the previous history entry (Up).
    pub(crate) fn history_previous(&mut self) {
        let index = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(index) => index.saturating_sub(1),
        };
        self.browsing = Some(index);
        self.set(self.history[index].clone());
    }

    /// Shows the next history entry, or the draft past the newest (Down).
    pub(crate) fn history_next(&mut self) {
        let Some(index) = self.browsing else { return };
        if index + 1 < self.history.len() {
            self.browsing = Some(index + 1);
            self.set(self.history[index + 1].clone());
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(draft);
        }
    }

    fn set(&mut self, text: String) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }
}

#[cfg(test)]
mod tests {
    use super::InputLine;

    fn typed(text: &str) -> InputLine {
        let mut input = InputLine::default();
        input.insert_str(text);
        input
    }

    #[test]
    fn editing_moves_the_cursor() {
        let mut input = typed("helo");
        input.left();
        input.insert('l');
        assert_eq!((input.text().as_str(), input.cursor()), ("hello", 4));
        input.end();
        input.backspace();
        input.home();
        input.delete();
        assert_eq!(input.text(), "ell");
        let mut input = typed("send this  now");
        input.delete_word();
        assert_eq!(input.text(), "send this  ");
        input.delete_word();
        assert_eq!(input.text(), "send ");
    }

    #[test]
    fn history_walks_back_and_restores_the_draft() {
        let mut input = InputLine::default();
        for line in ["one", "two", "two", "  "] {
            input.insert_str(line);
            input.submit();
        }
        input.insert_str("dra");
        input.history_previous();
        assert_eq!(input.text(), "two");
        input.history_previous();
        assert_eq!(input.text(), "one");
        input.history_previous();
        assert_eq!(input.text(), "one", "stays at the oldest entry");
        input.history_next();
        assert_eq!(input.text(), "two");
        input.history_next();
        assert_eq!(input.text(), "dra", "the draft comes back past the newest entry");
        input.history_next();
        assert_eq!(input.text(), "dra");
    }
}
