//! The subset of ThreatConnect Query Language the simulator understands (API spec §3).
//!
//! Clauses `<keyword> <op> <value>` joined by `AND` / `OR`, optionally parenthesised, over
//! `lastModified`, `dateAdded`, `typeName`, `summary` and `id`. Anything else is rejected with a
//! 400 "Invalid TQL …" naming the offending text, as the real API rejects what it cannot parse —
//! notably timestamps with fractional seconds, the pitfall Elastic hit (§3).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::data::Indicator;

/// Why a TQL expression was rejected. Every message starts with "Invalid TQL".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TqlError {
    /// A keyword the simulator does not know.
    #[error("Invalid TQL: unknown keyword \"{0}\"")]
    UnknownKeyword(String),
    /// An operator that does not apply to the keyword.
    #[error("Invalid TQL: operator \"{op}\" is not valid for {keyword}")]
    BadOperator {
        /// The keyword.
        keyword: String,
        /// The operator text.
        op: String,
    },
    /// A date value in none of the accepted formats.
    #[error(
        "Invalid TQL: invalid date value \"{0}\" (expected YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)"
    )]
    BadDate(String),
    /// A value of the wrong kind (e.g. a non-integer id).
    #[error("Invalid TQL: invalid value \"{value}\" for {keyword}")]
    BadValue {
        /// The keyword.
        keyword: String,
        /// The value text.
        value: String,
    },
    /// Any other syntax error.
    #[error("Invalid TQL: {0}")]
    Syntax(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=` / `EQ`.
    Eq,
    /// `!=` / `NE`.
    Ne,
    /// `>` / `GT`.
    Gt,
    /// `>=` / `GEQ`.
    Geq,
    /// `<` / `LT`.
    Lt,
    /// `<=` / `LEQ`.
    Leq,
}

impl CmpOp {
    fn holds<T: Ord>(self, left: &T, right: &T) -> bool {
        match self {
            Self::Eq => left == right,
            Self::Ne => left != right,
            Self::Gt => left > right,
            Self::Geq => left >= right,
            Self::Lt => left < right,
            Self::Leq => left <= right,
        }
    }
}

/// A string operator for `typeName` / `summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrOp {
    /// `=` / `EQ`.
    Eq(String),
    /// `!=` / `NE`.
    Ne(String),
    /// `IN ("a","b")`.
    In(Vec<String>),
    /// `NOT IN ("a","b")`.
    NotIn(Vec<String>),
    /// `CONTAINS "x"`.
    Contains(String),
    /// `STARTSWITH "x"`.
    StartsWith(String),
    /// `ENDSWITH "x"`.
    EndsWith(String),
}

/// A parsed TQL expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Both sides hold.
    And(Box<Expr>, Box<Expr>),
    /// Either side holds.
    Or(Box<Expr>, Box<Expr>),
    /// `lastModified <op> "<date>"`.
    LastModified(CmpOp, DateTime<Utc>),
    /// `dateAdded <op> "<date>"`.
    DateAdded(CmpOp, DateTime<Utc>),
    /// `id <op> <integer>`.
    Id(CmpOp, i64),
    /// `typeName …` (case-insensitive like the API's type names).
    TypeName(StrOp),
    /// `summary …`.
    Summary(StrOp),
}

impl Expr {
    /// Whether `ind` matches.
    pub fn matches(&self, ind: &Indicator) -> bool {
        match self {
            Self::And(a, b) => a.matches(ind) && b.matches(ind),
            Self::Or(a, b) => a.matches(ind) || b.matches(ind),
            Self::LastModified(op, t) => op.holds(&ind.last_modified, t),
            Self::DateAdded(op, t) => op.holds(&ind.date_added, t),
            Self::Id(op, v) => op.holds(&ind.id, v),
            Self::TypeName(op) => str_matches(op, ind.kind.name(), true),
            Self::Summary(op) => str_matches(op, &ind.summary, false),
        }
    }
}

fn str_matches(op: &StrOp, s: &str, fold: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if fold {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match op {
        StrOp::Eq(v) => eq(s, v),
        StrOp::Ne(v) => !eq(s, v),
        StrOp::In(vs) => vs.iter().any(|v| eq(s, v)),
        StrOp::NotIn(vs) => !vs.iter().any(|v| eq(s, v)),
        StrOp::Contains(v) => s.contains(v.as_str()),
        StrOp::StartsWith(v) => s.starts_with(v.as_str()),
        StrOp::EndsWith(v) => s.ends_with(v.as_str()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    LParen,
    RParen,
    Comma,
    /// A double-quoted string, unescaped.
    Str(String),
    /// A bare word: keyword, word operator, number.
    Word(String),
    /// A symbolic operator: `=`, `!=`, `>`, `>=`, `<`, `<=`.
    Sym(&'static str),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LParen => f.write_str("("),
            Self::RParen => f.write_str(")"),
            Self::Comma => f.write_str(","),
            Self::Str(s) => write!(f, "\"{s}\""),
            Self::Word(w) => f.write_str(w),
            Self::Sym(s) => f.write_str(s),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>, TqlError> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::LParen);
            }
            ')' => {
                chars.next();
                out.push(Token::RParen);
            }
            ',' => {
                chars.next();
                out.push(Token::Comma);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(e) => s.push(e),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(TqlError::Syntax(format!("unterminated string \"{s}")));
                }
                out.push(Token::Str(s));
            }
            '=' => {
                chars.next();
                out.push(Token::Sym("="));
            }
            '!' | '>' | '<' => {
                chars.next();
                let eq = chars.peek() == Some(&'=');
                if eq {
                    chars.next();
                }
                out.push(Token::Sym(match (c, eq) {
                    ('!', true) => "!=",
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    _ => return Err(TqlError::Syntax("unexpected \"!\"".into())),
                }));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "()\",=!<>".contains(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Ok(out)
}

/// Parses a TQL expression.
pub fn parse(input: &str) -> Result<Expr, TqlError> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(TqlError::Syntax("empty query".into()));
    }
    let mut p = Parser { tokens, pos: 0 };
    let e = p.or_expr()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(TqlError::Syntax(format!("unexpected \"{t}\""))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn is_word(t: Option<&Token>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or_expr(&mut self) -> Result<Expr, TqlError> {
        let mut left = self.and_expr()?;
        while is_word(self.peek(), "or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, TqlError> {
        let mut left = self.primary()?;
        while is_word(self.peek(), "and") {
            self.pos += 1;
            let right = self.primary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, TqlError> {
        match self.next() {
            Some(Token::LParen) => {
                let e = self.or_expr()?;
                match self.next() {
                    Some(Token::RParen) => Ok(e),
                    Some(t) => Err(TqlError::Syntax(format!("expected \")\", found \"{t}\""))),
                    None => Err(TqlError::Syntax("missing \")\"".into())),
                }
            }
            Some(Token::Word(k)) => self.clause(&k),
            Some(t) => Err(TqlError::Syntax(format!(
                "expected a keyword, found \"{t}\""
            ))),
            None => Err(TqlError::Syntax("unexpected end of query".into())),
        }
    }

    /// Reads an operator: a symbol, a word operator, or `NOT <word>`.
    fn operator(&mut self, keyword: &str) -> Result<String, TqlError> {
        match self.next() {
            Some(Token::Sym(s)) => Ok(s.to_owned()),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("not") => match self.next() {
                Some(Token::Word(w2)) => Ok(format!("NOT {}", w2.to_ascii_uppercase())),
                _ => Err(TqlError::Syntax(format!(
                    "incomplete NOT operator after {keyword}"
                ))),
            },
            Some(Token::Word(w)) => Ok(w.to_ascii_uppercase()),
            Some(t) => Err(TqlError::Syntax(format!(
                "expected an operator after {keyword}, found \"{t}\""
            ))),
            None => Err(TqlError::Syntax(format!(
                "missing operator after {keyword}"
            ))),
        }
    }

    fn clause(&mut self, keyword: &str) -> Result<Expr, TqlError> {
        let lower = keyword.to_ascii_lowercase();
        match lower.as_str() {
            "lastmodified" | "dateadded" => {
                let op = self.operator(keyword)?;
                let cmp = cmp_op(keyword, &op)?;
                let t = match self.next() {
                    Some(Token::Str(s)) => parse_date(&s)?,
                    Some(t) => return Err(TqlError::BadDate(t.to_string())),
                    None => return Err(TqlError::Syntax(format!("missing value after {keyword}"))),
                };
                Ok(if lower == "lastmodified" {
                    Expr::LastModified(cmp, t)
                } else {
                    Expr::DateAdded(cmp, t)
                })
            }
            "id" => {
                let op = self.operator(keyword)?;
                let cmp = cmp_op(keyword, &op)?;
                let text = match self.next() {
                    Some(Token::Word(w) | Token::Str(w)) => w,
                    Some(t) => t.to_string(),
                    None => return Err(TqlError::Syntax("missing value after id".into())),
                };
                let v = text.parse::<i64>().map_err(|_| TqlError::BadValue {
                    keyword: keyword.to_owned(),
                    value: text.clone(),
                })?;
                Ok(Expr::Id(cmp, v))
            }
            "typename" | "summary" => {
                let op = self.operator(keyword)?;
                let sop = match op.as_str() {
                    "=" | "EQ" => StrOp::Eq(self.string(keyword)?),
                    "!=" | "NE" => StrOp::Ne(self.string(keyword)?),
                    "IN" => StrOp::In(self.list(keyword)?),
                    "NOT IN" => StrOp::NotIn(self.list(keyword)?),
                    "CONTAINS" if lower == "summary" => StrOp::Contains(self.string(keyword)?),
                    "STARTSWITH" if lower == "summary" => StrOp::StartsWith(self.string(keyword)?),
                    "ENDSWITH" if lower == "summary" => StrOp::EndsWith(self.string(keyword)?),
                    _ => {
                        return Err(TqlError::BadOperator {
                            keyword: keyword.to_owned(),
                            op,
                        });
                    }
                };
                Ok(if lower == "typename" {
                    Expr::TypeName(sop)
                } else {
                    Expr::Summary(sop)
                })
            }
            _ => Err(TqlError::UnknownKeyword(keyword.to_owned())),
        }
    }

    fn string(&mut self, keyword: &str) -> Result<String, TqlError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            Some(t) => Err(TqlError::BadValue {
                keyword: keyword.to_owned(),
                value: t.to_string(),
            }),
            None => Err(TqlError::Syntax(format!("missing value after {keyword}"))),
        }
    }

    fn list(&mut self, keyword: &str) -> Result<Vec<String>, TqlError> {
        if self.next() != Some(Token::LParen) {
            return Err(TqlError::Syntax(format!(
                "expected \"(\" after IN for {keyword}"
            )));
        }
        let mut out = vec![self.string(keyword)?];
        loop {
            match self.next() {
                Some(Token::Comma) => out.push(self.string(keyword)?),
                Some(Token::RParen) => return Ok(out),
                _ => {
                    return Err(TqlError::Syntax(format!(
                        "unterminated IN list for {keyword}"
                    )));
                }
            }
        }
    }
}

fn cmp_op(keyword: &str, op: &str) -> Result<CmpOp, TqlError> {
    Ok(match op {
        "=" | "EQ" => CmpOp::Eq,
        "!=" | "NE" => CmpOp::Ne,
        ">" | "GT" => CmpOp::Gt,
        ">=" | "GEQ" => CmpOp::Geq,
        "<" | "LT" => CmpOp::Lt,
        "<=" | "LEQ" => CmpOp::Leq,
        _ => {
            return Err(TqlError::BadOperator {
                keyword: keyword.to_owned(),
                op: op.to_owned(),
            });
        }
    })
}

/// Accepts exactly `YYYY-MM-DDTHH:MM:SSZ`, `YYYY-MM-DD` and `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn parse_date(s: &str) -> Result<DateTime<Utc>, TqlError> {
    let bad = || TqlError::BadDate(s.to_owned());
    // chrono's %S would accept a fraction after it with some formats; insist on exact lengths.
    let t = match s.len() {
        20 if s.ends_with('Z') => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ"),
        19 => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"),
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default()),
        _ => return Err(bad()),
    }
    .map_err(|_| bad())?;
    Ok(t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn elastic_query_parses() {
        let e = parse("lastModified GEQ \"2023-11-28T08:00:00Z\"").unwrap();
        assert_eq!(
            e,
            Expr::LastModified(CmpOp::Geq, ts("2023-11-28T08:00:00Z"))
        );
    }

    #[test]
    fn and_with_parens_and_symbols() {
        let e = parse(
            "(lastModified >= \"2023-11-28\") and typeName IN (\"Address\", \"Host\") AND id < 42",
        )
        .unwrap();
        let Expr::And(left, right) = e else {
            panic!("not an AND")
        };
        assert_eq!(*right, Expr::Id(CmpOp::Lt, 42));
        let Expr::And(a, b) = *left else {
            panic!("not an AND")
        };
        assert_eq!(
            *a,
            Expr::LastModified(CmpOp::Geq, ts("2023-11-28T00:00:00Z"))
        );
        assert_eq!(
            *b,
            Expr::TypeName(StrOp::In(vec!["Address".into(), "Host".into()]))
        );
    }

    #[test]
    fn all_date_forms_and_operators() {
        for (op, want) in [
            ("GEQ", CmpOp::Geq),
            ("GT", CmpOp::Gt),
            ("LT", CmpOp::Lt),
            ("LEQ", CmpOp::Leq),
            ("EQ", CmpOp::Eq),
            ("NE", CmpOp::Ne),
            (">=", CmpOp::Geq),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Leq),
            ("=", CmpOp::Eq),
            ("!=", CmpOp::Ne),
        ] {
            let e = parse(&format!("dateAdded {op} \"2023-11-28 08:00:00\"")).unwrap();
            assert_eq!(e, Expr::DateAdded(want, ts("2023-11-28T08:00:00Z")));
        }
    }

    #[test]
    fn fractional_timestamp_is_rejected_naming_the_value() {
        let err = parse("lastModified GEQ \"2023-12-05T07:00:01.12Z\"").unwrap_err();
        assert_eq!(err, TqlError::BadDate("2023-12-05T07:00:01.12Z".into()));
        assert!(err.to_string().starts_with("Invalid TQL"));
        assert!(err.to_string().contains("2023-12-05T07:00:01.12Z"));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            "",
            "lastModified",
            "lastModified GEQ",
            "lastModified GEQ 2023-11-28",
            "lastModified LIKE \"2023-11-28\"",
            "lastModified GEQ \"2023-13-28\"",
            "lastModified GEQ \"2023-11-28T08:00:00+01:00\"",
            "rating > 3",
            "(id = 3",
            "id = 3)",
            "id = abc",
            "id = 99999999999999999999",
            "typeName IN (\"Address\"",
            "typeName > \"Address\"",
            "summary = \"unterminated",
            "id = 3 AND",
            "id = 3 id = 4",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn escapes_and_or() {
        let e = parse(r#"summary = "a\"b" OR summary ENDSWITH ".ru""#).unwrap();
        assert_eq!(
            e,
            Expr::Or(
                Box::new(Expr::Summary(StrOp::Eq("a\"b".into()))),
                Box::new(Expr::Summary(StrOp::EndsWith(".ru".into())))
            )
        );
    }

    #[test]
    fn ids_above_2_pow_53_are_exact() {
        assert_eq!(
            parse("id >= 9007199254740993").unwrap(),
            Expr::Id(CmpOp::Geq, 9_007_199_254_740_993)
        );
    }
}
