//! A parser of server-sent events (`text/event-stream`), as the HTML
//! standard defines them: lines of `field: value`, events ended by a blank
//! line, `:` comments (keep-alives) ignored. Lines end in LF or CRLF (a lone
//! CR is not treated as a line end).

use std::mem;

/// The largest event accepted (a whole topology can be tens of MiB).
pub(crate) const MAX_EVENT_BYTES: usize = 256 << 20;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The last event id the stream set (ids persist across events).
    pub(crate) id: Option<String>,
    /// The event type, if the event named one.
    pub(crate) event: Option<String>,
    /// The data lines, joined with LF.
    pub(crate) data: String,
}

/// An event grew past [`MAX_EVENT_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {limit} bytes")]
pub(crate) struct TooLarge {
    limit: usize,
}

/// Turns chunks of bytes, cut anywhere, into events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes not yet ended by a line feed.
    pending: Vec<u8>,
    /// Whether the stream's first bytes (a possible BOM) were seen.
    started: bool,
    fields: Fields,
}

#[derive(Debug, Default)]
struct Fields {
    data: String,
    event: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds the next chunk; returns the events it completed.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, TooLarge> {
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix("\u{feff}".as_bytes()).unwrap_or(chunk);
        }
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = (&rest[..end], &rest[end + 1..]);
            if self.pending.is_empty() {
                self.fields.line(strip_cr(line), &mut events);
            } else {
                self.pending.extend_from_slice(line);
                let pending = mem::take(&mut self.pending);
                self.fields.line(strip_cr(&pending), &mut events);
            }
            rest = after;
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() + self.fields.data.len() > MAX_EVENT_BYTES {
            return Err(TooLarge { limit: MAX_EVENT_BYTES });
        }
        Ok(events)
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Fields {
    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"event" => self.event = Some(text()),
            b"id" if !value.contains(&0) => self.last_id = Some(text()),
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = mem::take(&mut self.data);
        data.pop(); // the LF after the last data line
        events.push(SseEvent { id: self.last_id.clone(), event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { id: id.map(str::to_owned), event: event.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let mut parser = SseParser::default();
        let text = "\u{feff}: keep-alive\nid: 7\nevent: topology\ndata: {\"a\":\ndata:1}\n\ndata\n\n";
        let events = parser.feed(text.as_bytes()).unwrap();
        assert_eq!(events, vec![event(Some("7"), Some("topology"), "{\"a\":\n1}"), event(Some("7"), None, "")]);
    }

    #[test]
    fn events_cut_anywhere_come_out_whole() {
        let text = "id: 1\r\ndata: first\r\n\r\n: ping\nid: 2\ndata: second\n\nid: 3\n\n";
        let whole = SseParser::default().feed(text.as_bytes()).unwrap();
        assert_eq!(whole, vec![event(Some("1"), None, "first"), event(Some("2"), None, "second")]);
        for size in 1..8 {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                events.extend(parser.feed(chunk).unwrap());
            }
            assert_eq!(events, whole, "chunks of {size} bytes");
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_but_its_id_persists() {
        let mut parser = SseParser::default();
        let events = parser.feed(b"id: 5\nevent: x\n\ndata: d\n\n").unwrap();
        assert_eq!(events, vec![event(Some("5"), None, "d")]);
    }
}
