//! The CoreTech IPC corpus (`{"ipc", "des", "ori_des"}`): which symbol a record is about and
//! its Chinese title. Shared by the `ipc-jsonl` reader and the scheme index.
//!
//! The upstream corpus keys some records wrongly: the main group lost its zeros (`G06Q 10/00`
//! keyed `G06Q1/00`, `H04B 10/02` keyed `H04B1/02`, `H04N 101/00` keyed `H04N11/00`). Those
//! records carry their real symbol at the start of `ori_des`, followed by whitespace
//! (`"H04B 10/02 零部件〔5〕"`), which CNIPA's title lists never do otherwise (titles that merely
//! open with a reference continue with `至`, e.g. `"H04L 15/00至H04L 21/00各组…"`). When that
//! prefix names a different symbol of the same subclass, the record is re-keyed to it and the
//! prefix is dropped from the title. 184 of the 2,856 records of the G06/H04 sample are.

use super::symbol::{IpcSymbol, SymbolError};

/// The symbol and title a CoreTech IPC record stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoretechIpc {
    /// Normalized symbol (`G06F 3/01`).
    pub symbol: String,
    /// The Chinese title: `ori_des` as CNIPA words it (references in parentheses and edition
    /// marks such as `〔8〕` kept), without a symbol prefix.
    pub title: String,
    /// Whether the record's `ipc` key was replaced by the symbol at the start of `ori_des`.
    pub rekeyed: bool,
}

/// Resolves a record's `ipc` key and `ori_des` into its symbol and title.
pub fn resolve(ipc: &str, ori_des: &str) -> Result<CoretechIpc, SymbolError> {
    let given = IpcSymbol::parse(ipc)?;
    if let Some((prefix, rest)) = symbol_prefix(ori_des) {
        if let Ok(p) = IpcSymbol::parse(prefix) {
            let same_subclass = p.section == given.section && p.class == given.class && p.subclass == given.subclass;
            if same_subclass && p.level() >= 4 {
                let rekeyed = p != given;
                return Ok(CoretechIpc { symbol: p.to_string(), title: rest.to_string(), rekeyed });
            }
        }
    }
    Ok(CoretechIpc { symbol: given.to_string(), title: ori_des.trim().to_string(), rekeyed: false })
}

/// `("H04B 10/02", "零部件〔5〕")` for `"H04B 10/02 零部件〔5〕"`: a group symbol (subclass, optional
/// space, `digits/digits`) followed by whitespace and more text.
fn symbol_prefix(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let ok = b.len() > 4 && (b'A'..=b'H').contains(&b[0]) && b[1].is_ascii_digit() && b[2].is_ascii_digit() && b[3].is_ascii_uppercase();
    if !ok {
        return None;
    }
    let mut i = 4;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let g = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if g == 0 || g > 4 || b.get(i + g) != Some(&b'/') {
        return None;
    }
    i += g + 1;
    let sg = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if sg == 0 || sg > 6 {
        return None;
    }
    i += sg;
    let rest = &s[i..];
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() || trimmed.is_empty() {
        return None; // no whitespace after the symbol, or nothing after it
    }
    Some((&s[..i], trimmed.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_records_keep_their_key() {
        let r = resolve("G06F3/01", "用于用户和计算机之间交互的输入装置（G06F 3/16优先）〔8〕").unwrap();
        assert_eq!(
            r,
            CoretechIpc {
                symbol: "G06F 3/01".into(),
                title: "用于用户和计算机之间交互的输入装置（G06F 3/16优先）〔8〕".into(),
                rekeyed: false
            }
        );
        let r = resolve("H04L23/00", "H04L 15/00至H04L 21/00各组未包含的系统的设备或局部电路").unwrap();
        assert_eq!((r.symbol.as_str(), r.rekeyed), ("H04L 23/00", false));
        assert!(r.title.starts_with("H04L 15/00至"));
        assert_eq!(resolve("A", "人类生活必需").unwrap().symbol, "A");
    }

    #[test]
    fn mis_keyed_records_take_the_symbol_in_their_title() {
        let r = resolve("H04B1/02", "H04B 10/02 零部件〔5〕").unwrap();
        assert_eq!(r, CoretechIpc { symbol: "H04B 10/02".into(), title: "零部件〔5〕".into(), rekeyed: true });
        let r = resolve("H04N11/00", "H04N101/00 静止视频摄像机〔6〕").unwrap();
        assert_eq!((r.symbol.as_str(), r.title.as_str()), ("H04N 101/00", "静止视频摄像机〔6〕"));
        let r = resolve("H04H2/02", "H04H 20/02  用于转播广播信息的装置[2008.01]").unwrap();
        assert_eq!((r.symbol.as_str(), r.title.as_str()), ("H04H 20/02", "用于转播广播信息的装置[2008.01]"));
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(resolve("Z99", "x").is_err());
        assert!(resolve("", "x").is_err());
    }
}
