//! The output of one normalizer, built lazily: while everything a stage emits is the input
//! verbatim, nothing is copied, so a stage that finds nothing to change costs one scan and no
//! allocation.

/// Collects a stage's output into `out`, copying only once it differs from `src`.
pub struct Rewriter<'a> {
    src: &'a str,
    out: &'a mut String,
    /// While not diverged: the output so far is `src[..cursor]`.
    cursor: usize,
    diverged: bool,
}

impl<'a> Rewriter<'a> {
    /// Starts an empty output for `src` (clears `out`).
    pub fn new(src: &'a str, out: &'a mut String) -> Self {
        out.clear();
        Self { src, out, cursor: 0, diverged: false }
    }

    /// The input.
    pub fn src(&self) -> &'a str {
        self.src
    }

    /// Emits `src[a..b]`.
    #[inline]
    pub fn keep(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        if !self.diverged {
            if a == self.cursor {
                self.cursor = b;
                return;
            }
            self.diverge();
        }
        self.out.push_str(&self.src[a..b]);
    }

    /// Emits `s`.
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        if !self.diverged {
            if self.src.as_bytes()[self.cursor..].starts_with(s.as_bytes()) {
                self.cursor += s.len();
                return;
            }
            self.diverge();
        }
        self.out.push_str(s);
    }

    /// Emits `c`.
    #[inline]
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    fn diverge(&mut self) {
        self.out.reserve(self.src.len());
        self.out.push_str(&self.src[..self.cursor]);
        self.diverged = true;
    }

    /// Whether the output differs from the input; if so, it is in `out`.
    pub fn finish(mut self) -> bool {
        if !self.diverged {
            if self.cursor == self.src.len() {
                return false;
            }
            self.diverge();
        }
        true
    }
}

/// Runs one stage over `text` with `buf` as the output buffer; swaps the result into `text`
/// when it changed. Returns whether it changed.
pub fn run_stage(text: &mut String, buf: &mut String, stage: impl FnOnce(&mut Rewriter<'_>)) -> bool {
    let changed = {
        let mut w = Rewriter::new(text, buf);
        stage(&mut w);
        w.finish()
    };
    if changed {
        std::mem::swap(text, buf);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_on_change() {
        let mut t = String::from("abc def");
        let mut buf = String::new();
        assert!(!run_stage(&mut t, &mut buf, |w| {
            w.keep(0, 3);
            w.push(' ');
            w.keep(4, 7);
        }));
        assert_eq!(t, "abc def");
        assert_eq!(buf.capacity(), 0, "nothing copied");
        assert!(run_stage(&mut t, &mut buf, |w| {
            w.keep(0, 3);
            w.push('\n');
            w.keep(4, 7);
        }));
        assert_eq!(t, "abc\ndef");
        // A prefix of the input is a change too.
        assert!(run_stage(&mut t, &mut buf, |w| w.keep(0, 3)));
        assert_eq!(t, "abc");
    }
}
