//! What the router needs from a Telegram update: the text to forward and the chat to answer.

use common::telegram::Target;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub chat_id: i64,
    pub text: String,
    /// The forum topic (`message_thread_id` of a topic message): the reply goes there too.
    pub thread_id: Option<i64>,
    /// The user's message to quote: set in groups only, where several people talk to the bot.
    pub reply_to: Option<i64>,
}

impl Incoming {
    /// Where the answer to this message goes.
    pub fn target(&self) -> Target {
        Target {
            chat_id: self.chat_id,
            thread_id: self.thread_id,
            reply_to: self.reply_to,
        }
    }

    /// The chat and topic, without quoting (status messages that answer no one message).
    pub fn place(&self) -> Target {
        Target {
            reply_to: None,
            ..self.target()
        }
    }
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

/// What is answered, per Telegram's conventions for a conversational bot (and `ALLOWED_UPDATES`):
/// a `message`'s text or caption, and a `callback_query`'s data (answered in the chat of the
/// message carrying the button). `None`, so acknowledged and skipped: edited messages (the agent
/// already answered the original; answering again would duplicate), channel posts, stickers, voice
/// or media without caption, service messages (joins, pins), messages from other bots, malformed
/// payloads.
pub fn parse(payload: &[u8]) -> Option<Incoming> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    if let Some(msg) = v.get("message") {
        if msg.pointer("/from/is_bot").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let text = msg
            .get("text")
            .or_else(|| msg.get("caption"))
            .and_then(Value::as_str)?;
        return incoming(msg, text, true);
    }
    let cb = v.get("callback_query")?;
    let text = cb.get("data").and_then(Value::as_str)?;
    // The button's message is the bot's own: quoting it would be noise.
    incoming(cb.get("message")?, text, false)
}

/// `callback_query.id` of a callback update: every one is answered, whatever its data.
pub fn callback_query_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.pointer("/callback_query/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn incoming(msg: &Value, text: &str, quote: bool) -> Option<Incoming> {
    let chat = msg.get("chat")?;
    let chat_id = chat.get("id")?.as_i64()?;
    if text.trim().is_empty() {
        return None;
    }
    // Only a topic message belongs to a topic; outside forums the field names reply threads.
    let thread_id = (msg.get("is_topic_message").and_then(Value::as_bool) == Some(true))
        .then(|| msg.get("message_thread_id").and_then(Value::as_i64))
        .flatten();
    let group = matches!(
        chat.get("type").and_then(Value::as_str),
        Some("group" | "supergroup")
    );
    let reply_to = (quote && group)
        .then(|| msg.get("message_id").and_then(Value::as_i64))
        .flatten();
    Some(Incoming {
        chat_id,
        text: text.to_owned(),
        thread_id,
        reply_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Option<Incoming> {
        parse(v.to_string().as_bytes())
    }

    fn plain(chat_id: i64, text: &str) -> Option<Incoming> {
        Some(Incoming {
            chat_id,
            text: text.into(),
            thread_id: None,
            reply_to: None,
        })
    }

    #[test]
    fn message_text_and_caption() {
        assert_eq!(
            p(json!({"update_id": 1, "message": {"chat": {"id": 42}, "text": "hi"}})),
            plain(42, "hi")
        );
        assert_eq!(
            p(json!({"update_id": 1, "message": {"chat": {"id": -7}, "caption": "photo"}})),
            plain(-7, "photo")
        );
    }

    #[test]
    fn forum_topics_and_groups() {
        assert_eq!(
            p(
                json!({"update_id": 1, "message": {"message_id": 9, "message_thread_id": 5,
                "is_topic_message": true, "chat": {"id": -100, "type": "supergroup", "is_forum": true},
                "text": "in a topic"}})
            ),
            Some(Incoming {
                chat_id: -100,
                text: "in a topic".into(),
                thread_id: Some(5),
                reply_to: Some(9)
            })
        );
        // A reply thread outside a forum is no topic; a private chat quotes nothing.
        assert_eq!(
            p(
                json!({"update_id": 1, "message": {"message_id": 9, "message_thread_id": 3,
                "chat": {"id": 8, "type": "private"}, "text": "hi"}})
            ),
            plain(8, "hi")
        );
    }

    #[test]
    fn callback_query_data_answers_the_message_chat() {
        let cb = json!({"update_id": 2, "callback_query": {"id": "cbq-1", "data": "yes",
            "from": {"id": 1}, "message": {"message_id": 4, "chat": {"id": 77, "type": "group"}}}});
        assert_eq!(p(cb.clone()), plain(77, "yes"));
        assert_eq!(
            callback_query_id(cb.to_string().as_bytes()).as_deref(),
            Some("cbq-1")
        );
        let no_data = json!({"update_id": 2, "callback_query": {"id": "cbq-2", "from": {"id": 1}}});
        assert_eq!(p(no_data.clone()), None);
        assert_eq!(
            callback_query_id(no_data.to_string().as_bytes()).as_deref(),
            Some("cbq-2")
        );
    }

    #[test]
    fn nothing_to_answer() {
        for v in [
            json!({"update_id": 3, "message": {"chat": {"id": 1}, "sticker": {}}}),
            json!({"update_id": 3, "message": {"chat": {"id": 1}, "voice": {}}}),
            json!({"update_id": 3, "message": {"chat": {"id": 1}, "new_chat_members": []}}),
            json!({"update_id": 3, "message": {"chat": {"id": 1}, "text": "  "}}),
            json!({"update_id": 3, "message": {"text": "no chat"}}),
            json!({"update_id": 3, "message": {"chat": {"id": 1}, "from": {"is_bot": true}, "text": "bot"}}),
            json!({"update_id": 3, "edited_message": {"chat": {"id": 5}, "text": "fixed"}}),
            json!({"update_id": 3, "channel_post": {"chat": {"id": 9}, "text": "news"}}),
            json!({"update_id": 3, "my_chat_member": {}}),
        ] {
            assert_eq!(p(v.clone()), None, "{v}");
        }
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
