//! Label selectors (`labelSelector=`): parsed and matched.

use serde_json::Value;

use super::validate::is_label_key;

#[derive(Debug, Clone)]
pub(super) enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

pub(super) fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let mut reqs = Vec::new();
    for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{p:?}: expected (values)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let req = if let Some((key, v)) = p.split_once("!=") {
            Req::NotEq(key.trim().into(), v.trim().into())
        } else if let Some((key, v)) = p.split_once("==") {
            Req::Eq(key.trim().into(), v.trim().into())
        } else if let Some((key, v)) = p.split_once('=') {
            Req::Eq(key.trim().into(), v.trim().into())
        } else if let Some((key, rest)) = p.split_once(" notin ") {
            Req::NotIn(key.trim().into(), set(rest)?)
        } else if let Some((key, rest)) = p.split_once(" in ") {
            Req::In(key.trim().into(), set(rest)?)
        } else if let Some(key) = p.strip_prefix('!') {
            Req::NotExists(key.trim().into())
        } else {
            Req::Exists(p.into())
        };
        let key = match &req {
            Req::Eq(k, _)
            | Req::NotEq(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::NotExists(k) => k,
        };
        if !is_label_key(key) {
            return Err(format!("invalid label key {key:?}"));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

pub(super) fn matches(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::NotEq(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}
