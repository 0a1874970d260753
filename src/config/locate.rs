//! Maps a key path such as `train.lr` or `data.filters.views[1]` to the line of the YAML
//! file that sets it, so config errors can point at the line the user has to edit.
//!
//! This is a line scanner for block-style YAML (the style of `pipelines/*.yaml`), not a YAML
//! parser: parsing is serde-saphyr's job; this only finds where a key was written.

use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct KeyLines {
    lines: HashMap<String, usize>,
}

struct Frame {
    indent: usize,
    path: String,
    is_item: bool,
    next_index: usize,
}

impl KeyLines {
    pub fn scan(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let content = strip_comment(raw);
            let trimmed = content.trim_start();
            if trimmed.is_empty() || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = content.len() - trimmed.len();
            let mut rest = trimmed.trim_end();
            if rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|f| f.indent > indent || (f.is_item && f.indent == indent))
                {
                    stack.pop();
                }
                let (parent_path, index) = match stack.last_mut() {
                    Some(f) => {
                        f.next_index += 1;
                        (f.path.clone(), f.next_index - 1)
                    }
                    None => (String::new(), 0),
                };
                let path = format!("{parent_path}[{index}]");
                lines.entry(path.clone()).or_insert(line_no);
                stack.push(Frame {
                    indent,
                    path,
                    is_item: true,
                    next_index: 0,
                });
                let after = rest[1..].trim_start();
                indent += rest.len() - after.len();
                rest = after;
                if rest.is_empty() {
                    continue;
                }
            }
            let Some(key) = mapping_key(rest) else {
                continue;
            };
            while stack
                .last()
                .is_some_and(|f| f.indent > indent || (!f.is_item && f.indent == indent))
            {
                stack.pop();
            }
            let path = match stack.last() {
                Some(f) if !f.path.is_empty() => format!("{}.{key}", f.path),
                _ => key.to_string(),
            };
            lines.entry(path.clone()).or_insert(line_no);
            stack.push(Frame {
                indent,
                path,
                is_item: false,
                next_index: 0,
            });
        }
        KeyLines { lines }
    }

    /// The line of `path`, or of its closest enclosing key that the file sets.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&l) = self.lines.get(p) {
                return Some(l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Whether the file itself sets exactly this key.
    pub fn contains(&self, path: &str) -> bool {
        self.lines.contains_key(path)
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_single = false;
    let mut in_double = false;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            '#' if !in_single && !in_double && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn mapping_key(s: &str) -> Option<&str> {
    let (key, _) = s.split_once(':').filter(|(k, v)| {
        !k.is_empty()
            && (v.is_empty() || v.starts_with(' '))
            && !k.starts_with(['{', '[', '"', '\''])
    })?;
    Some(key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let text = "\
# top comment
name: x   # trailing
data:
  root: a/b
  filters:
    views: [PA]
augment:
  train:
    - resize: {size: 256}
    - crop:
        size: 224
  eval:
  - resize: 256
model:
  arch: muxnet_m
";
        let k = KeyLines::scan(text);
        assert_eq!(k.line_of("name"), Some(2));
        assert_eq!(k.line_of("data.root"), Some(4));
        assert_eq!(k.line_of("data.filters.views"), Some(6));
        assert_eq!(k.line_of("augment.train[0]"), Some(9));
        assert_eq!(k.line_of("augment.train[0].resize"), Some(9));
        assert_eq!(k.line_of("augment.train[1].crop.size"), Some(11));
        assert_eq!(k.line_of("augment.eval[0].resize"), Some(13));
        assert_eq!(k.line_of("model.arch"), Some(15));
        // An unknown key falls back to the closest key the file does set.
        assert_eq!(k.line_of("model.nope"), Some(14));
        assert!(k.contains("data.root"));
        assert!(!k.contains("data.metadata"));
    }

    #[test]
    fn hash_inside_quotes_is_not_a_comment() {
        let k = KeyLines::scan("a:\n  b: \"x # y\"\n  c: 1\n");
        assert_eq!(k.line_of("a.c"), Some(3));
    }
}
