//! Live requests on a Binance stream connection (`SUBSCRIBE`,
//! `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`) and
//! the replies, with Binance's documented error codes and messages.

use serde_json::Value;

/// A request's `id`, echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestId {
    /// A 64-bit signed integer.
    Int(i64),
    /// Up to 36 alphanumeric characters.
    Text(String),
    /// `null`.
    Null,
}

impl RequestId {
    fn to_json(&self) -> Value {
        match self {
            RequestId::Int(n) => Value::from(*n),
            RequestId::Text(s) => Value::from(s.clone()),
            RequestId::Null => Value::Null,
        }
    }
}

/// What a well-formed request asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    ListSubscriptions,
    /// `SET_PROPERTY ["combined", bool]`.
    SetCombined(bool),
    /// `GET_PROPERTY ["combined"]`.
    GetCombined,
}

/// A request, or the error reply it gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: Method,
}

/// A refused request: Binance's code and message, and the id when it could
/// be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code})")]
pub struct RequestError {
    /// 0 unknown property, 1 bad value type, 2 invalid request, 3 invalid JSON.
    pub code: u8,
    /// The message, worded as Binance documents it.
    pub msg: String,
    /// The request's id, if it had a valid one.
    pub id: RequestId,
}

fn invalid(msg: impl Into<String>, id: &RequestId) -> RequestError {
    RequestError {
        code: 2,
        msg: format!("Invalid request: {}", msg.into()),
        id: id.clone(),
    }
}

const METHODS: &str = "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`";

/// Parses one text message.
pub fn parse(text: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError {
        code: 3,
        msg: format!("Invalid JSON: {e}"),
        id: RequestId::Null,
    })?;
    let Value::Object(obj) = value else {
        return Err(invalid(
            "expected a JSON object with `method`, `params` and `id`",
            &RequestId::Null,
        ));
    };
    let id = match obj.get("id") {
        Some(Value::Null) => RequestId::Null,
        Some(Value::Number(n)) if n.as_i64().is_some() => RequestId::Int(n.as_i64().unwrap_or(0)),
        Some(Value::String(s))
            if s.len() <= 36 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            RequestId::Text(s.clone())
        }
        _ => {
            return Err(invalid(
                "request ID must be an unsigned integer",
                &RequestId::Null,
            ));
        }
    };
    let method = match obj.get("method") {
        None => return Err(invalid("missing field `method`", &id)),
        Some(Value::String(m)) => m.as_str(),
        Some(other) => {
            return Err(invalid(format!("invalid type: {other}, {METHODS}"), &id));
        }
    };
    let params: &[Value] = match obj.get("params") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("params must be an array", &id)),
    };
    let method = match method {
        "SUBSCRIBE" | "UNSUBSCRIBE" => {
            let mut names = Vec::with_capacity(params.len());
            for p in params {
                match p {
                    Value::String(s) => names.push(s.clone()),
                    _ => return Err(invalid("stream name must be a string", &id)),
                }
            }
            if method == "SUBSCRIBE" {
                Method::Subscribe(names)
            } else {
                Method::Unsubscribe(names)
            }
        }
        "LIST_SUBSCRIPTIONS" if params.is_empty() => Method::ListSubscriptions,
        "LIST_SUBSCRIPTIONS" => return Err(invalid("too many parameters", &id)),
        "SET_PROPERTY" | "GET_PROPERTY" => property(method == "SET_PROPERTY", params, &id)?,
        other => {
            return Err(invalid(
                format!("unknown variant `{other}`, {METHODS}"),
                &id,
            ));
        }
    };
    Ok(Request { id, method })
}

/// `SET_PROPERTY`/`GET_PROPERTY`'s parameters: only `combined` exists.
fn property(set: bool, params: &[Value], id: &RequestId) -> Result<Method, RequestError> {
    let want = if set { 2 } else { 1 };
    if params.len() > want {
        return Err(invalid("too many parameters", id));
    }
    let Some(Value::String(name)) = params.first() else {
        return Err(invalid("property name must be a string", id));
    };
    if name != "combined" {
        return Err(RequestError {
            code: 0,
            msg: "Unknown property".into(),
            id: id.clone(),
        });
    }
    if !set {
        return Ok(Method::GetCombined);
    }
    match params.get(1) {
        Some(Value::Bool(b)) => Ok(Method::SetCombined(*b)),
        _ => Err(RequestError {
            code: 1,
            msg: "Invalid value type: expected Boolean".into(),
            id: id.clone(),
        }),
    }
}

/// `{"result":<result>,"id":<id>}`.
pub fn result_reply(result: Value, id: &RequestId) -> String {
    serde_json::json!({ "result": result, "id": id.to_json() }).to_string()
}

/// `{"error":{"code":…,"msg":…},"id":…}`.
pub fn error_reply(e: &RequestError) -> String {
    serde_json::json!({ "error": { "code": e.code, "msg": e.msg }, "id": e.id.to_json() })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (u8, String) {
        let e = parse(text).unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn requests_parse_with_every_id_kind() {
        let r = parse(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#).unwrap();
        assert_eq!(r.method, Method::Subscribe(vec!["btcusdt@trade".into()]));
        assert_eq!(r.id, RequestId::Int(1));
        let r = parse(r#"{"method":"LIST_SUBSCRIPTIONS","id":"abc-1"}"#).unwrap();
        assert_eq!(r.id, RequestId::Text("abc-1".into()));
        let r = parse(r#"{"method":"GET_PROPERTY","params":["combined"],"id":null}"#).unwrap();
        assert_eq!((r.method, r.id), (Method::GetCombined, RequestId::Null));
        let r = parse(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#).unwrap();
        assert_eq!(r.method, Method::SetCombined(true));
    }

    #[test]
    fn errors_are_binance_s() {
        assert_eq!(err("{").0, 3);
        assert!(err("{").1.starts_with("Invalid JSON: "));
        assert_eq!(err("[1,2]").0, 2);
        assert_eq!(
            err(r#"{"method":"SUBSCRIBE","params":[]}"#).1,
            "Invalid request: request ID must be an unsigned integer"
        );
        assert_eq!(
            err(&format!(
                r#"{{"method":"SUBSCRIBE","id":"{}"}}"#,
                "x".repeat(37)
            ))
            .1,
            "Invalid request: request ID must be an unsigned integer"
        );
        assert!(
            err(r#"{"method":"SUBSCRIB","id":1}"#)
                .1
                .starts_with("Invalid request: unknown variant `SUBSCRIB`, expected one of")
        );
        assert_eq!(
            err(r#"{"params":[],"id":1}"#).1,
            "Invalid request: missing field `method`"
        );
        assert_eq!(
            err(r#"{"method":"SET_PROPERTY","params":["x",true],"id":1}"#),
            (0, "Unknown property".into())
        );
        assert_eq!(
            err(r#"{"method":"SET_PROPERTY","params":["combined",1],"id":1}"#),
            (1, "Invalid value type: expected Boolean".into())
        );
        assert_eq!(
            err(r#"{"method":"GET_PROPERTY","params":[1],"id":1}"#).1,
            "Invalid request: property name must be a string"
        );
        assert_eq!(
            err(r#"{"method":"LIST_SUBSCRIPTIONS","params":["a"],"id":1}"#).1,
            "Invalid request: too many parameters"
        );
        let e = parse(r#"{"method":"X","id":9}"#).unwrap_err();
        assert_eq!(
            error_reply(&e),
            format!(r#"{{"error":{{"code":2,"msg":"{}"}},"id":9}}"#, e.msg)
        );
    }
}
