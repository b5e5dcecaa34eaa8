//! One XMPP client stream (RFC 6120) as the ejabberd scenarios drive it: plain TCP, in-band
//! registration (XEP-0077), SASL PLAIN (RFC 4616), resource binding, stream management
//! (XEP-0198: the server's `<a h>` is the bench's acknowledgement of a sent stanza, and the
//! client answers the server's `<r/>` so ejabberd never drops it for an unacknowledged queue).
//!
//! XML is read with quick-xml: each top-level element of the stream (a stanza, or an SM or SASL
//! element) is parsed into a small [`El`] tree once it has arrived whole. What the bench writes
//! holds no characters XML would need escaped (user names, ids and bodies are ASCII letters,
//! digits and `|`), so it is written as text.

use quick_xml::Reader;
use quick_xml::events::Event;
use std::net::SocketAddr;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The XML namespaces of the stream's pieces (RFC 6120 §4.8, XEP-0198, XEP-0077).
pub const NS_SM: &str = "urn:xmpp:sm:3";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_REGISTER: &str = "jabber:iq:register";

/// The most a stanza may take before the stream is treated as broken (ejabberd's
/// `max_stanza_size` in the bench's config is 256 KiB).
const MAX_PENDING: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum XmppError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("closed by the server")]
    Closed,
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error("{step}: unexpected <{got}> {detail}")]
    Unexpected {
        step: &'static str,
        got: String,
        detail: String,
    },
}

/// One element: its local name, attributes (local names), text and children.
#[derive(Debug, Default, Clone)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<El>,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    /// A stanza in RFC 6120's sense (counted by stream management).
    pub fn is_stanza(&self) -> bool {
        matches!(self.name.as_str(), "message" | "presence" | "iq")
    }

    fn unexpected(&self, step: &'static str) -> XmppError {
        XmppError::Unexpected {
            step,
            got: self.name.clone(),
            detail: format!("{:?}", self.attrs),
        }
    }
}

/// What [`parse_one`] found at the start of a buffer.
enum Parsed {
    /// Not whole yet: read more.
    Partial,
    /// `n` bytes held nothing to keep (the XML declaration, whitespace between stanzas).
    Skip(usize),
    /// The stream's opening tag (never closed until the stream ends).
    Open(usize),
    /// `</stream:stream>`.
    End,
    /// One whole top-level element, `n` bytes long.
    Element(El, usize),
}

/// Parses what starts `buf`: one top-level element of the stream, if it is all there.
fn parse_one(buf: &[u8]) -> Result<Parsed, XmppError> {
    // The stream's close tag has no open tag in this reader, which quick-xml refuses.
    let rest = buf.trim_ascii_start();
    if rest.starts_with(b"</") {
        return Ok(match rest.iter().position(|&b| b == b'>') {
            Some(_) if rest.starts_with(b"</stream:stream") => Parsed::End,
            Some(_) => return Err(XmppError::Malformed("a close tag at the top".into())),
            None => Parsed::Partial,
        });
    }
    let mut r = Reader::from_reader(buf);
    r.config_mut().trim_text(false);
    let mut stack: Vec<El> = Vec::new();
    loop {
        let ev = match r.read_event() {
            Ok(ev) => ev,
            // A tag cut by the end of what has arrived reads as an error: wait for more.
            Err(_) if buf.len() < MAX_PENDING => return Ok(Parsed::Partial),
            Err(e) => return Err(XmppError::Malformed(e.to_string())),
        };
        let at = r.buffer_position() as usize;
        match ev {
            Event::Eof => return Ok(Parsed::Partial),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_)
                if stack.is_empty() =>
            {
                return Ok(Parsed::Skip(at));
            }
            Event::Text(_) if stack.is_empty() => return Ok(Parsed::Skip(at)),
            Event::Start(s) if stack.is_empty() && s.name().as_ref() == "stream:stream" => {
                return Ok(Parsed::Open(at));
            }
            Event::Start(s) => stack.push(element(&s)?),
            Event::Empty(s) => {
                let el = element(&s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(Parsed::Element(el, at)),
                }
            }
            Event::End(_) => {
                let el = stack.pop().expect("not empty: checked above");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(Parsed::Element(el, at)),
                }
            }
            Event::Text(t) => {
                let top = stack.last_mut().expect("not empty: checked above");
                top.text.push_str(&t.xml10_content());
            }
            Event::CData(t) => {
                let top = stack.last_mut().expect("not empty: checked above");
                top.text.push_str(&t);
            }
            Event::GeneralRef(g) => {
                let top = stack.last_mut().expect("not empty: checked above");
                if let Ok(Some(c)) = g.resolve_char_ref() {
                    top.text.push(c);
                } else {
                    let c = match &*g {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        other => {
                            return Err(XmppError::Malformed(format!("entity &{other};")));
                        }
                    };
                    top.text.push_str(c);
                }
            }
            _ => {}
        }
    }
}

fn element(s: &quick_xml::events::BytesStart<'_>) -> Result<El, XmppError> {
    let mut el = El {
        name: s.local_name().as_ref().to_string(),
        ..Default::default()
    };
    for a in s.attributes() {
        let a = a.map_err(|e| XmppError::Malformed(e.to_string()))?;
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmppError::Malformed(e.to_string()))?;
        let k = a.key.local_name().as_ref().to_string();
        el.attrs.push((k, v.into_owned()));
    }
    Ok(el)
}

/// A connected, authenticated, bound stream with stream management enabled.
pub struct Xmpp {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    at: usize,
    /// The full JID the server bound.
    pub jid: String,
    /// Stanzas sent since stream management was enabled (what the server's `h` counts).
    pub sent: u64,
    /// Stanzas received since stream management was enabled (the `h` the client answers).
    pub received: u64,
    /// The highest `h` the server acknowledged.
    pub acked: u64,
}

/// How a stream starts.
pub struct Login<'a> {
    pub addr: SocketAddr,
    pub domain: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    /// Register the account first (XEP-0077); an existing one (409) is fine.
    pub register: bool,
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

impl Xmpp {
    /// Connects, registers when asked, authenticates with SASL PLAIN, binds a resource and
    /// enables stream management. No presence is sent: see [`Xmpp::available`].
    pub async fn open(login: &Login<'_>) -> Result<Xmpp, XmppError> {
        let mut x = Xmpp::connect(login).await?;
        if login.register {
            x.register_account(login).await?;
        }
        use base64::Engine;
        let plain = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{}\0{}", login.user, login.password));
        x.write(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>"
        ))
        .await?;
        let r = x.next_raw().await?;
        if r.name != "success" {
            return Err(r.unexpected("auth"));
        }
        x.start_stream(login.domain).await?;
        x.write(&format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>bench</resource></bind></iq>"
        ))
        .await?;
        let r = x.next_raw().await?;
        let jid = r
            .child("bind")
            .and_then(|b| b.child("jid"))
            .map(|j| j.text.clone());
        match jid {
            Some(jid) if r.attr("type") == Some("result") => x.jid = jid,
            _ => return Err(r.unexpected("bind")),
        }
        x.write(&format!("<enable xmlns='{NS_SM}'/>")).await?;
        let r = x.next_raw().await?;
        if r.name != "enabled" {
            return Err(r.unexpected("enable stream management"));
        }
        Ok(x)
    }

    /// Registers the account (XEP-0077) on a stream of its own and closes it: no session.
    pub async fn register(login: &Login<'_>) -> Result<(), XmppError> {
        let mut x = Xmpp::connect(login).await?;
        x.register_account(login).await?;
        x.close().await
    }

    /// Connects and opens the stream (header and features read).
    async fn connect(login: &Login<'_>) -> Result<Xmpp, XmppError> {
        let sock = TcpStream::connect(login.addr).await?;
        sock.set_nodelay(true)?;
        let mut x = Xmpp {
            sock,
            buf: Vec::new(),
            at: 0,
            jid: String::new(),
            sent: 0,
            received: 0,
            acked: 0,
        };
        x.start_stream(login.domain).await?;
        Ok(x)
    }

    async fn register_account(&mut self, login: &Login<'_>) -> Result<(), XmppError> {
        self.write(&format!(
            "<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'><username>{}</username><password>{}</password></query></iq>",
            login.user, login.password
        ))
        .await?;
        let r = self.next_raw().await?;
        let conflict = r
            .child("error")
            .is_some_and(|e| e.attr("code") == Some("409") || e.child("conflict").is_some());
        if r.name == "iq" && (r.attr("type") == Some("result") || conflict) {
            Ok(())
        } else {
            Err(r.unexpected("register"))
        }
    }

    /// Ends the stream (`</stream:stream>`) and waits for the server's end: the session ends
    /// at once (an abrupt close would leave it waiting for a stream resumption, XEP-0198).
    pub async fn close(mut self) -> Result<(), XmppError> {
        self.write("</stream:stream>").await?;
        loop {
            match self.next_raw().await {
                Ok(_) => {}
                Err(XmppError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the stream (again, after SASL) and reads the server's header and features.
    async fn start_stream(&mut self, domain: &str) -> Result<(), XmppError> {
        self.write(&header(domain)).await?;
        let mut opened = false;
        loop {
            match self.parse_next()? {
                Some(Parsed::Open(_)) => opened = true,
                Some(Parsed::Element(el, _)) if opened && el.name == "features" => return Ok(()),
                Some(Parsed::Element(el, _)) => return Err(el.unexpected("stream start")),
                Some(Parsed::End) => return Err(XmppError::Closed),
                Some(_) => {}
                None => self.fill().await?,
            }
        }
    }

    /// Sends initial presence: the account is available, and ejabberd hands over what it
    /// stored while the user was offline (`mod_offline`). Counted as a stanza.
    pub async fn available(&mut self) -> Result<(), XmppError> {
        self.send_stanza("<presence/>").await
    }

    /// Writes one stanza (counted for stream management).
    pub async fn send_stanza(&mut self, xml: &str) -> Result<(), XmppError> {
        self.sent += 1;
        self.write(xml).await
    }

    /// Asks the server to acknowledge what it has handled (`<r/>`).
    pub async fn request_ack(&mut self) -> Result<(), XmppError> {
        self.write(&format!("<r xmlns='{NS_SM}'/>")).await
    }

    /// Writes `xml` as it is.
    pub async fn write(&mut self, xml: &str) -> Result<(), XmppError> {
        self.sock.write_all(xml.as_bytes()).await?;
        Ok(())
    }

    /// The next top-level element. The server's `<r/>` is answered here and `<a h>` recorded
    /// in [`Xmpp::acked`]; both are returned too.
    pub async fn next(&mut self) -> Result<El, XmppError> {
        let el = self.next_raw().await?;
        if el.is_stanza() {
            self.received += 1;
        } else if el.name == "r" {
            let h = self.received;
            self.write(&format!("<a xmlns='{NS_SM}' h='{h}'/>")).await?;
        } else if el.name == "a" {
            let h = el.attr("h").and_then(|h| h.parse().ok()).unwrap_or(0);
            self.acked = self.acked.max(h);
        }
        Ok(el)
    }

    /// Reads until the server has acknowledged every stanza sent, handing each other element
    /// to `other`.
    pub async fn until_acked(&mut self, mut other: impl FnMut(&El)) -> Result<(), XmppError> {
        while self.acked < self.sent {
            let el = self.next().await?;
            if el.name != "a" {
                other(&el);
            }
        }
        Ok(())
    }

    async fn next_raw(&mut self) -> Result<El, XmppError> {
        loop {
            match self.parse_next()? {
                Some(Parsed::Element(el, _)) => {
                    if el.name == "error" && el.attrs.is_empty() {
                        return Err(XmppError::Malformed(format!("stream error {el:?}")));
                    }
                    return Ok(el);
                }
                Some(Parsed::End) => return Err(XmppError::Closed),
                Some(_) => {}
                None => self.fill().await?,
            }
        }
    }

    /// The next thing in the buffer, consumed; `None` when more must be read.
    fn parse_next(&mut self) -> Result<Option<Parsed>, XmppError> {
        if self.at == self.buf.len() {
            return Ok(None);
        }
        let p = parse_one(&self.buf[self.at..])?;
        match &p {
            Parsed::Partial => return Ok(None),
            Parsed::Skip(n) | Parsed::Open(n) | Parsed::Element(_, n) => self.at += n,
            Parsed::End => self.at = self.buf.len(),
        }
        Ok(Some(p))
    }

    async fn fill(&mut self) -> Result<(), XmppError> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        if self.buf.len() >= MAX_PENDING {
            return Err(XmppError::Malformed("a stanza over 1 MiB".into()));
        }
        // Read into a local buffer, then append: dropped while waiting (a `select!` in the
        // group scenario), this leaves the stream as it was.
        let mut chunk = [0u8; 16 * 1024];
        let n = self.sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(XmppError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Frees the read buffer's spare capacity (an idle stream keeps nothing on the client).
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut s: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match parse_one(s).unwrap() {
                Parsed::Partial => return out,
                Parsed::Skip(n) => s = &s[n..],
                Parsed::Open(n) => {
                    out.push("open".into());
                    s = &s[n..];
                }
                Parsed::End => {
                    out.push("end".into());
                    return out;
                }
                Parsed::Element(el, n) => {
                    out.push(format!(
                        "{}:{}:{}",
                        el.name,
                        el.attrs.len(),
                        el.child("body").map_or("", |b| b.text.as_str())
                    ));
                    s = &s[n..];
                }
            }
        }
    }

    #[test]
    fn stream_elements_are_read_once_whole() {
        let stream = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='1'>\
            <stream:features><mechanisms/></stream:features>\
            <message from='a@b/c' type='chat'><body>7|12&amp;3&#65;</body></message>\
            <r xmlns='urn:xmpp:sm:3'/></stream:stream>";
        assert_eq!(
            parse_all(stream),
            ["open", "features:0:", "message:2:7|12&3A", "r:1:", "end"]
        );
        // Cut anywhere, a prefix yields only what is whole in it.
        for cut in 0..stream.len() {
            let got = parse_all(&stream[..cut]);
            let whole = parse_all(stream);
            assert_eq!(got[..], whole[..got.len()], "cut at {cut}");
        }
    }
}
