//! Just enough of Erlang's term syntax for `.rel` and `.app` files: atoms, strings, numbers,
//! tuples and lists. Hand-written because no maintained Rust crate parses Erlang's text terms.

#[derive(Debug, PartialEq)]
pub enum Term {
    Atom(String),
    Str(String),
    Num(String),
    Tuple(Vec<Term>),
    List(Vec<Term>),
}

impl Term {
    pub(crate) fn atom(&self) -> Option<&str> {
        if let Term::Atom(a) = self {
            Some(a)
        } else {
            None
        }
    }
    pub(crate) fn string(&self) -> Option<&str> {
        if let Term::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }
}

/// Parse the first term of `text`, which must end with a `.`.
pub(crate) fn parse(text: &str) -> Result<Term, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let t = p.term()?;
    p.skip_ws();
    if p.peek() != Some(b'.') {
        return Err("expected '.' after the term".into());
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'%' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.i += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        self.skip_ws();
        self.depth += 1;
        if self.depth > 64 {
            return Err("terms nested too deeply".into());
        }
        let t =
            match self.peek() {
                Some(b'{') => Term::Tuple(self.seq(b'}')?),
                Some(b'[') => Term::List(self.seq(b']')?),
                Some(b'"') => Term::Str(self.quoted(b'"')?),
                Some(b'\'') => Term::Atom(self.quoted(b'\'')?),
                Some(c) if c.is_ascii_lowercase() => Term::Atom(
                    self.take_while(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'@'),
                ),
                Some(c) if c.is_ascii_digit() || c == b'-' => Term::Num(self.take_while(|c| {
                    c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'#'
                })),
                Some(c) => {
                    return Err(format!(
                        "unexpected character {:?} at byte {}",
                        c as char, self.i
                    ));
                }
                None => return Err("unexpected end of input".into()),
            };
        self.depth -= 1;
        Ok(t)
    }

    fn seq(&mut self, close: u8) -> Result<Vec<Term>, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(items);
        }
        loop {
            items.push(self.term()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(items);
                }
                _ => {
                    return Err(format!(
                        "expected ',' or '{}' at byte {}",
                        close as char, self.i
                    ));
                }
            }
        }
    }

    fn quoted(&mut self, q: u8) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(c) if c == q => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string());
                }
                Some(b'\\') => {
                    self.i += 1;
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.i += 1;
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
}
