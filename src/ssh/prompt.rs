//! Asking the person at the terminal during authentication: a password, the answers to a
//! server's keyboard-interactive prompts, a key's passphrase.
//!
//! This module owns the [`Answerer`] seam that authentication asks through, and [`Terminal`],
//! which asks on the controlling terminal (`/dev/tty`, as ssh does; never stdout, which may be
//! a pipe or carry the output of a run). Text is shown as given (callers make a server's text
//! printable first); answers are read a line at a time, with echo off for secrets, and held as
//! [`SecretString`]. The terminal's settings are put back whenever a question ends, also when
//! the wait for an answer is abandoned: Ctrl-C stopping a run drops the question, and a
//! terminal left without echo would outlive xfer.

use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest answer read: passwords and one-time codes are short, and a line that goes on and on
/// is not an answer (the buffer is allocated once at this size, so no copy of a secret is
/// left behind by a reallocation).
const MAX_ANSWER_BYTES: usize = 4096;

/// How often a wait for an answer looks whether it was abandoned: well within the moment a
/// stopping run gives its last tasks (200 ms), so the terminal is put back before xfer exits.
const ABANDON_CHECK_MILLISECONDS: u16 = 50;

/// Whether what the person types is shown while they type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Shown, for a question whose answer is not secret (a user name, a menu choice).
    Shown,
    /// Hidden, for passwords, passphrases and codes.
    Hidden,
}

/// What a question returns: a future, boxed so that [`Answerer`] can be a trait object.
pub type Asking<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// Where authentication's questions go and its answers come from: [`Terminal`] in xfer, a
/// script in tests.
pub trait Answerer: Send + Sync {
    /// Shows `text` (already printable; it may hold line breaks) on lines of its own, before
    /// questions: a keyboard-interactive request's name and instruction, or why a question is
    /// asked again.
    fn show<'a>(&'a self, text: &'a str) -> Asking<'a, ()>;

    /// Shows `prompt` (already printable) and reads one line, without its line break.
    fn ask<'a>(&'a self, prompt: &'a str, echo: Echo) -> Asking<'a, SecretString>;
}

/// The controlling terminal, opened afresh for every question, as ssh's `read_passphrase`
/// does. The terminal is read on a blocking thread that gives up within
/// [`ABANDON_CHECK_MILLISECONDS`] of the question being dropped, so that it neither keeps the
/// terminal without echo nor takes a line typed for a later question.
#[derive(Debug, Default, Clone, Copy)]
pub struct Terminal;

impl Answerer for Terminal {
    fn show<'a>(&'a self, text: &'a str) -> Asking<'a, ()> {
        let text = format!("{text}\n");
        Box::pin(on_terminal(move |_| {
            open_terminal()?.write_all(text.as_bytes())
        }))
    }

    fn ask<'a>(&'a self, prompt: &'a str, echo: Echo) -> Asking<'a, SecretString> {
        let prompt = prompt.to_owned();
        Box::pin(on_terminal(move |abandoned| {
            ask_terminal(&prompt, echo, abandoned)
        }))
    }
}

/// Runs `work` on a blocking thread; dropping the future tells it, through the flag it is
/// given, that no one waits for it any more.
async fn on_terminal<T: Send + 'static>(
    work: impl FnOnce(&AtomicBool) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    struct Abandon(Arc<AtomicBool>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let abandoned = Arc::new(AtomicBool::new(false));
    let _abandon = Abandon(abandoned.clone());
    tokio::task::spawn_blocking(move || work(&abandoned))
        .await
        .map_err(io::Error::other)?
}

fn open_terminal() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

fn ask_terminal(prompt: &str, echo: Echo, abandoned: &AtomicBool) -> io::Result<SecretString> {
    let mut tty = open_terminal()?;
    tty.write_all(prompt.as_bytes())?;
    // Both guards act when dropped, on every way out; echo comes back first.
    let mut line_end = LineEnd {
        tty: &tty,
        needed: true,
    };
    let _hidden = match echo {
        Echo::Hidden => Some(EchoOff::start(&tty)?),
        Echo::Shown => None,
    };
    let line = read_line(&tty, abandoned)?;
    line_end.needed = false;
    let mut text = std::str::from_utf8(&line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the answer is not UTF-8 text"))?
        .to_owned();
    // A terminal that sends CR LF leaves the CR; it is not part of the answer.
    if text.ends_with('\r') {
        text.pop();
    }
    Ok(SecretString::from(text))
}

/// One line as the terminal's line discipline hands it over (with the person's own editing
/// done), without the line break. End of input before anything was typed (Ctrl-D) is an
/// error: no answer was given.
fn read_line(tty: &File, abandoned: &AtomicBool) -> io::Result<Zeroizing<Vec<u8>>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER_BYTES));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        if abandoned.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the question was abandoned",
            ));
        }
        let mut ready = [PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
        match poll(&mut ready, PollTimeout::from(ABANDON_CHECK_MILLISECONDS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(errno) => return Err(errno.into()),
        }
        // Something to read, or the terminal hung up (then the read says end of input).
        let part = match (&*tty).read(&mut chunk[..]) {
            Ok(0) if line.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of input before an answer",
                ));
            }
            Ok(0) => return Ok(line),
            Ok(count) => &chunk[..count],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let end = part.iter().position(|&byte| byte == b'\n');
        let take = &part[..end.unwrap_or(part.len())];
        if line.len() + take.len() > MAX_ANSWER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
        line.extend_from_slice(take);
        if end.is_some() {
            return Ok(line);
        }
    }
}

/// Echo turned off for one answer; the settings found are restored when dropped. The line
/// break the person types is still shown (`ECHONL`), so what follows starts on a new line.
struct EchoOff {
    tty: File,
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn start(tty: &File) -> io::Result<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let tty = tty.try_clone()?;
        let saved = tcgetattr(&tty).map_err(io::Error::from)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        if let Err(error) = tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved) {
            tracing::warn!("could not turn the terminal's echo back on: {error}");
        }
    }
}

/// Ends the prompt's line when a question is not answered, so that whatever is printed next
/// (the message of an interrupted run) does not follow the prompt on its line.
struct LineEnd<'t> {
    tty: &'t File,
    needed: bool,
}

impl Drop for LineEnd<'_> {
    fn drop(&mut self) {
        if self.needed {
            let _ = (&*self.tty).write_all(b"\n");
        }
    }
}

/// Answers given in advance, for tests: each question takes the next one, and everything
/// shown and asked is kept in order.
#[cfg(test)]
pub(crate) struct Script {
    answers: std::sync::Mutex<std::collections::VecDeque<String>>,
    transcript: std::sync::Mutex<Vec<String>>,
    /// How long the "person" takes to type each answer.
    typing: std::time::Duration,
}

#[cfg(test)]
impl Script {
    pub(crate) fn new(answers: &[&str]) -> Script {
        Script {
            answers: std::sync::Mutex::new(answers.iter().map(|a| a.to_string()).collect()),
            transcript: std::sync::Mutex::new(Vec::new()),
            typing: std::time::Duration::ZERO,
        }
    }

    pub(crate) fn typing_for(mut self, typing: std::time::Duration) -> Script {
        self.typing = typing;
        self
    }

    /// Everything shown (`show: TEXT`) and asked (`ask hidden: PROMPT`, `ask shown: PROMPT`).
    pub(crate) fn transcript(&self) -> Vec<String> {
        self.transcript
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }

    fn note(&self, line: String) {
        if let Ok(mut lines) = self.transcript.lock() {
            lines.push(line);
        }
    }
}

#[cfg(test)]
impl Answerer for Script {
    fn show<'a>(&'a self, text: &'a str) -> Asking<'a, ()> {
        self.note(format!("show: {text}"));
        Box::pin(async { Ok(()) })
    }

    fn ask<'a>(&'a self, prompt: &'a str, echo: Echo) -> Asking<'a, SecretString> {
        let shown = match echo {
            Echo::Shown => "shown",
            Echo::Hidden => "hidden",
        };
        self.note(format!("ask {shown}: {prompt}"));
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|mut answers| answers.pop_front());
        Box::pin(async move {
            tokio::time::sleep(self.typing).await;
            answer.map(SecretString::from).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the script has no more answers",
                )
            })
        })
    }
}
