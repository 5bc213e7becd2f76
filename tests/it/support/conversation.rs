//! A process driven the way a person drives a terminal session ([`Conversation`]): type a
//! line, wait until some text appears in what the process writes, type the next. Every wait
//! has a limit, and the process (with everything in its process group) is killed when the
//! conversation is dropped, so a test that drives `ssh -tt` can never hang.
//!
//! The process's own stdin and stdout are pipes; [`Conversation::start_on_terminal`] puts a
//! pseudo-terminal between them (util-linux `script`) for programs that talk to their
//! controlling terminal, as ssh does when it asks for a password.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::tail;

/// What the process has written to stdout so far, and a signal for each new piece.
#[derive(Default)]
struct Heard {
    bytes: Mutex<Vec<u8>>,
    grown: Condvar,
}

/// A running process with its stdin, stdout and stderr piped to the test.
pub struct Conversation {
    child: Child,
    group: Pid,
    input: Option<ChildStdin>,
    stdout: Arc<Heard>,
    stderr: Arc<Heard>,
    /// Where the next [`Conversation::expect`] starts looking in stdout: after the last match.
    cursor: usize,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Conversation {
    /// Starts `command` in a process group of its own, with stdin, stdout and stderr piped.
    pub fn start(command: &mut Command) -> Conversation {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let group = Pid::from_raw(child.id() as i32);
        let stdout = Arc::new(Heard::default());
        let stderr = Arc::new(Heard::default());
        let readers = vec![
            listen(child.stdout.take().expect("stdout was piped"), &stdout),
            listen(child.stderr.take().expect("stderr was piped"), &stderr),
        ];
        Conversation {
            input: child.stdin.take(),
            child,
            group,
            stdout,
            stderr,
            cursor: 0,
            readers,
        }
    }

    /// Starts `command` (its program, arguments, environment and working directory) on a
    /// pseudo-terminal of its own, which is also its controlling terminal in a new session:
    /// what it writes to the terminal, /dev/tty included, is what [`Conversation::expect`]
    /// reads (with `\r\n` line ends), and what [`Conversation::send`] writes is typed on it.
    /// The exit status is the command's own.
    pub fn start_on_terminal(command: &Command) -> Conversation {
        let mut line = String::from("exec");
        for word in std::iter::once(command.get_program()).chain(command.get_args()) {
            line.push(' ');
            line.push_str(&shell_quote(&word.to_string_lossy()));
        }
        let mut script = Command::new("script");
        // Quiet, flushed at once (a prompt must show before its answer is typed), the command's
        // exit status, no typescript file.
        script.args(["-qfec", &line, "/dev/null"]);
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        if let Some(directory) = command.get_current_dir() {
            script.current_dir(directory);
        }
        Conversation::start(&mut script)
    }

    /// Writes `bytes` to the process's stdin. A process that has stopped reading is not an
    /// error here: what it did with its input shows in what it writes.
    pub fn send(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("stdin is still open");
        let _ = input.write_all(bytes).and_then(|()| input.flush());
    }

    /// Closes the process's stdin.
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// Waits up to `limit` until `text` appears in stdout after the previous match, and moves
    /// past it. Panics with the transcript if it does not.
    pub fn expect(&mut self, text: &[u8], limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut heard = self.stdout.bytes.lock().unwrap();
        loop {
            if let Some(at) = find(&heard[self.cursor.min(heard.len())..], text) {
                self.cursor += at + text.len();
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(heard);
                panic!(
                    "{:?} did not appear within {limit:?}\n{}",
                    String::from_utf8_lossy(text),
                    self.transcript()
                );
            }
            heard = self
                .stdout
                .grown
                .wait_timeout(heard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Everything the process has written to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.bytes.lock().unwrap().clone()
    }

    /// Everything the process has written to stderr so far, as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.bytes.lock().unwrap()).into_owned()
    }

    /// Closes stdin and waits up to `limit` for the process to exit and its output to end;
    /// panics with the transcript if it does not. What it wrote stays readable.
    pub fn finish(&mut self, limit: Duration) -> ExitStatus {
        self.close_input();
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => panic!(
                    "still running after {limit:?}, killed\n{}",
                    self.transcript()
                ),
                Err(error) => panic!("cannot wait for the process: {error}"),
            }
        };
        // Something it started may still hold stdout or stderr open.
        while !self.readers.iter().all(|reader| reader.is_finished()) {
            if Instant::now() >= deadline {
                panic!(
                    "its output stayed open after it exited ({status})\n{}",
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        status
    }

    /// Both streams so far, for panic messages: stdout with its escapes and control bytes
    /// shown, as Rust writes a byte string.
    pub fn transcript(&self) -> String {
        let stdout = self.stdout();
        let shown: String = stdout
            .iter()
            .flat_map(|byte| std::ascii::escape_default(*byte))
            .map(char::from)
            .collect();
        format!(
            "--- stdout (escaped, last 4000 characters) ---\n{}\n--- stderr ---\n{}",
            tail(&shown, 4000),
            self.stderr()
        )
    }
}

impl Drop for Conversation {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The group is the one `start` created; nothing else is in it.
            let _ = killpg(self.group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Copies `source` into `heard` as it arrives, waking whoever waits for it.
fn listen(
    mut source: impl std::io::Read + Send + 'static,
    heard: &Arc<Heard>,
) -> thread::JoinHandle<()> {
    let heard = Arc::clone(heard);
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => {
                    heard
                        .bytes
                        .lock()
                        .unwrap()
                        .extend_from_slice(&buffer[..count]);
                    heard.grown.notify_all();
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        heard.grown.notify_all();
    })
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `word` as one word of a POSIX shell command line.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
