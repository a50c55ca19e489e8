//! A FUSE filesystem for tests that passes through to a backing directory (the "bucket") and refuses
//! what Mountpoint for S3, the S3 CSI driver's client, refuses, with the errno it returns:
//! - `rename` → `ENOSYS` ("Function not implemented"); hard and symbolic links → `ENOSYS`;
//! - opening an existing file for writing → `EPERM`, unless mounted `allow_overwrite` and opened with
//!   `O_TRUNC`; a second writer of a file being written → `EPERM`;
//! - a write that is not at the end of what was written (seek-then-write) → `EINVAL`, and the upload
//!   is aborted; a write after `fsync` → `EINVAL`;
//! - `unlink` → `EPERM` unless mounted `allow_delete`, and always for a file still being written;
//! - reading a file that is still being written → `EPERM`; changing metadata (`chmod`, `chown`,
//!   `truncate` of a saved file) → `EPERM`.
//!
//! A new file reaches the backing directory only when it is complete: at `fsync`, or at `close` by
//! the process that opened it (as Mountpoint uploads it), or at the last release otherwise. A writer
//! killed midway therefore leaves its partial file there, as a killed writer does in S3. Attributes are
//! never cached, so mounts over one backing directory see each other's files like S3 clients do.
//! Faults can be injected per write ([`Mount::on_write`]): freeze it (to kill the writer mid-save) or
//! fail it (a failed upload).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};

/// Mountpoint's mount options that change what it allows (`--allow-overwrite`, `--allow-delete`,
/// `--uid`, `--gid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_overwrite: bool,
    pub allow_delete: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl MountOptions {
    /// From a PersistentVolume's `mountOptions` (`allow-delete`, `allow-overwrite`, `uid=N`,
    /// `gid=N`); the others (`allow-other`, `prefix ...`, `region ...`) change nothing here.
    pub fn from_pv<'a>(options: impl IntoIterator<Item = &'a str>) -> MountOptions {
        let mut out = MountOptions::default();
        for o in options {
            let o = o.trim().trim_start_matches("--");
            match o {
                "allow-delete" => out.allow_delete = true,
                "allow-overwrite" => out.allow_overwrite = true,
                _ => {
                    let (k, v) = o.split_once(['=', ' ']).unwrap_or((o, ""));
                    match k {
                        "uid" => out.uid = v.trim().parse().ok(),
                        "gid" => out.gid = v.trim().parse().ok(),
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

/// An operation the filesystem refused, with the errno it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub op: &'static str,
    pub path: String,
    pub errno: i32,
}

/// What to do with one write, decided by the rule given to [`Mount::on_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Hold the write until [`Mount::thaw`] (the writer blocks in `write(2)`).
    Freeze,
    /// Fail it with this errno and abort the upload, as a failed upload does.
    Fail(i32),
}

type Rule = Box<dyn Fn(&str, u64) -> Fault + Send + Sync>;

#[derive(Default)]
struct Gate {
    rule: Option<Rule>,
    frozen: usize,
}

#[derive(Default)]
struct Control {
    refusals: Mutex<Vec<Refusal>>,
    gate: Mutex<Gate>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this process can mount FUSE filesystems (`/dev/fuse` opens read-write).
pub fn fuse_available() -> Result<(), String> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("/dev/fuse: {e} (FUSE needs the fuse module and root)"))
}

/// A mounted enforcing filesystem; unmounted (lazily) on drop.
pub struct Mount {
    path: PathBuf,
    backing: PathBuf,
    ctl: Arc<Control>,
    session: Option<BackgroundSession>,
}

impl Mount {
    /// Mounts at `mountpoint` (created if missing) over `backing` (created if missing).
    // fuser's `Config` is non_exhaustive: it has no struct literal outside its crate.
    #[allow(clippy::field_reassign_with_default)]
    pub fn at(mountpoint: &Path, backing: &Path, options: MountOptions) -> io::Result<Mount> {
        fs::create_dir_all(mountpoint)?;
        fs::create_dir_all(backing)?;
        let backing = fs::canonicalize(backing)?;
        let ctl = Arc::new(Control::default());
        let staging = tempfile::Builder::new()
            .prefix("mountpoint-uploads-")
            .tempdir()?;
        let fs = S3Fs {
            backing: backing.clone(),
            options,
            ctl: ctl.clone(),
            staging,
            state: Mutex::new(State::new()),
            next_staging: AtomicU64::new(1),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("mountpoint-s3".into()),
            MountOption::Subtype("mountpoint-s3-rules".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        // The PV mounts with `allow-other`: the agent need not be the user that mounted.
        config.acl = SessionACL::All;
        // A frozen write must not stop the other requests (the test reads the mount meanwhile).
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mount {
            path: mountpoint.to_owned(),
            backing,
            ctl,
            session: Some(session),
        })
    }

    /// The mount point (what the agent gets as `STATE_DIR`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backing directory (the bucket prefix as S3 holds it).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Every operation refused so far.
    pub fn refusals(&self) -> Vec<Refusal> {
        lock(&self.ctl.refusals).clone()
    }

    /// Decides the fate of every later write from the file's name and the write's offset.
    pub fn on_write(&self, rule: impl Fn(&str, u64) -> Fault + Send + Sync + 'static) {
        lock(&self.ctl.gate).rule = Some(Box::new(rule));
    }

    /// Waits until a write is held by a [`Fault::Freeze`]; false on timeout.
    pub fn wait_frozen(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut gate = lock(&self.ctl.gate);
        while gate.frozen == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            gate = self
                .ctl
                .changed
                .wait_timeout(gate, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Drops the write rule and lets frozen writes go on.
    pub fn thaw(&self) {
        lock(&self.ctl.gate).rule = None;
        self.ctl.changed.notify_all();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.thaw();
        // Dropping the session detaches the mount (MNT_DETACH): no wait for a file still open.
        drop(self.session.take());
    }
}

enum UploadState {
    Open,
    Committed,
    Aborted,
}

struct Upload {
    rel: PathBuf,
    staging: PathBuf,
    file: Arc<File>,
    written: u64,
    /// The opener: its `close` completes the upload (Mountpoint's rule); another's waits for release.
    pid: u32,
    state: UploadState,
}

enum Handle {
    Read { file: Arc<File>, rel: PathBuf },
    Write(Upload),
}

struct State {
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Files being written: relative path → handle.
    uploads: HashMap<PathBuf, u64>,
}

impl State {
    fn new() -> State {
        State {
            paths: HashMap::from([(INodeNo::ROOT.0, PathBuf::new())]),
            inos: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            uploads: HashMap::new(),
        }
    }

    fn ino(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.inos.get(rel) {
            return *i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(rel.to_owned(), i);
        self.paths.insert(i, rel.to_owned());
        i
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn handle(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }
}

struct S3Fs {
    backing: PathBuf,
    options: MountOptions,
    ctl: Arc<Control>,
    staging: tempfile::TempDir,
    state: Mutex<State>,
    next_staging: AtomicU64,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl S3Fs {
    fn refuse(&self, op: &'static str, rel: &Path, errno: i32) -> Errno {
        lock(&self.ctl.refusals).push(Refusal {
            op,
            path: rel.display().to_string(),
            errno,
        });
        Errno::from_i32(errno)
    }

    fn attr(&self, ino: u64, meta: &fs::Metadata) -> FileAttr {
        let dir = meta.is_dir();
        // Mountpoint's fixed modes and owners (--file-mode/--dir-mode defaults, --uid/--gid).
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { meta.len() },
            blocks: meta.len().div_ceil(512),
            atime: time(meta.mtime(), meta.mtime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.mtime(), meta.mtime_nsec()),
            crtime: time(meta.mtime(), meta.mtime_nsec()),
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            // SAFETY: getuid/getgid cannot fail.
            uid: self
                .options
                .uid
                .unwrap_or_else(|| unsafe { libc::getuid() }),
            gid: self
                .options
                .gid
                .unwrap_or_else(|| unsafe { libc::getgid() }),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Metadata of `rel`: the staging file while it is being written, else the backing file.
    fn meta(&self, st: &State, rel: &Path) -> io::Result<fs::Metadata> {
        if let Some(Handle::Write(u)) = st.uploads.get(rel).and_then(|fh| st.handles.get(fh)) {
            return u.file.metadata();
        }
        let meta = fs::symlink_metadata(self.backing.join(rel))?;
        if meta.is_file() || meta.is_dir() {
            Ok(meta)
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOENT))
        }
    }

    fn entry(&self, rel: PathBuf, reply: ReplyEntry) {
        let mut st = lock(&self.state);
        match self.meta(&st, &rel) {
            Ok(meta) => {
                let ino = st.ino(&rel);
                reply.entry(&Duration::ZERO, &self.attr(ino, &meta), Generation(0));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Makes a written file visible in the backing directory (the upload completes).
    fn commit(&self, st: &mut State, fh: u64) -> io::Result<()> {
        let Some(Handle::Write(u)) = st.handles.get_mut(&fh) else {
            return Ok(());
        };
        if !matches!(u.state, UploadState::Open) {
            return Ok(());
        }
        u.state = UploadState::Committed;
        let target = self.backing.join(&u.rel);
        let rel = u.rel.clone();
        let moved = fs::rename(&u.staging, &target).or_else(|e| {
            if e.raw_os_error() != Some(libc::EXDEV) {
                return Err(e);
            }
            let tmp = target.with_extension("mountpoint-commit");
            fs::copy(&u.staging, &tmp)?;
            fs::rename(&tmp, &target)?;
            fs::remove_file(&u.staging)
        });
        st.uploads.remove(&rel);
        moved
    }

    fn abort(&self, st: &mut State, fh: u64) {
        if let Some(Handle::Write(u)) = st.handles.get_mut(&fh) {
            if matches!(u.state, UploadState::Open) {
                u.state = UploadState::Aborted;
                let _ = fs::remove_file(&u.staging);
                let rel = u.rel.clone();
                st.uploads.remove(&rel);
            }
        }
    }

    fn start_upload(&self, st: &mut State, rel: &Path, pid: u32) -> io::Result<(u64, u64)> {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        let staging = self.staging.path().join(format!("upload-{n}"));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&staging)?;
        let fh = st.handle(Handle::Write(Upload {
            rel: rel.to_owned(),
            staging,
            file: Arc::new(file),
            written: 0,
            pid,
            state: UploadState::Open,
        }));
        st.uploads.insert(rel.to_owned(), fh);
        Ok((st.ino(rel), fh))
    }

    /// The fault for a write to `rel` at `offset`; a frozen write waits here, without the state lock.
    fn fault(&self, rel: &Path, offset: u64) -> Fault {
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut gate = lock(&self.ctl.gate);
        let verdict = gate.rule.as_ref().map_or(Fault::Pass, |r| r(&name, offset));
        if verdict != Fault::Freeze {
            return verdict;
        }
        gate.frozen += 1;
        self.ctl.changed.notify_all();
        while gate
            .rule
            .as_ref()
            .is_some_and(|r| r(&name, offset) == Fault::Freeze)
        {
            gate = self
                .ctl
                .changed
                .wait(gate)
                .unwrap_or_else(|p| p.into_inner());
        }
        gate.frozen -= 1;
        Fault::Pass
    }
}

impl fuser::Filesystem for S3Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // O_TRUNC reaches `open`, where the overwrite rule needs it.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match lock(&self.state).path(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        self.entry(dir.join(name), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = lock(&self.state);
        let rel = match st.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.meta(&st, &rel) {
            Ok(meta) => reply.attr(&Duration::ZERO, &self.attr(ino.0, &meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let st = lock(&self.state);
        let rel = match st.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        // Only the times, or a no-op size, of a file being written may change.
        let writing = st.uploads.get(&rel).and_then(|fh| st.handles.get(fh));
        let allowed = match writing {
            Some(Handle::Write(u)) => {
                mode.is_none()
                    && uid.is_none()
                    && gid.is_none()
                    && size.is_none_or(|s| s == u.written)
            }
            _ => false,
        };
        if !allowed {
            return reply.error(self.refuse("setattr", &rel, libc::EPERM));
        }
        match self.meta(&st, &rel) {
            Ok(meta) => reply.attr(&Duration::ZERO, &self.attr(ino.0, &meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = match lock(&self.state).path(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        if let Err(e) = fs::create_dir(self.backing.join(&rel)) {
            return reply.error(errno(&e));
        }
        self.entry(rel, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = lock(&self.state);
        let rel = match st.path(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        if !self.options.allow_delete || st.uploads.contains_key(&rel) {
            return reply.error(self.refuse("unlink", &rel, libc::EPERM));
        }
        match fs::remove_file(self.backing.join(&rel)) {
            Ok(()) => {
                if let Some(ino) = st.inos.remove(&rel) {
                    st.paths.remove(&ino);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = lock(&self.state);
        let rel = match st.path(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        match fs::remove_dir(self.backing.join(&rel)) {
            Ok(()) => {
                if let Some(ino) = st.inos.remove(&rel) {
                    st.paths.remove(&ino);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("symlink", Path::new(link_name), libc::ENOSYS));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse("rename", Path::new(name), libc::ENOSYS));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("link", Path::new(newname), libc::ENOSYS));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = lock(&self.state);
        let rel = match st.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if st.uploads.contains_key(&rel) {
            // Not readable until complete; one writer at a time.
            return reply.error(self.refuse("open", &rel, libc::EPERM));
        }
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let acc = flags.acc_mode();
        let overwrite = acc == OpenAccMode::O_WRONLY || (acc == OpenAccMode::O_RDWR && truncate);
        if overwrite {
            if !self.options.allow_overwrite || !truncate {
                return reply.error(self.refuse("open for overwrite", &rel, libc::EPERM));
            }
            return match self.start_upload(&mut st, &rel, req.pid()) {
                Ok((_, fh)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(errno(&e)),
            };
        }
        match File::open(self.backing.join(&rel)) {
            Ok(file) => {
                let fh = st.handle(Handle::Read {
                    file: Arc::new(file),
                    rel,
                });
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = lock(&self.state);
        let rel = match st.path(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        if st.uploads.contains_key(&rel) || self.backing.join(&rel).exists() {
            return reply.error(Errno::EEXIST);
        }
        let (ino, fh) = match self.start_upload(&mut st, &rel, req.pid()) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(&e)),
        };
        match self.meta(&st, &rel) {
            Ok(meta) => reply.created(
                &Duration::ZERO,
                &self.attr(ino, &meta),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match lock(&self.state).handles.get(&fh.0) {
            Some(Handle::Read { file, .. }) => file.clone(),
            Some(Handle::Write(u)) => {
                let rel = u.rel.clone();
                return reply.error(self.refuse("read", &rel, libc::EBADF));
            }
            None => return reply.error(Errno::EBADF),
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (file, rel) = {
            let mut st = lock(&self.state);
            let (file, rel) = match st.handles.get(&fh.0) {
                Some(Handle::Read { rel, .. }) => {
                    let rel = rel.clone();
                    return reply.error(self.refuse(
                        "write to an existing file",
                        &rel,
                        libc::EPERM,
                    ));
                }
                None => return reply.error(Errno::EBADF),
                Some(Handle::Write(u)) => match u.state {
                    UploadState::Open if u.written == offset => (u.file.clone(), u.rel.clone()),
                    UploadState::Open => {
                        let rel = u.rel.clone();
                        self.abort(&mut st, fh.0);
                        return reply.error(self.refuse("out-of-order write", &rel, libc::EINVAL));
                    }
                    UploadState::Committed | UploadState::Aborted => {
                        let rel = u.rel.clone();
                        return reply.error(self.refuse(
                            "write after fsync or abort",
                            &rel,
                            libc::EINVAL,
                        ));
                    }
                },
            };
            (file, rel)
        };
        if let Fault::Fail(code) = self.fault(&rel, offset) {
            self.abort(&mut lock(&self.state), fh.0);
            return reply.error(self.refuse("write (injected failure)", &rel, code));
        }
        if let Err(e) = file.write_all_at(data, offset) {
            return reply.error(errno(&e));
        }
        if let Some(Handle::Write(u)) = lock(&self.state).handles.get_mut(&fh.0) {
            u.written = offset + data.len() as u64;
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let mut st = lock(&self.state);
        let by_opener = matches!(st.handles.get(&fh.0), Some(Handle::Write(u)) if u.pid == req.pid() && u.written > 0);
        if by_opener {
            if let Err(e) = self.commit(&mut st, fh.0) {
                return reply.error(errno(&e));
            }
        }
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = lock(&self.state);
        let result = self.commit(&mut st, fh.0);
        st.handles.remove(&fh.0);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = lock(&self.state);
        match self.commit(&mut st, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = lock(&self.state);
        let dir = match st.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let listing = match fs::read_dir(self.backing.join(&dir)) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(&e)),
        };
        // Lexicographic, as Mountpoint lists a general purpose bucket; files being written included.
        let mut names: BTreeMap<std::ffi::OsString, FileType> = BTreeMap::new();
        for entry in listing.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => names.insert(entry.file_name(), FileType::Directory),
                Ok(t) if t.is_file() => names.insert(entry.file_name(), FileType::RegularFile),
                _ => None,
            };
        }
        for rel in st.uploads.keys() {
            if rel.parent() == Some(dir.as_path()) {
                if let Some(n) = rel.file_name() {
                    names.insert(n.to_owned(), FileType::RegularFile);
                }
            }
        }
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for (name, kind) in names {
            let i = st.ino(&dir.join(&name));
            entries.push((i, kind, name));
        }
        for (i, (e_ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e_ino), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // S3 has no capacity; report a large, mostly free volume as Mountpoint does.
        reply.statfs(1 << 40, 1 << 40, 1 << 40, 1 << 30, 1 << 30, 4096, 255, 4096);
    }
}
