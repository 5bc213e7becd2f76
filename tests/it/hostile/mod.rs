//! A lying SSH server, in process: russh accepts any public key on 127.0.0.1, and its SFTP
//! subsystem serves a [`Tree`] held in memory. The tree says whatever a test wants it to say:
//! listings may hold names no filesystem could, directories may answer as links, sizes may
//! disagree with the data, listings may never end, and stat may change its answer between calls.
//!
//! Instead of SFTP, the server can run a [`LyingAgent`]: an exec answered with the agent
//! protocol (as `xfer pull --agent PATH` starts one), which lists every directory endlessly.
//!
//! The server runs on its own thread and tokio runtime, so tests stay synchronous and drive the
//! real `xfer` binary against it. It records every path xfer asks about, so a test can prove that
//! xfer never even requested a name it should have refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use xfer::agent::protocol::{self, ErrorCode, Frame, LENGTH_LEN, PROTOCOL_MAX, Request, Response};

/// POSIX file type bits, as SFTP carries them in `permissions`.
pub const TYPE_FILE: u32 = 0o100000;
pub const TYPE_DIRECTORY: u32 = 0o040000;
pub const TYPE_SYMLINK: u32 = 0o120000;

/// The modification time every fake entry claims unless a test says otherwise.
pub const DEFAULT_MTIME: u32 = 1_600_000_000;

/// A regular file: the bytes reads return, and what stat and listings claim about it.
#[derive(Debug, Clone)]
pub struct FakeFile {
    pub content: Vec<u8>,
    /// The size stat and listings claim, which need not be `content.len()`.
    pub claimed_size: u64,
    pub mode: u32,
    pub mtime: u32,
    /// Every read reply carries this many bytes more than were asked for.
    pub extra_bytes_per_read: u32,
}

/// What reading a directory returns.
#[derive(Debug, Clone)]
pub enum Listing {
    /// These names, in one reply, then end of directory.
    Names(Vec<Listed>),
    /// Batches of `batch` distinct file names, forever.
    Endless { batch: usize },
    /// Batches of `batch` file names, `name(0)`, `name(1)`, ..., `total` in all or forever when
    /// `None`: the shape of a huge directory, honest or not.
    Generated {
        batch: usize,
        name: fn(u64) -> String,
        total: Option<u64>,
    },
    /// The same names (none, or only `.` and `..`, say) in every reply, forever.
    Repeating(Vec<String>),
    /// Opening the directory fails with this status and message.
    Refused(StatusCode, String),
}

/// One name in a listing. Without `claimed`, the listing shows the attributes of the node at
/// that name (as an honest server would); with it, the listing lies.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub claimed: Option<FileAttributes>,
}

#[derive(Debug, Clone)]
pub enum Node {
    File(FakeFile),
    Directory(Listing),
    Symlink(String),
}

impl Node {
    /// An honest file.
    pub fn file(content: &[u8]) -> Node {
        Node::lying_file(content, content.len() as u64)
    }

    /// A file whose stat and listing claim `claimed_size` bytes whatever `content` holds.
    pub fn lying_file(content: &[u8], claimed_size: u64) -> Node {
        Node::File(FakeFile {
            content: content.to_vec(),
            claimed_size,
            mode: 0o644,
            mtime: DEFAULT_MTIME,
            extra_bytes_per_read: 0,
        })
    }

    pub fn directory() -> Node {
        Node::Directory(Listing::Names(Vec::new()))
    }

    pub fn symlink(target: &str) -> Node {
        Node::Symlink(target.to_string())
    }

    /// What stat (for a link: lstat) says about this node.
    pub fn attributes(&self) -> FileAttributes {
        match self {
            Node::File(file) => attributes(TYPE_FILE | file.mode, file.claimed_size, file.mtime),
            Node::Directory(_) => attributes(TYPE_DIRECTORY | 0o755, 4096, DEFAULT_MTIME),
            Node::Symlink(target) => {
                attributes(TYPE_SYMLINK | 0o777, target.len() as u64, DEFAULT_MTIME)
            }
        }
    }
}

/// Attributes with a full POSIX mode (type and permission bits), a size and an mtime.
pub fn attributes(mode: u32, size: u64, mtime: u32) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        uid: Some(0),
        user: None,
        gid: Some(0),
        group: None,
        permissions: Some(mode),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

/// Makes up nodes for paths the tree does not hold, e.g. an endlessly deep tree.
pub type Fallback = Arc<dyn Fn(&str) -> Option<Node> + Send + Sync>;

/// The fake filesystem: nodes by the exact path xfer asks for, listings that may disagree with
/// them, scripted stat answers, and a fallback for everything else.
#[derive(Clone)]
pub struct Tree {
    root: String,
    nodes: HashMap<String, Node>,
    /// For a path, the attributes of the first, second, ... stat or lstat; the last repeats.
    stat_answers: HashMap<String, Vec<FileAttributes>>,
    fallback: Option<Fallback>,
}

impl Tree {
    /// A tree whose root directory, at the absolute path `root`, is empty.
    pub fn new(root: &str) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(root.to_string(), Node::directory());
        Tree {
            root: root.to_string(),
            nodes,
            stat_answers: HashMap::new(),
            fallback: None,
        }
    }

    /// The absolute path of `relative` ("" is the root), joined as xfer joins remote paths.
    pub fn path(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{relative}", self.root)
        }
    }

    /// Puts `node` at `directory/name` and lists `name` in `directory` (relative to the root;
    /// "" is the root). `name` is used as given, even if it holds `/` or `..`.
    pub fn add(&mut self, directory: &str, name: &str, node: Node) -> &mut Tree {
        let directory = self.path(directory);
        self.add_absolute(&directory, name, node)
    }

    /// [`Tree::add`] with an absolute directory path, for directories outside the root (where
    /// links point).
    pub fn add_absolute(&mut self, directory: &str, name: &str, node: Node) -> &mut Tree {
        self.nodes.insert(format!("{directory}/{name}"), node);
        self.push_listed(directory, name, None)
    }

    /// Lists `name` in `directory` with `claimed` attributes (or the node's, if `None`),
    /// without changing any node.
    pub fn list(
        &mut self,
        directory: &str,
        name: &str,
        claimed: Option<FileAttributes>,
    ) -> &mut Tree {
        let directory = self.path(directory);
        self.push_listed(&directory, name, claimed)
    }

    fn push_listed(
        &mut self,
        directory: &str,
        name: &str,
        claimed: Option<FileAttributes>,
    ) -> &mut Tree {
        match self.nodes.get_mut(directory) {
            Some(Node::Directory(Listing::Names(names))) => names.push(Listed {
                name: name.to_string(),
                claimed,
            }),
            _ => panic!("{directory} is not a directory with a plain listing"),
        }
        self
    }

    /// Replaces the node at `relative` (not its listing entry).
    pub fn set(&mut self, relative: &str, node: Node) -> &mut Tree {
        let path = self.path(relative);
        self.nodes.insert(path, node);
        self
    }

    /// Puts `node` at an absolute path, outside any listing (where links point).
    pub fn set_absolute(&mut self, path: &str, node: Node) -> &mut Tree {
        self.nodes.insert(path.to_string(), node);
        self
    }

    /// Scripts what stat and lstat of `relative` answer, call after call; the last repeats.
    pub fn answer_stats(&mut self, relative: &str, answers: Vec<FileAttributes>) -> &mut Tree {
        assert!(!answers.is_empty(), "at least one answer");
        let path = self.path(relative);
        self.stat_answers.insert(path, answers);
        self
    }

    pub fn fallback(&mut self, fallback: Fallback) -> &mut Tree {
        self.fallback = Some(fallback);
        self
    }

    /// The node at exactly `path`, or the fallback's.
    fn node(&self, path: &str) -> Option<Node> {
        match self.nodes.get(path) {
            Some(node) => Some(node.clone()),
            None => self.fallback.as_ref().and_then(|fallback| fallback(path)),
        }
    }

    /// The node `path` names, following links in every component (and the last one if
    /// `follow`), as a real server's filesystem would; with the path it resolved to.
    fn resolve(&self, path: &str, follow: bool) -> Option<(String, Node)> {
        self.resolve_within(path, follow, 40)
    }

    /// [`Tree::resolve`], giving up after `steps` lookups, so a link loop resolves to
    /// nothing instead of recursing forever.
    fn resolve_within(&self, path: &str, follow: bool, steps: u32) -> Option<(String, Node)> {
        let steps = steps.checked_sub(1)?;
        // A name that holds '/' or '..' exists only as an exact key; try that first.
        if let Some(node) = self.node(path) {
            return match node {
                Node::Symlink(target) if follow => {
                    self.resolve_within(&link_destination(path, &target), true, steps)
                }
                node => Some((path.to_string(), node)),
            };
        }
        let (parent, name) = path.rsplit_once('/')?;
        let parent = if parent.is_empty() { "/" } else { parent };
        let (parent, parent_node) = self.resolve_within(parent, true, steps)?;
        if !matches!(parent_node, Node::Directory(_)) {
            return None;
        }
        let joined = format!("{}/{name}", parent.trim_end_matches('/'));
        if joined == path {
            return None;
        }
        self.resolve_within(&joined, follow, steps)
    }
}

/// Where a link at `path` with `target` points, lexically.
fn link_destination(path: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        path.rsplit_once('/')
            .map(|(parent, _)| parent.to_string())
            .unwrap_or_default()
    };
    let mut parts: Vec<&str> = base.split('/').filter(|part| !part.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What the server saw, for tests to check.
#[derive(Default)]
pub struct Record {
    /// Every path xfer asked about, with the request: "stat /tree", "open /tree/a", ...
    pub requests: Mutex<Vec<String>>,
    /// Names sent in directory listings, all listings together.
    pub names_listed: AtomicU64,
}

/// An agent that lies: every path is a directory, and every directory lists forever, in
/// batches of `batch` file names of `name_length` bytes each (any length: its frames are
/// written by hand, not by the protocol's encoders, which refuse names over the cap).
#[derive(Debug, Clone, Copy)]
pub struct LyingAgent {
    pub name_length: usize,
    pub batch: usize,
}

/// State every connection shares.
struct Shared {
    tree: Tree,
    /// Like a provider's proxied endpoint: a shell, but no exec and no SFTP.
    shell_only: bool,
    /// Exec runs this agent, and SFTP is refused (so xfer plans over the agent).
    agent: Option<LyingAgent>,
    stat_calls: Mutex<HashMap<String, usize>>,
    record: Arc<Record>,
}

impl Shared {
    fn note(&self, request: &str, path: &str) {
        // A test with an endless or very deep tree sees many requests; keep memory bounded.
        let mut requests = self.record.requests.lock().unwrap();
        if requests.len() < 100_000 {
            requests.push(format!("{request} {path}"));
        }
    }

    fn stat(&self, path: &str, follow: bool) -> Result<FileAttributes, StatusReply> {
        if let Some(answers) = self.tree.stat_answers.get(path) {
            let mut calls = self.stat_calls.lock().unwrap();
            let count = calls.entry(path.to_string()).or_default();
            let answer = answers[(*count).min(answers.len() - 1)].clone();
            *count += 1;
            return Ok(answer);
        }
        match self.tree.resolve(path, follow) {
            Some((_, node)) => Ok(node.attributes()),
            None => Err(StatusReply::new(StatusCode::NoSuchFile)),
        }
    }
}

/// The fake server: listening on 127.0.0.1 until dropped.
pub struct FakeServer {
    pub port: u16,
    /// The host key as a known_hosts line takes it: `ssh-ed25519 AAAA...`.
    pub host_key: String,
    pub record: Arc<Record>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(tree: Tree) -> FakeServer {
        FakeServer::start_with(tree, false, None)
    }

    /// A server that gives a shell but refuses exec and the SFTP subsystem.
    pub fn start_shell_only(tree: Tree) -> FakeServer {
        FakeServer::start_with(tree, true, None)
    }

    /// A server whose every exec is `agent`, and which refuses the SFTP subsystem.
    pub fn start_agent(agent: LyingAgent) -> FakeServer {
        FakeServer::start_with(Tree::new("/"), false, Some(agent))
    }

    fn start_with(tree: Tree, shell_only: bool, agent: Option<LyingAgent>) -> FakeServer {
        // russh's own `PrivateKey::random` wants a newer rand_core than this crate's rand; a
        // seed from rand 0.8 makes the same kind of key.
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        let host_key = key
            .public_key()
            .to_openssh()
            .expect("an ed25519 public key encodes");
        let config = Arc::new(russh::server::Config {
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![key],
            inactivity_timeout: Some(Duration::from_secs(300)),
            nodelay: true,
            ..Default::default()
        });
        let record = Arc::new(Record::default());
        let shared = Arc::new(Shared {
            tree,
            shell_only,
            agent,
            stat_calls: Mutex::new(HashMap::new()),
            record: record.clone(),
        });
        let (port_sender, port_receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(serve(config, shared, port_sender, stopped));
            // Sessions still running belong to an xfer that is gone or being killed.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        let port = port_receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake server listens");
        FakeServer {
            port,
            host_key,
            record,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every request the server answered, as "request path".
    pub fn requests(&self) -> Vec<String> {
        self.record.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    port_sender: std::sync::mpsc::Sender<u16>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let port = listener.local_addr().expect("a bound address").port();
    port_sender.send(port).expect("the test waits for the port");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                // `Config::nodelay` is applied by russh's own accept loop only, not by
                // `run_stream`. With Nagle on, a reply written right after another waits for the
                // client's delayed ACK, some 40 ms, whenever the client pipelines requests.
                let _ = socket.set_nodelay(true);
                let handler = SshConnection { shared: shared.clone(), channels: HashMap::new() };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, socket, handler).await {
                        let _ = session.await;
                    }
                });
            }
        }
    }
}

/// One SSH connection: any key is accepted, and the only thing offered is SFTP.
struct SshConnection {
    shared: Arc<Shared>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for SshConnection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.close(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (self.shared.agent, self.channels.remove(&channel)) {
            (Some(agent), Some(opened)) => {
                session.channel_success(channel)?;
                let record = self.shared.record.clone();
                let script_length = script_length(command);
                tokio::spawn(serve_agent(
                    opened.into_stream(),
                    agent,
                    record,
                    script_length,
                ));
                Ok(())
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.shared.shell_only {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.shared.shell_only || self.shared.agent.is_some() {
            return session.channel_failure(channel);
        }
        match (name, self.channels.remove(&channel)) {
            ("sftp", Some(opened)) => {
                session.channel_success(channel)?;
                let sftp = Sftp {
                    shared: self.shared.clone(),
                    handles: HashMap::new(),
                    next_handle: 0,
                };
                // Spawns the SFTP loop and returns at once.
                russh_sftp::server::run(opened.into_stream(), sftp).await;
                Ok(())
            }
            _ => session.channel_failure(channel),
        }
    }
}

/// An open SFTP handle.
enum Opened {
    File(FakeFile),
    Directory {
        listing: Listing,
        /// Replies sent so far.
        replies: u64,
    },
}

/// One SFTP session over the fake tree.
struct Sftp {
    shared: Arc<Shared>,
    handles: HashMap<String, Opened>,
    next_handle: u64,
}

impl Sftp {
    fn handle(&mut self, opened: Opened) -> String {
        self.next_handle += 1;
        let handle = format!("h{}", self.next_handle);
        self.handles.insert(handle.clone(), opened);
        handle
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    async fn open(
        &mut self,
        id: u32,
        path: String,
        flags: OpenFlags,
        _attributes: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        self.shared.note("open", &path);
        if flags.intersects(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE) {
            return Err(StatusReply::new(StatusCode::PermissionDenied));
        }
        match self.shared.tree.resolve(&path, true) {
            Some((_, Node::File(file))) => Ok(Handle {
                id,
                handle: self.handle(Opened::File(file)),
            }),
            Some(_) => Err(StatusCode::Failure.with_message("not a regular file")),
            None => Err(StatusReply::new(StatusCode::NoSuchFile)),
        }
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        length: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Opened::File(file)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure.with_message("not an open file"));
        };
        let size = file.content.len() as u64;
        if offset >= size {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        let start = offset as usize;
        let end = (offset + u64::from(length)).min(size) as usize;
        let mut data = file.content[start..end].to_vec();
        data.resize(data.len() + file.extra_bytes_per_read as usize, b'!');
        Ok(Data { id, data })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.shared.note("lstat", &path);
        let attrs = self.shared.stat(&path, false)?;
        Ok(Attrs { id, attrs })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.shared.note("stat", &path);
        let attrs = self.shared.stat(&path, true)?;
        Ok(Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Opened::File(file)) => Ok(Attrs {
                id,
                attrs: Node::File(file.clone()).attributes(),
            }),
            Some(Opened::Directory { .. }) => Ok(Attrs {
                id,
                attrs: Node::directory().attributes(),
            }),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        self.shared.note("opendir", &path);
        match self.shared.tree.resolve(&path, true) {
            Some((_, Node::Directory(Listing::Refused(code, message)))) => {
                Err(code.with_message(message))
            }
            Some((resolved, Node::Directory(listing))) => {
                // An honest listing shows each name with its node's attributes.
                let listing = match listing {
                    Listing::Names(names) => Listing::Names(
                        names
                            .into_iter()
                            .map(|listed| {
                                let claimed = listed.claimed.clone().or_else(|| {
                                    let child = format!("{resolved}/{}", listed.name);
                                    self.shared.tree.node(&child).map(|node| node.attributes())
                                });
                                Listed {
                                    name: listed.name,
                                    claimed,
                                }
                            })
                            .collect(),
                    ),
                    other => other,
                };
                Ok(Handle {
                    id,
                    handle: self.handle(Opened::Directory {
                        listing,
                        replies: 0,
                    }),
                })
            }
            Some(_) => Err(StatusCode::Failure.with_message("not a directory")),
            None => Err(StatusReply::new(StatusCode::NoSuchFile)),
        }
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Opened::Directory { listing, replies }) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure.with_message("not an open directory"));
        };
        let reply = *replies;
        *replies += 1;
        let files: Vec<File> = match listing {
            Listing::Names(names) if reply == 0 => names
                .iter()
                .map(|listed| {
                    let attributes = listed
                        .claimed
                        .clone()
                        .unwrap_or_else(|| attributes(TYPE_FILE | 0o644, 0, DEFAULT_MTIME));
                    File::new(listed.name.clone(), attributes)
                })
                .collect(),
            Listing::Names(_) | Listing::Refused(..) => {
                return Err(StatusReply::new(StatusCode::Eof));
            }
            Listing::Endless { batch } => (0..*batch as u64)
                .map(|index| {
                    let number = reply * *batch as u64 + index;
                    File::new(
                        format!("endless-{number:09}"),
                        attributes(TYPE_FILE | 0o644, 0, DEFAULT_MTIME),
                    )
                })
                .collect(),
            Listing::Generated { batch, name, total } => {
                let first = reply * *batch as u64;
                let end = total.map_or(first + *batch as u64, |total| {
                    total.min(first + *batch as u64)
                });
                if first >= end {
                    return Err(StatusReply::new(StatusCode::Eof));
                }
                (first..end)
                    .map(|number| {
                        File::new(
                            name(number),
                            attributes(TYPE_FILE | 0o644, 0, DEFAULT_MTIME),
                        )
                    })
                    .collect()
            }
            Listing::Repeating(names) => names
                .iter()
                .map(|name| {
                    File::new(
                        name.clone(),
                        attributes(TYPE_DIRECTORY | 0o755, 4096, DEFAULT_MTIME),
                    )
                })
                .collect(),
        };
        self.shared
            .record
            .names_listed
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        Ok(Name { id, files })
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        self.shared.note("readlink", &path);
        match self.shared.tree.resolve(&path, false) {
            Some((_, Node::Symlink(target))) => Ok(Name {
                id,
                files: vec![File::dummy(target)],
            }),
            Some(_) => Err(StatusCode::Failure.with_message("not a link")),
            None => Err(StatusReply::new(StatusCode::NoSuchFile)),
        }
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        self.shared.note("realpath", &path);
        Ok(Name {
            id,
            files: vec![File::dummy(link_destination("/", &path))],
        })
    }
}

/// The length of the script xfer's command line has `/bin/sh` read from stdin (its `count=`).
fn script_length(command: &[u8]) -> usize {
    let command = String::from_utf8_lossy(command);
    command
        .split("count=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// Speaks the agent protocol as [`LyingAgent`] says, until xfer goes away.
async fn serve_agent(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    agent: LyingAgent,
    record: Arc<Record>,
    script_length: usize,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    // As a login shell running xfer's command line would: the marker, then the script's own
    // bytes read from stdin, then its first line (the --agent path), none of it the agent's.
    if writer
        .write_all(xfer::ssh::exec::BEGIN_MARKER)
        .await
        .is_err()
    {
        return;
    }
    let mut script = vec![0u8; script_length];
    if reader.read_exact(&mut script).await.is_err() {
        return;
    }
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte).await {
            Ok(1) if byte[0] != b'\n' => {}
            Ok(1) => break,
            _ => return,
        }
    }
    let greeting = protocol::test_server_hello(1, PROTOCOL_MAX);
    if writer.write_all(&greeting).await.is_err() {
        return;
    }
    // The client's hello, then requests.
    if read_body(&mut reader).await.is_none() {
        return;
    }
    while let Some(body) = read_body(&mut reader).await {
        let Ok(frame) = Frame::parse(&body) else {
            return;
        };
        let id = frame.id;
        let answer = match Request::decode(&frame) {
            Ok(Request::Stat { .. }) => Response::Entry(Some(protocol::Entry {
                name: b"d".to_vec(),
                kind: xfer::remote::EntryKind::Directory,
                size: 4096,
                mtime: i64::from(DEFAULT_MTIME),
                mtime_nanoseconds: 0,
                mode: 0o755,
            })),
            Ok(Request::List { path }) => {
                record.requests.lock().unwrap().push(format!("list {path}"));
                let mut number = 0u64;
                loop {
                    let names = (number..number + agent.batch as u64).map(|number| {
                        let mut name = format!("{number:09}").into_bytes();
                        name.resize(agent.name_length.max(name.len()), b'a');
                        name
                    });
                    let frame = entry_batch_frame(id, names);
                    number += agent.batch as u64;
                    record
                        .names_listed
                        .fetch_add(agent.batch as u64, Ordering::Relaxed);
                    if writer.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
            _ => Response::Error {
                code: ErrorCode::Other,
                message: "not served here".into(),
            },
        };
        match answer.encode(id) {
            Ok(frame) if writer.write_all(&frame).await.is_ok() => {}
            _ => return,
        }
    }
}

/// One frame body from `reader` (after its length), or None at the end or on a bad length.
async fn read_body(reader: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut length = [0u8; LENGTH_LEN];
    reader.read_exact(&mut length).await.ok()?;
    let length = protocol::frame_length(length).ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// An EntryBatch frame answering request `id` with a file entry for each name, not the last
/// batch, built by hand as the protocol's doc lays it out.
fn entry_batch_frame(id: u32, names: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let names: Vec<Vec<u8>> = names.collect();
    let mut payload = (names.len() as u32).to_be_bytes().to_vec();
    for name in names {
        payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
        payload.extend_from_slice(&name);
        // Kind (file), size, mtime, mtime nanoseconds, mode.
        payload.push(0);
        payload.extend_from_slice(&0u64.to_be_bytes());
        payload.extend_from_slice(&i64::from(DEFAULT_MTIME).to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&0o644u32.to_be_bytes());
    }
    // Not the last.
    payload.push(0);
    let mut frame = ((1 + 4 + payload.len()) as u32).to_be_bytes().to_vec();
    // EntryBatch.
    frame.push(0x82);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}
