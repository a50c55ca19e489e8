//! What the router needs from a Telegram update: the text to forward and the chat to answer.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub chat_id: i64,
    pub text: String,
}

/// The `update_id` of a raw update, or `None` when the body is not a JSON object carrying an integer one.
pub fn update_id(body: &[u8]) -> Option<i64> {
    /// Only the field the webhook needs: the rest is skipped, not built into a tree.
    #[derive(serde::Deserialize)]
    struct Head {
        update_id: i64,
    }
    // A derived struct also accepts a JSON array (`[12]`); an update is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Head>(body)
        .ok()
        .map(|h| h.update_id)
}

/// Text (or caption) of a message, edited message or channel post, or a callback query's data.
/// `None` for updates there is nothing to answer (stickers, joins, malformed payloads).
pub fn parse(payload: &[u8]) -> Option<Incoming> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    for key in [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
    ] {
        if let Some(msg) = v.get(key) {
            let text = msg
                .get("text")
                .or_else(|| msg.get("caption"))
                .and_then(Value::as_str)?;
            let chat_id = msg.get("chat")?.get("id")?.as_i64()?;
            return non_empty(chat_id, text);
        }
    }
    let cb = v.get("callback_query")?;
    let text = cb.get("data").and_then(Value::as_str)?;
    let chat_id = cb.get("message")?.get("chat")?.get("id")?.as_i64()?;
    non_empty(chat_id, text)
}

fn non_empty(chat_id: i64, text: &str) -> Option<Incoming> {
    (!text.trim().is_empty()).then(|| Incoming {
        chat_id,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Option<Incoming> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn message_text_and_caption() {
        assert_eq!(
            p(json!({"update_id": 1, "message": {"chat": {"id": 42}, "text": "hi"}})),
            Some(Incoming {
                chat_id: 42,
                text: "hi".into()
            })
        );
        assert_eq!(
            p(json!({"update_id": 1, "message": {"chat": {"id": -7}, "caption": "photo"}})),
            Some(Incoming {
                chat_id: -7,
                text: "photo".into()
            })
        );
        assert_eq!(
            p(json!({"update_id": 1, "edited_message": {"chat": {"id": 5}, "text": "fixed"}})),
            Some(Incoming {
                chat_id: 5,
                text: "fixed".into()
            })
        );
        assert_eq!(
            p(json!({"update_id": 1, "channel_post": {"chat": {"id": 9}, "text": "news"}})),
            Some(Incoming {
                chat_id: 9,
                text: "news".into()
            })
        );
    }

    #[test]
    fn callback_query_data_answers_the_message_chat() {
        assert_eq!(
            p(
                json!({"update_id": 2, "callback_query": {"data": "yes", "from": {"id": 1},
                "message": {"chat": {"id": 77}}}})
            ),
            Some(Incoming {
                chat_id: 77,
                text: "yes".into()
            })
        );
    }

    #[test]
    fn nothing_to_answer() {
        assert_eq!(
            p(json!({"update_id": 3, "message": {"chat": {"id": 1}, "sticker": {}}})),
            None
        );
        assert_eq!(
            p(json!({"update_id": 3, "message": {"chat": {"id": 1}, "text": "  "}})),
            None
        );
        assert_eq!(
            p(json!({"update_id": 3, "message": {"text": "no chat"}})),
            None
        );
        assert_eq!(p(json!({"update_id": 3, "my_chat_member": {}})), None);
        assert_eq!(parse(b"not json"), None);
    }

    #[test]
    fn update_id_must_be_an_integer() {
        assert_eq!(update_id(br#"{"update_id": 12}"#), Some(12));
        assert_eq!(update_id(br#"{"update_id": "12"}"#), None);
        assert_eq!(update_id(br#"{"update_id": 1.5}"#), None);
        assert_eq!(update_id(br#"{"message": {}}"#), None);
        assert_eq!(update_id(b"[1]"), None);
        assert_eq!(update_id(b" [1]"), None);
        assert_eq!(
            update_id(br#" {"message": {"text": "x"}, "update_id": 7}"#),
            Some(7)
        );
        assert_eq!(update_id(br#"{"update_id": 12} trailing"#), None);
        assert_eq!(update_id(b"nope"), None);
    }
}
