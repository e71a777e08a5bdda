//! Reading a crate's module files as the compiler sees their module structure, enough to know
//! which module refers to which: tokens without comments and literals, test-only items left out,
//! `mod` declarations followed to their files, `crate::`/`super::`/`self::` paths resolved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root (`["sync", "slaves"]`); empty for the root.
pub type ModPath = Vec<String>;

/// One token: an identifier, `::`, or another punctuation character, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    text: String,
    line: u32,
}

/// The tokens of `src` that matter for paths: identifiers and punctuation. Comments, string,
/// byte-string, raw-string and char literals and numbers are dropped (a path in a comment or a
/// message is no import); line numbers are kept.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0, 1u32, Vec::new());
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += u32::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1, &mut line);
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime: skip the quote only.
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '#' | '"'))) {
                i = skip_raw_string(&c, i, &mut line);
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(&c, i + 1, &mut line);
            } else if word == "b" && at(i) == '\'' {
                // b'x' is a char literal; the next round skips it.
            } else {
                out.push(Tok { text: word, line });
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Past the end of a string whose body starts at `i`.
fn skip_string(c: &[char], mut i: usize, line: &mut u32) -> usize {
    while i < c.len() && c[i] != '"' {
        *line += u32::from(c[i] == '\n');
        i += if c[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Past the end of a raw string whose `#`s or quote start at `i`.
fn skip_raw_string(c: &[char], mut i: usize, line: &mut u32) -> usize {
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += u32::from(c[i] == '\n');
        i += 1;
    }
    i
}

/// Whether an attribute's tokens (between `#[` and `]`) make its item test-only:
/// `cfg(test)` or `cfg(all(test, ...))`.
fn test_only(attr: &[Tok]) -> bool {
    let t: Vec<&str> = attr.iter().map(|t| t.text.as_str()).collect();
    matches!(t.as_slice(), ["cfg", "(", "test", ")"])
        || (t.starts_with(&["cfg", "(", "all", "("]) && t.contains(&"test"))
}

/// Index past the bracket that closes the one at `t[i]`.
fn close_of(t: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < t.len() {
        match t[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index past the item that starts at `i`: its `;` at bracket depth 0, or the `}` that closes
/// its body.
fn item_end(t: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < t.len() {
        match t[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" => depth -= 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ";" if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The tokens of a file without its test-only items (`#[cfg(test)]` modules, functions, uses).
fn without_tests(t: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i].text == "#" && t.get(i + 1).is_some_and(|n| n.text == "[") {
            let close = close_of(&t, i + 1);
            if test_only(&t[i + 2..close.saturating_sub(1).max(i + 2)]) {
                // Skip further attributes, then the item itself.
                let mut j = close;
                while t.get(j).is_some_and(|n| n.text == "#") {
                    j = close_of(&t, j + 1);
                }
                i = item_end(&t, j);
                continue;
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    out
}

/// One reference from a module to another: where it is written and the path it names,
/// resolved to an absolute module path (still to be cut to a module that exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The module the reference is written in (inline modules included).
    pub from: ModPath,
    /// 1-based line.
    pub line: u32,
    /// The absolute path it names (module segments then possibly an item).
    pub path: ModPath,
}

/// A module file: its path in the crate, the file, its declared child modules, its references.
#[derive(Debug, Clone)]
pub struct ModFile {
    /// Its module path.
    pub path: ModPath,
    /// The file, relative to the crate's source directory.
    pub file: PathBuf,
    /// Child modules declared with `mod x;` (not test-only ones).
    pub children: Vec<String>,
    /// Every `crate::`, `super::` and `self::` path outside test-only items.
    pub refs: Vec<Ref>,
    /// `pub use` at the root: name -> the path it re-exports (`Error` -> `error::Error`).
    pub reexports: BTreeMap<String, ModPath>,
}

/// Expand the use tree starting at `t[i]` (after a `::`) into full paths below `prefix`.
fn use_tree(t: &[Tok], mut i: usize, prefix: &ModPath, out: &mut Vec<ModPath>) -> usize {
    let mut path = prefix.clone();
    while i < t.len() {
        let s = t[i].text.as_str();
        if s == "{" {
            i += 1;
            while i < t.len() && t[i].text != "}" {
                if t[i].text == "," {
                    i += 1;
                    continue;
                }
                i = use_tree(t, i, &path, out);
            }
            return i + 1;
        }
        if s == "self" {
            // `{self, ...}` names the prefix itself.
            i += 1;
        } else if s
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
        {
            path.push(s.to_string());
            i += 1;
        } else {
            break;
        }
        if t.get(i).is_some_and(|n| n.text == "::") {
            i += 1;
        } else {
            break;
        }
    }
    out.push(path);
    i
}

/// Parse one module file's text.
pub fn parse_file(path: ModPath, file: PathBuf, src: &str) -> ModFile {
    let t = without_tests(tokens(src));
    let mut m = ModFile {
        path: path.clone(),
        file,
        children: Vec::new(),
        refs: Vec::new(),
        reexports: BTreeMap::new(),
    };
    // Inline modules (`mod x { ... }`) open at a brace depth: (name, depth).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < t.len() {
        let s = t[i].text.as_str();
        let prev = if i > 0 { t[i - 1].text.as_str() } else { "" };
        match s {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if t.get(i + 1).is_some() => {
                let name = t[i + 1].text.clone();
                match t.get(i + 2).map(|n| n.text.as_str()) {
                    Some(";") if inline.is_empty() => m.children.push(name),
                    Some("{") => inline.push((name, depth)),
                    _ => {}
                }
            }
            "crate" | "super" | "self"
                if t.get(i + 1).is_some_and(|n| n.text == "::") && prev != "::" =>
            {
                let here: ModPath = path
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|(n, _)| n.clone()))
                    .collect();
                let mut base = match s {
                    "crate" => Vec::new(),
                    _ => here.clone(),
                };
                let mut j = i;
                // `super::super::x`
                while t.get(j).is_some_and(|n| n.text == "super") {
                    base.pop();
                    j += 2;
                }
                if s != "super" {
                    j += 2;
                }
                let line = t[i].line;
                let mut paths = Vec::new();
                let end = use_tree(&t, j, &base, &mut paths);
                for p in paths {
                    m.refs.push(Ref {
                        from: here.clone(),
                        line,
                        path: p,
                    });
                }
                i = end;
                continue;
            }
            "use" if prev == "pub" && path.is_empty() && inline.is_empty() => {
                let mut paths = Vec::new();
                let end = use_tree(&t, i + 1, &Vec::new(), &mut paths);
                for p in paths {
                    if let Some(name) = p.last() {
                        m.reexports.insert(name.clone(), p.clone());
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    m
}

/// Where `mod name;` declared in the file `file` (module `path`) lives, among `exists`.
fn child_file(file: &Path, name: &str, exists: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_str()?;
    let dir = file.parent().unwrap_or(Path::new(""));
    let dir = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| exists(p))
}

/// Every module file of the crate whose root file is `root`, by following `mod` declarations.
/// `read` gives a file's text by its path relative to the source directory.
pub fn load_crate(root: &str, read: &dyn Fn(&Path) -> Option<String>) -> Vec<ModFile> {
    let mut out = Vec::new();
    let mut todo = vec![(Vec::new(), PathBuf::from(root))];
    let mut seen = BTreeSet::new();
    while let Some((path, file)) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let Some(src) = read(&file) else {
            continue;
        };
        let m = parse_file(path.clone(), file.clone(), &src);
        for name in &m.children {
            let exists = |p: &Path| read(p).is_some();
            if let Some(f) = child_file(&file, name, &exists) {
                let mut p = path.clone();
                p.push(name.clone());
                todo.push((p, f));
            }
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<String> {
        tokens(src).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn comments_and_literals_hold_no_paths() {
        let src = "// crate::a\n/* crate::b /* nested */ crate::c */ x \"crate::d\\\"\" \
                   r#\"crate::e\"# b\"crate::f\" '\"' 'a' '\\'' y";
        assert_eq!(texts(src), ["x", "y"]);
        assert_eq!(tokens("a\n/*\n*/\nb")[1].line, 4);
        // A lifetime is no char literal.
        assert_eq!(texts("fn f<'a>(x: &'a u8) {}").len(), 14);
    }
}
