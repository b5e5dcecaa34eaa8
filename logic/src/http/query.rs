//! The query string as goim's gin binding reads it.

/// The query string as goim's gin binding reads it: repeated names make lists.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<String>) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query(pairs))
    }

    pub(crate) fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// An integer parameter; absent or empty is 0 unless `required` (then 0 is refused too,
    /// as gin's `binding:"required"` does).
    pub(crate) fn int<T: std::str::FromStr + Default + PartialEq>(
        &self,
        name: &str,
        required: bool,
    ) -> Result<T, String> {
        let v = match self.first(name) {
            Some(v) if !v.is_empty() => v
                .parse()
                .map_err(|_| format!("{name} must be an integer, not {v:?}"))?,
            _ => T::default(),
        };
        if required && v == T::default() {
            return Err(format!("{name} is required"));
        }
        Ok(v)
    }

    pub(crate) fn text(&self, name: &str) -> Result<&str, String> {
        match self.first(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{name} is required")),
        }
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query is not UTF-8: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_names_and_decodes() {
        let q = Query::parse(Some("keys=a%20b&keys=c+d&operation=1000&x".into())).unwrap();
        assert_eq!(q.all("keys"), vec!["a b", "c d"]);
        assert_eq!(q.int::<i32>("operation", true), Ok(1000));
        assert_eq!(q.int::<i32>("missing", false), Ok(0));
        assert!(q.int::<i32>("missing", true).is_err());
        assert!(Query::parse(Some("a=%zz".into())).is_err());
        let bad = Query::parse(Some("operation=12x".into())).unwrap();
        assert!(bad.int::<i32>("operation", false).is_err());
    }
}
