//! IPC symbols: parsing and normalization of every spelling met in the sources —
//! `H04L 29/06`, `H04L29/06` (CoreTech), `H04L0029060000` (WIPO master file), `B60R  900`
//! (USPTO APS / PATDOC fixed width: group in 3 columns, then subgroup), `H01J001/62` (pap),
//! `C07K  14/47        20060101AFI…` (EPO), full-width `Ｈ０４Ｌ　２９／０６` — into one form,
//! `H04L 29/06`.

use std::fmt;

/// A parsed IPC symbol, from section down to subgroup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcSymbol {
    /// `A`–`H`.
    pub section: char,
    /// Two digits, e.g. `04`.
    pub class: Option<String>,
    /// One capital letter.
    pub subclass: Option<char>,
    /// Main group number without leading zeros, e.g. `29`.
    pub group: Option<String>,
    /// Subgroup digits, at least two, trailing zeros beyond two removed (`06`, `0925`).
    pub subgroup: Option<String>,
}

/// Why a string is not an IPC symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolError {
    /// Empty input.
    Empty,
    /// The first letter is not a section `A`–`H`.
    BadSection(char),
    /// The class is not two digits.
    BadClass(String),
    /// The subclass is not a letter.
    BadSubclass(String),
    /// A subgroup was given without a main group, or the group is not 1–4 digits.
    BadGroup(String),
    /// The subgroup is not 1–6 digits.
    BadSubgroup(String),
}

impl fmt::Display for SymbolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymbolError::Empty => write!(f, "empty IPC symbol"),
            SymbolError::BadSection(c) => write!(f, "wrong section letter {c:?} (expected A–H)"),
            SymbolError::BadClass(s) => write!(f, "class {s:?} is not two digits"),
            SymbolError::BadSubclass(s) => write!(f, "subclass {s:?} is not a letter"),
            SymbolError::BadGroup(s) => write!(f, "missing or malformed main group in {s:?}"),
            SymbolError::BadSubgroup(s) => write!(f, "malformed subgroup {s:?}"),
        }
    }
}

impl std::error::Error for SymbolError {}

/// Maps full-width ASCII variants (U+FF01–U+FF5E) and the ideographic space to ASCII.
pub fn fold_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

fn norm_subgroup(digits: &str) -> String {
    let t = digits.trim_end_matches('0');
    let mut s = t.to_string();
    while s.len() < 2 {
        s.push('0');
    }
    s
}

fn norm_group(digits: &str) -> String {
    let t = digits.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

impl IpcSymbol {
    /// Parses a symbol in any of the spellings above. Text after the symbol that is separated
    /// by whitespace or `(` (version dates, EPO's `20060101AFI…`) is ignored.
    pub fn parse(input: &str) -> Result<IpcSymbol, SymbolError> {
        let folded = fold_width(input);
        let s = folded.trim().to_ascii_uppercase();
        let mut chars = s.chars();
        let section = chars.next().ok_or(SymbolError::Empty)?;
        if !('A'..='H').contains(&section) {
            return Err(SymbolError::BadSection(section));
        }
        let rest = chars.as_str();
        // WIPO master-file form: A01B0001000000.
        if rest.len() == 13 && rest.is_ascii() {
            let b = rest.as_bytes();
            if b[..2].iter().all(u8::is_ascii_digit) && b[2].is_ascii_uppercase() && b[3..].iter().all(u8::is_ascii_digit) {
                return Ok(IpcSymbol {
                    section,
                    class: Some(rest[..2].to_string()),
                    subclass: Some(b[2] as char),
                    group: Some(norm_group(&rest[3..7])),
                    subgroup: Some(norm_subgroup(&rest[7..])),
                });
            }
        }
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(IpcSymbol { section, class: None, subclass: None, group: None, subgroup: None });
        }
        let class: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if class.len() != 2 {
            return Err(SymbolError::BadClass(rest.chars().take(3).collect()));
        }
        let rest = &rest[2..];
        let mut it = rest.chars();
        let subclass = match it.next() {
            None => return Ok(IpcSymbol { section, class: Some(class), subclass: None, group: None, subgroup: None }),
            Some(c) if c.is_ascii_uppercase() => c,
            Some(c) if c.is_whitespace() || c == '(' => {
                return Ok(IpcSymbol { section, class: Some(class), subclass: None, group: None, subgroup: None })
            }
            Some(_) => return Err(SymbolError::BadSubclass(rest.chars().take(2).collect())),
        };
        let after = it.as_str();
        // The group/subgroup part: up to the first character that is not a digit, space or '/',
        // where a space run is followed by something other than digits/'/'.
        let part = group_part(after);
        let compact: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        let (group, subgroup) = if compact.is_empty() {
            (None, None)
        } else if let Some((g, sg)) = compact.split_once('/') {
            if g.is_empty() || g.len() > 4 || !g.chars().all(|c| c.is_ascii_digit()) {
                return Err(SymbolError::BadGroup(s.clone()));
            }
            if sg.is_empty() || sg.len() > 6 || !sg.chars().all(|c| c.is_ascii_digit()) {
                return Err(SymbolError::BadSubgroup(sg.to_string()));
            }
            (Some(norm_group(g)), Some(norm_subgroup(sg)))
        } else if part.len() >= 5 && part.chars().all(|c| c.is_ascii_digit() || c == ' ') {
            // Fixed-width form (APS, PATDOC): three columns of group, then the subgroup.
            let (g, sg) = part.split_at(3);
            let (g, sg) = (g.trim(), sg.trim());
            if g.is_empty() || !g.chars().all(|c| c.is_ascii_digit()) {
                return Err(SymbolError::BadGroup(s.clone()));
            }
            if sg.is_empty() || !sg.chars().all(|c| c.is_ascii_digit()) {
                return Err(SymbolError::BadSubgroup(sg.to_string()));
            }
            (Some(norm_group(g)), Some(norm_subgroup(sg)))
        } else if compact.len() <= 4 && compact.chars().all(|c| c.is_ascii_digit()) {
            (Some(norm_group(&compact)), None)
        } else {
            return Err(SymbolError::BadGroup(s.clone()));
        };
        Ok(IpcSymbol { section, class: Some(class), subclass: Some(subclass), group, subgroup })
    }

    /// Depth: 1 section, 2 class, 3 subclass, 4 main group (or group without subgroup),
    /// 5 subgroup.
    pub fn level(&self) -> u8 {
        match (&self.class, &self.subclass, &self.group, &self.subgroup) {
            (None, ..) => 1,
            (Some(_), None, ..) => 2,
            (Some(_), Some(_), None, _) => 3,
            (Some(_), Some(_), Some(_), None) => 4,
            (Some(_), Some(_), Some(_), Some(sg)) if sg == "00" => 4,
            _ => 5,
        }
    }

    /// The symbol one level up (subgroup → main group `/00` → subclass → class → section).
    pub fn parent(&self) -> Option<IpcSymbol> {
        let mut p = self.clone();
        match self.level() {
            1 => return None,
            2 => p.class = None,
            3 => p.subclass = None,
            4 => {
                p.group = None;
                p.subgroup = None;
            }
            _ => p.subgroup = Some("00".into()),
        }
        Some(p)
    }

    /// The compact spelling CoreTech uses: `H04L29/06`.
    pub fn compact(&self) -> String {
        self.to_string().replace(' ', "")
    }
}

impl fmt::Display for IpcSymbol {
    /// The normalized spelling: `H04L 29/06`, `H04L`, `H04`, `H`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.section)?;
        if let Some(c) = &self.class {
            write!(f, "{c}")?;
        }
        if let Some(c) = self.subclass {
            write!(f, "{c}")?;
        }
        if let Some(g) = &self.group {
            write!(f, " {g}")?;
            if let Some(sg) = &self.subgroup {
                write!(f, "/{sg}")?;
            }
        }
        Ok(())
    }
}

fn group_part(after: &str) -> &str {
    // Leading spaces are padding of the fixed-width form; keep them (they matter there).
    let b = after.as_bytes();
    let mut end = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c == b'/' {
            i += 1;
            end = i;
        } else if c == b' ' {
            // A space run continues the symbol only if it is followed by a digit or '/', and
            // we are still in the group columns (fixed width) or before any digit.
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let continues =
                j < b.len() && (b[j].is_ascii_digit() || b[j] == b'/') && (end == 0 || (end < 3 && !after[..end].contains('/')));
            if !continues {
                break;
            }
            i = j;
        } else {
            break;
        }
    }
    let part = &after[..end];
    // Drop the single separator space of `H04L 29/06` so fixed-width columns line up only
    // for the padded forms (`B60R  900`, `G06F 1516`).
    if part.contains('/') {
        part.trim()
    } else {
        part
    }
}

/// Parses and returns the normalized spelling (`H04L 29/06`).
pub fn normalize(s: &str) -> Result<String, SymbolError> {
    IpcSymbol::parse(s).map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_normalize_to_one_form() {
        for (input, want) in [
            ("H04L 29/06", "H04L 29/06"),
            ("H04L29/06", "H04L 29/06"),
            ("h04l29/06", "H04L 29/06"),
            ("H04L0029060000", "H04L 29/06"),
            ("A01B0001000000", "A01B 1/00"),
            ("H04W0028092500", "H04W 28/0925"),
            ("H04W28/0925", "H04W 28/0925"),
            ("B60R  900", "B60R 9/00"),
            ("G06F 1516", "G06F 15/16"),
            ("G06F 1300", "G06F 13/00"),
            ("H01J001/62", "H01J 1/62"),
            ("C07K  14/47        20060101AFI20050713BHEP        ", "C07K 14/47"),
            ("H04L 29/06 (2006.01)", "H04L 29/06"),
            ("Ｈ０４Ｌ　２９／０６", "H04L 29/06"),
            ("Ｈ０４Ｌ２９／０６", "H04L 29/06"),
            ("G06F", "G06F"),
            ("G06", "G06"),
            ("A", "A"),
            ("G06F3/01", "G06F 3/01"),
            ("G06F 3/010", "G06F 3/01"),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn malformed_symbols_say_why() {
        assert_eq!(IpcSymbol::parse("Z04L 29/06"), Err(SymbolError::BadSection('Z')));
        assert!(matches!(IpcSymbol::parse("H4L 29/06"), Err(SymbolError::BadClass(_))));
        assert!(matches!(IpcSymbol::parse("H04/06"), Err(SymbolError::BadSubclass(_))));
        assert!(matches!(IpcSymbol::parse("H04L /06"), Err(SymbolError::BadGroup(_))));
        assert!(matches!(IpcSymbol::parse("H04L 29/"), Err(SymbolError::BadSubgroup(_))));
        assert_eq!(IpcSymbol::parse("  "), Err(SymbolError::Empty));
    }

    #[test]
    fn levels_and_parents() {
        let s = IpcSymbol::parse("H04W 28/0925").unwrap();
        assert_eq!(s.level(), 5);
        let chain: Vec<String> = std::iter::successors(Some(s), |s| s.parent()).map(|s| s.to_string()).collect();
        assert_eq!(chain, ["H04W 28/0925", "H04W 28/00", "H04W", "H04", "H"]);
        assert_eq!(IpcSymbol::parse("H04W28/0925").unwrap().compact(), "H04W28/0925");
    }
}
