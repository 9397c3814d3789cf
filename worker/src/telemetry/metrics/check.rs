//! A checker of the Prometheus text exposition format, for tests of
//! `/metrics` output.

use std::collections::{HashMap, HashSet};

/// A line-by-line checker of the text exposition format 0.0.4: comment
/// syntax, one HELP/TYPE per family before its samples, sample names that
/// belong to their family's type, label syntax and escapes, float values,
/// families not interleaved, and histogram bucket consistency.
pub(crate) fn check_exposition(text: &str) -> Result<(), String> {
    #[derive(Default)]
    struct Hist {
        last_bucket: Option<f64>,
        inf: Option<f64>,
        count: Option<f64>,
        saw_inf: bool,
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut hists: HashMap<String, Hist> = HashMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("output does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| Err(format!("line {}: {m}: {line:?}", n + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // plain comment
            }
            let Some(name) = parts.next() else {
                return err("HELP/TYPE without a name");
            };
            if !valid_metric_name(name) {
                return err("bad metric name");
            }
            let text = parts.next().unwrap_or("");
            if current.as_deref() != Some(name) {
                if let Some(prev) = current.take() {
                    finished.insert(prev);
                }
                if finished.contains(name) {
                    return err("family interleaved with another");
                }
                current = Some(name.to_owned());
            }
            if keyword == "HELP" {
                if !helps.insert(name.to_owned()) {
                    return err("second HELP");
                }
                if !valid_help_escapes(text) {
                    return err("bad escape in HELP");
                }
            } else {
                if types.contains_key(name) {
                    return err("second TYPE");
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&text) {
                    return err("unknown TYPE");
                }
                types.insert(name.to_owned(), text.to_owned());
            }
            continue;
        }
        let (name, labels, rest) = match parse_sample(line) {
            Ok(parsed) => parsed,
            Err(m) => return err(&m),
        };
        let mut fields = rest.split_whitespace();
        let Some(value) = fields.next() else {
            return err("no value");
        };
        let Some(value) = parse_value(value) else {
            return err("bad value");
        };
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return err("bad timestamp");
        }
        if fields.next().is_some() {
            return err("trailing text");
        }
        // Which family does this sample belong to?
        let family = current.clone().unwrap_or_else(|| name.clone());
        let kind = types.get(&family).map(String::as_str).unwrap_or("untyped");
        let ok_name = match kind {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name),
            "summary" => {
                name == family || name == format!("{family}_sum") || name == format!("{family}_count")
            }
            _ => name == family,
        };
        if !ok_name {
            return err("sample name does not belong to its family");
        }
        if finished.contains(&family) {
            return err("family interleaved with another");
        }
        if kind == "counter" && !(value >= 0.0 || value.is_nan()) {
            return err("negative counter");
        }
        if kind == "histogram" {
            let key: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            let hist = hists.entry(format!("{family}{key:?}")).or_default();
            if name.ends_with("_bucket") {
                let Some((_, le)) = labels.iter().find(|(k, _)| k == "le") else {
                    return err("bucket without le");
                };
                let Some(bound) = parse_value(le) else {
                    return err("bad le");
                };
                if hist.last_bucket.is_some_and(|last| value < last) {
                    return err("buckets not cumulative");
                }
                hist.last_bucket = Some(value);
                if bound == f64::INFINITY {
                    hist.saw_inf = true;
                    hist.inf = Some(value);
                }
            } else if name.ends_with("_count") {
                hist.count = Some(value);
            }
        }
    }
    for (key, hist) in &hists {
        if !hist.saw_inf {
            return Err(format!("histogram {key} has no +Inf bucket"));
        }
        if hist.count.is_some() && hist.count != hist.inf {
            return Err(format!("histogram {key}: _count differs from +Inf bucket"));
        }
    }
    Ok(())
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_help_escapes(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
            return false;
        }
    }
    true
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

type Parsed = (String, Vec<(String, String)>, String);

/// `name{labels} rest` → (name, labels unescaped, rest).
fn parse_sample(line: &str) -> Result<Parsed, String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            s = s.trim_start();
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = s.find('=').ok_or("label without =")?;
            let key = s[..eq].trim();
            if !valid_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("duplicate label {key:?}"));
            }
            s = s[eq + 1..]
                .trim_start()
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    Some((_, '\n')) => return Err("raw newline in label value".into()),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            s = &s[close + 1..];
            s = s.trim_start();
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err("expected , or } after label".into());
            }
        }
    }
    if !rest.starts_with(' ') {
        return Err("no space before value".into());
    }
    Ok((name.to_owned(), labels, rest.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_rejects_bad_text() {
        let bad = [
            "# TYPE a counter\n# TYPE a counter\n",
            "# TYPE a_total counter\na_total{x=\"1} 1\n",
            "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n",
            "# TYPE a_total counter\na_total abc\n",
            "# TYPE a gauge\nb 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",
        ];
        for text in bad {
            assert!(check_exposition(text).is_err(), "accepted {text:?}");
        }
        let good = "# HELP a A \\\\ help.\n# TYPE a gauge\na{x=\"q\\\"\\n\\\\\"} 1.5\n";
        assert_eq!(check_exposition(good), Ok(()));
    }
}
