//! Asking the person at the terminal during authentication: a password, the answers to a
//! server's keyboard-interactive prompts, a key's passphrase.
//!
//! This module owns the [`Answerer`] seam that authentication asks through, and [`Terminal`],
//! which asks on the controlling terminal (`/dev/tty`, as ssh does; never stdout, which may be
//! a pipe or carry the output of a run). Text is shown as given (callers make a server's text
//! printable first); answers are read a line at a time, with echo off for secrets, and held as
//! [`SecretString`]. The terminal's settings are put back whenever a question ends: when the
//! wait for an answer is abandoned (a run stopping drops the question), and before the Ctrl-C
//! typed at a secret's prompt stops xfer, since a terminal left without echo outlives it.

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

    /// Shows `prompt` (already printable; it may hold line breaks, the question being on its
    /// last line) and reads one line, without its line break.
    fn ask<'a>(&'a self, prompt: &'a str, echo: Echo) -> Asking<'a, SecretString>;
}

/// The controlling terminal, opened afresh for every question, as ssh's `read_passphrase`
/// does. The terminal is read on a blocking thread that gives up within
/// `ABANDON_CHECK_MILLISECONDS` of the question being dropped, so that it neither keeps the
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
    let mut line_end = LineEnd {
        tty: &tty,
        needed: true,
    };
    let line = match echo {
        Echo::Shown => read_line(&tty, abandoned)?,
        Echo::Hidden => read_hidden(&tty, abandoned, &mut line_end)?,
    };
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

/// Waits (in steps, to notice an abandoned question) until the terminal has something to
/// read, and reads it; 0 is end of input (Ctrl-D at the start of a line, or a hang-up).
fn read_ready(tty: &File, abandoned: &AtomicBool, chunk: &mut [u8]) -> io::Result<usize> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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
        match (&*tty).read(chunk) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

fn end_of_input() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "end of input before an answer",
    )
}

fn too_long() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
    )
}

/// One line as the terminal's line discipline hands it over (with the person's own editing
/// done), without the line break. End of input before anything was typed (Ctrl-D) is an
/// error: no answer was given.
fn read_line(tty: &File, abandoned: &AtomicBool) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER_BYTES));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        let part = match read_ready(tty, abandoned, &mut chunk[..])? {
            0 if line.is_empty() => return Err(end_of_input()),
            0 => return Ok(line),
            count => &chunk[..count],
        };
        let end = part.iter().position(|&byte| byte == b'\n');
        let take = &part[..end.unwrap_or(part.len())];
        if line.len() + take.len() > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        line.extend_from_slice(take);
        if end.is_some() {
            return Ok(line);
        }
    }
}

/// A secret answer, read with echo off. The terminal is taken out of line mode meanwhile, as
/// ssh's `readpassphrase` takes over the terminal's signals: so that Ctrl-C puts the echo back
/// before it stops xfer (a terminal killed without echo stays so after xfer), and Ctrl-Z before
/// it suspends it. Erasing a character, a word or the line works as the terminal's own keys
/// say. Bytes typed ahead after the line break are dropped.
fn read_hidden(
    tty: &File,
    abandoned: &AtomicBool,
    line_end: &mut LineEnd<'_>,
) -> io::Result<Zeroizing<Vec<u8>>> {
    use nix::sys::signal::Signal;
    let quiet = Quiet::start(tty)?;
    let keys = quiet.keys;
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER_BYTES));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        let count = read_ready(tty, abandoned, &mut chunk[..])?;
        if count == 0 {
            // The terminal hung up.
            return Err(end_of_input());
        }
        for &byte in &chunk[..count] {
            let key = Some(byte);
            if byte == b'\n' || byte == b'\r' {
                let _ = (&*tty).write_all(b"\n");
                line_end.needed = false;
                return Ok(line);
            } else if key == keys.interrupt || key == keys.quit {
                let signal = if key == keys.interrupt {
                    Signal::SIGINT
                } else {
                    Signal::SIGQUIT
                };
                drop(quiet);
                let _ = (&*tty).write_all(b"\n");
                line_end.needed = false;
                return Err(stop_with(signal, abandoned));
            } else if key == keys.suspend {
                quiet.restore();
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTSTP);
                // Continued (fg): the question goes on where it was.
                quiet.apply()?;
            } else if key == keys.end {
                if line.is_empty() {
                    return Err(end_of_input());
                }
            } else if key == keys.erase || byte == 0x08 {
                pop_character(&mut line);
            } else if key == keys.kill {
                line.clear();
            } else if key == keys.word_erase {
                while line.last().is_some_and(u8::is_ascii_whitespace) {
                    line.pop();
                }
                while line.last().is_some_and(|byte| !byte.is_ascii_whitespace()) {
                    pop_character(&mut line);
                }
            } else {
                if line.len() >= MAX_ANSWER_BYTES {
                    return Err(too_long());
                }
                line.push(byte);
            }
        }
    }
}

/// Sends the signal the person typed to xfer, as the terminal would have, now that the
/// terminal is back as it was: with no handler it stops xfer here; a run that handles it
/// abandons the question, which is waited for a moment so that the run reports the
/// interruption rather than a failed question.
fn stop_with(signal: nix::sys::signal::Signal, abandoned: &AtomicBool) -> io::Error {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), signal);
    for _ in 0..20 {
        if abandoned.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(u64::from(
            ABANDON_CHECK_MILLISECONDS,
        )));
    }
    io::Error::new(io::ErrorKind::Interrupted, "interrupted")
}

/// Removes the last character (all the bytes of a UTF-8 one).
fn pop_character(line: &mut Vec<u8>) {
    while let Some(byte) = line.pop() {
        // A continuation byte (10xxxxxx) belongs to the character before it.
        if byte & 0xc0 != 0x80 {
            break;
        }
    }
}

/// The terminal's editing and signal keys; `None` for one switched off.
#[derive(Clone, Copy)]
struct Keys {
    interrupt: Option<u8>,
    quit: Option<u8>,
    suspend: Option<u8>,
    end: Option<u8>,
    erase: Option<u8>,
    kill: Option<u8>,
    word_erase: Option<u8>,
}

/// The terminal without echo, line mode or signal keys, for one secret answer; put back as it
/// was when dropped.
struct Quiet {
    tty: File,
    saved: nix::sys::termios::Termios,
    quiet: nix::sys::termios::Termios,
    keys: Keys,
}

impl Quiet {
    fn start(tty: &File) -> io::Result<Quiet> {
        use nix::sys::termios::{LocalFlags, SpecialCharacterIndices as Index, tcgetattr};
        let tty = tty.try_clone()?;
        let saved = tcgetattr(&tty).map_err(io::Error::from)?;
        // _POSIX_VDISABLE (0) switches a key off.
        let key = |index: Index| Some(saved.control_chars[index as usize]).filter(|&key| key != 0);
        let keys = Keys {
            interrupt: key(Index::VINTR),
            quit: key(Index::VQUIT),
            suspend: key(Index::VSUSP),
            end: key(Index::VEOF),
            erase: key(Index::VERASE),
            kill: key(Index::VKILL),
            word_erase: key(Index::VWERASE),
        };
        let mut quiet = saved.clone();
        quiet
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG | LocalFlags::IEXTEN);
        quiet.control_chars[Index::VMIN as usize] = 1;
        quiet.control_chars[Index::VTIME as usize] = 0;
        let terminal = Quiet {
            tty,
            saved,
            quiet,
            keys,
        };
        terminal.apply()?;
        Ok(terminal)
    }

    fn apply(&self) -> io::Result<()> {
        use nix::sys::termios::{SetArg, tcsetattr};
        tcsetattr(&self.tty, SetArg::TCSANOW, &self.quiet).map_err(io::Error::from)
    }

    fn restore(&self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        if let Err(error) = tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved) {
            tracing::warn!("could not put the terminal's settings back: {error}");
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        self.restore();
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
