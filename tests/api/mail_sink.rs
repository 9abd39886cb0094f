//! A real SMTP server for the tests, in-process: it speaks enough of RFC 5321 for any
//! client (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps what it is sent, and can be
//! told to turn mail away for now (451) to play a mail server in trouble.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, dot-unstuffed, lines joined with "\n".
    pub data: String,
}

impl Delivered {
    /// The body, quoted-printable decoded if it was sent so.
    pub fn text(&self) -> String {
        let body = self.data.split_once("\n\n").map_or("", |(_, body)| body);
        let encoding = self.header("Content-Transfer-Encoding").unwrap_or_default();
        if !encoding.eq_ignore_ascii_case("quoted-printable") {
            return body.to_owned();
        }
        let joined = body.replace("=\n", "");
        let mut out = String::new();
        let mut chars = joined.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '=' {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(byte) => out.push(byte as char),
                    Err(_) => {
                        out.push('=');
                        out.push_str(&hex);
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self
            .data
            .split_once("\n\n")
            .map_or(&*self.data, |(head, _)| head);
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The one-time code the message carries: what follows `code=` in its link, or the
    /// code itself when there is no link.
    pub fn code(&self) -> String {
        let text = self.text();
        let start = ["code=", "code:\r\n", "code:\n"]
            .iter()
            .find_map(|marker| text.find(marker).map(|at| at + marker.len()))
            .expect("a code in the message");
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    messages: Mutex<Vec<Delivered>>,
    arrived: Notify,
    refusing: AtomicBool,
}

/// A running sink; stops when dropped.
pub struct MailSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl MailSink {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On `port` (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(converse(stream, Arc::clone(&state)));
            }
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// AUTHD_SMTP_URL for this sink (plaintext: it is on loopback).
    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// Answer 451 (try again later) to every message while `refusing`.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Delivered> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until `count` messages have arrived, and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Delivered> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.shared.arrived.notified();
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{count} messages expected, {} arrived",
                    self.messages().len()
                );
            }
        }
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn converse(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut reply = async |text: &str| write.write_all(format!("{text}\r\n").as_bytes()).await;
    if reply("220 sink.test ESMTP ready").await.is_err() {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8",
            "HELO" | "NOOP" => "250 OK",
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                "250 OK"
            }
            "MAIL" if shared.refusing.load(Ordering::SeqCst) => {
                "451 4.3.0 mail server busy, try again later"
            }
            "MAIL" => {
                from = address(command);
                "250 OK"
            }
            "RCPT" => {
                to.push(address(command));
                "250 OK"
            }
            "DATA" => {
                if reply("354 end with <CRLF>.<CRLF>").await.is_err() {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    data.push(text.strip_prefix('.').unwrap_or(text).to_owned());
                }
                let message = Delivered {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data: data.join("\n"),
                };
                shared.messages.lock().unwrap().push(message);
                shared.arrived.notify_waiters();
                "250 OK queued"
            }
            "QUIT" => {
                let _ = reply("221 bye").await;
                return;
            }
            _ => "502 command not implemented",
        };
        if reply(answer).await.is_err() {
            return;
        }
    }
}

/// The address in `MAIL FROM:<a@b>` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}
