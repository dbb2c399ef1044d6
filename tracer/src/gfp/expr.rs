//! Evaluator for the constant C expressions of `__print_flags` masks.
//!
//! Handles what format files contain: integer literals (decimal, hex, with
//! `u`/`l` suffixes), casts (`( gfp_t)`, `(unsigned long)`, `(__force gfp_t)`),
//! parentheses, `~`, `<<`, `>>`, `&`, `^`, `|`.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(u64),
    Ident(String),
    Op(&'static str),
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            b')' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'~' | b'|' | b'&' | b'^' => {
                out.push(Tok::Op(match c {
                    b'~' => "~",
                    b'|' => "|",
                    b'&' => "&",
                    _ => "^",
                }));
                i += 1;
            }
            b'<' | b'>' if b.get(i + 1) == Some(&c) => {
                out.push(Tok::Op(if c == b'<' { "<<" } else { ">>" }));
                i += 2;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let lit = s[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
                let v =
                    if let Some(h) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                        u64::from_str_radix(h, 16)
                    } else {
                        lit.parse()
                    }
                    .map_err(|_| format!("bad number `{}`", &s[start..i]))?;
                out.push(Tok::Num(v));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_owned()));
            }
            _ => return Err(format!("unexpected `{}`", c as char)),
        }
    }
    Ok(out)
}

const TYPE_WORDS: &[&str] = &[
    "gfp_t", "unsigned", "long", "int", "__force", "u64", "u32", "signed", "char", "short",
];

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn binary(&mut self, level: usize) -> Result<u64, String> {
        // Precedence from loosest to tightest: | ^ & shifts.
        const LEVELS: &[&[&str]] = &[&["|"], &["^"], &["&"], &["<<", ">>"]];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut v = self.binary(level + 1)?;
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            if !LEVELS[level].contains(&op) {
                break;
            }
            self.pos += 1;
            let r = self.binary(level + 1)?;
            v = match op {
                "|" => v | r,
                "^" => v ^ r,
                "&" => v & r,
                "<<" => v
                    .checked_shl(u32::try_from(r).map_err(|_| "shift too large")?)
                    .ok_or("shift too large")?,
                _ => v
                    .checked_shr(u32::try_from(r).map_err(|_| "shift too large")?)
                    .ok_or("shift too large")?,
            };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<u64, String> {
        match self.peek().cloned() {
            Some(Tok::Op("~")) => {
                self.pos += 1;
                Ok(!self.unary()?)
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Open) => {
                // A cast is a parenthesised list of type words: skip it.
                let mut j = self.pos + 1;
                while let Some(Tok::Ident(w)) = self.toks.get(j) {
                    if !TYPE_WORDS.contains(&w.as_str()) {
                        break;
                    }
                    j += 1;
                }
                if j > self.pos + 1 && self.toks.get(j) == Some(&Tok::Close) {
                    self.pos = j + 1;
                    return self.unary();
                }
                self.pos += 1;
                let v = self.binary(0)?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("missing `)`".to_owned());
                }
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Ident(w)) => Err(format!("unknown name `{w}`")),
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end".to_owned()),
        }
    }
}

/// Evaluate a mask expression.
pub(super) fn eval(s: &str) -> Result<u64, String> {
    let mut p = Parser {
        toks: lex(s)?,
        pos: 0,
    };
    let v = p.binary(0)?;
    if p.pos != p.toks.len() {
        return Err("trailing tokens".to_owned());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn evaluates_format_file_expressions() {
        assert_eq!(
            eval("( unsigned long)(( gfp_t)((((1UL))) << (5)))"),
            Ok(0x20)
        );
        assert_eq!(
            eval("(unsigned long)((( gfp_t)0x20u)|(( gfp_t)0x800u))"),
            Ok(0x820)
        );
        assert_eq!(
            eval("(( gfp_t)(0x400u|0x800u)) & ~(( gfp_t)0x400u)"),
            Ok(0x800)
        );
        assert_eq!(eval("(__force gfp_t)0x10u"), Ok(0x10));
        assert_eq!(eval("1 | 2 & 3"), Ok(3));
        assert_eq!(eval("0"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        assert!(eval("").is_err());
        assert!(eval("(1").is_err());
        assert!(eval("1 <<").is_err());
        assert!(eval("1 << 99").is_err());
        assert!(eval("FOO").is_err());
        assert!(eval("0xZZ").is_err());
        assert!(eval("1 2").is_err());
    }
}
