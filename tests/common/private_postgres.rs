//! A PostgreSQL cluster of the test's own, for fault tests that stop the
//! database: the shared one on 5432 (every other test's) is never touched.
//!
//! Made with `initdb` and run with `pg_ctl`, found through `pg_config
//! --bindir` (Debian keeps them off PATH). initdb, pg_ctl and postgres
//! refuse to run as root, so as root they run as the `postgres` user (the
//! child's uid and gid are set before exec), in a temp directory that user owns.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

pub struct PrivatePostgres {
    pub port: u16,
    /// Where initdb and pg_ctl are.
    bin: PathBuf,
    /// As root: the uid and gid (the postgres user's) the commands run as.
    run_as: Option<(u32, u32)>,
    /// Holds `data/` (the cluster), `server.log` and the Unix sockets.
    /// Last, so it is removed after Drop has stopped the server.
    root: tempfile::TempDir,
}

impl PrivatePostgres {
    /// A new cluster on a free loopback port, started and ready.
    pub fn start() -> Self {
        let bin = bindir();
        let run_as = is_root().then(|| user_ids("postgres"));
        // The postgres user must reach the directory: /tmp rather than a
        // TMPDIR that may sit under root's home.
        let parent = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("rc-pg-")
            .tempdir_in(&parent)
            .expect("a temp dir for the private Postgres cluster");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid))
                .expect("give the private cluster's directory to the postgres user");
        }
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700))
            .expect("make the private cluster's directory 0700");
        let mut pg = Self {
            port: 0,
            bin,
            run_as,
            root,
        };
        let data = pg.data_dir();
        let init = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output();
        match init {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                dump("initdb", &out);
                panic!(
                    "initdb failed for the private cluster in {} (its output is above)",
                    data.display()
                );
            }
            Err(e) => panic!("cannot run initdb ({}): {e}", pg.bin.display()),
        }
        // A port picked free may be taken before postgres binds it: try another.
        for attempt in 1..=3 {
            pg.port = free_port();
            let _ = std::fs::remove_file(pg.log_file());
            match pg.pg_ctl_start() {
                Ok(()) => return pg,
                Err(_) if attempt < 3 && pg.log().contains("Address already in use") => {
                    eprintln!("private Postgres: port {} was taken, trying another", pg.port);
                }
                Err(out) => pg.start_failed(&out),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth: no password).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates an empty database `rc_test_…` on this cluster; its URL.
    pub async fn database(&self) -> String {
        let name = format!("rc_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&self.admin_url())
            .await
            .expect("connect to the private Postgres cluster");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a database on the private Postgres cluster");
        let _ = conn.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops it at once (`-m immediate`): connections drop as in a crash or
    /// a failover, and the next start recovers from the WAL.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let out = self.pg_ctl_stop();
        if self.is_running() {
            if let Some(out) = &out {
                dump("pg_ctl stop", out);
            }
            panic!("the private Postgres cluster on port {} did not stop", self.port);
        }
    }

    /// Starts it again: same data, same port, waiting until it accepts connections.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        if let Err(out) = self.pg_ctl_start() {
            self.start_failed(&out);
        }
    }

    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("status")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// The server's log so far (empty if none).
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// `pg_ctl start -w`; its output when it failed.
    fn pg_ctl_start(&self) -> Result<(), Output> {
        // pg_ctl hands `-o` to a shell: quote the socket directory.
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            shell_quote(&self.root.path().display().to_string())
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl ({}): {e}", self.bin.display()));
        if out.status.success() { Ok(()) } else { Err(out) }
    }

    /// `pg_ctl stop -m immediate -w`; its output, if it could run.
    fn pg_ctl_stop(&self) -> Option<Output> {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .ok()
    }

    fn start_failed(&self, out: &Output) -> ! {
        dump("pg_ctl start", out);
        eprintln!(
            "--- the private Postgres server's log ({}) ---\n{}",
            self.log_file().display(),
            self.log()
        );
        panic!(
            "the private Postgres cluster did not start on 127.0.0.1:{} (pg_ctl's output and the server log are above)",
            self.port
        );
    }

    /// One of the cluster's tools, run as the postgres user when we are root
    /// (std drops root's supplementary groups, then sets gid and uid, in the
    /// child before exec: the same as `runuser -u postgres --`, without PAM).
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        // The postgres user may not be able to enter the test's working directory.
        command.current_dir(self.root.path()).stdin(Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop();
    }
}

/// The directory holding initdb and pg_ctl: `pg_config --bindir`, else the
/// newest /usr/lib/postgresql/*/bin, else one on PATH.
fn bindir() -> PathBuf {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| usable(d)) {
        return dir;
    }
    // pg_config may belong to another version (libpq-dev) than the server.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| usable(dir))
        .expect(
            "initdb not found: scripts/services installs PostgreSQL \
             (looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH)",
        )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `user`'s uid and gid, from `id` (nix's `User` needs a feature this crate
/// does not enable).
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `id {flag} {user}`: {e}"));
        assert!(
            out.status.success(),
            "running as root, and there is no `{user}` user to run initdb and postgres as \
             (scripts/services installs PostgreSQL, which creates it)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("`id {flag} {user}` printed no number"))
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port to pick one for Postgres")
        .local_addr()
        .expect("the picked port")
        .port()
}

/// `s` as one word for /bin/sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn dump(what: &str, out: &Output) {
    eprintln!(
        "--- {what} ({}) ---\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
