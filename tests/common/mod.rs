//! A private PostgreSQL cluster per test, with the installed learneddb
//! extension: started on its own port and socket directory under /tmp, run as
//! the postgres user, stopped and removed on drop. The server is the major the
//! tests are built for (`--features pg15` or `pg18`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The PostgreSQL major it runs (`PG_MAJOR` unless a test asks otherwise).
    pub major: &'static str,
    /// Extra `initdb` arguments.
    pub initdb: &'static str,
    /// `VAR=value` words for the server's environment.
    pub env: String,
}

/// The PostgreSQL major these tests run against.
#[cfg(feature = "pg18")]
pub const PG_MAJOR: &str = "18";
#[cfg(not(feature = "pg18"))]
pub const PG_MAJOR: &str = "15";

/// `tools/cluster.sh`, set up for the major `major`.
pub fn cluster_script_for(major: &str) -> Command {
    let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/cluster.sh"));
    c.env("LEARNEDDB_PG", major);
    c
}

/// initdb arguments for a cluster without data checksums: PostgreSQL 18
/// turns them on by default (and 15 has no flag to turn them off).
#[cfg(not(feature = "pg15"))]
pub const NO_CHECKSUMS: &str = "--no-data-checksums";
#[cfg(feature = "pg15")]
pub const NO_CHECKSUMS: &str = "";

/// Runs `args` as the postgres user in `dir`, which must succeed.
pub fn as_postgres(dir: &Path, args: &[&str]) {
    let out = Command::new("sudo")
        .arg("-u")
        .arg("postgres")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tools/cluster.sh` for the major under test.
pub fn cluster_script() -> Command {
    cluster_script_for(PG_MAJOR)
}

/// The directory holding the server programs (`pg_basebackup`, `pg_upgrade`)
/// of PostgreSQL `major`, as `tools/pg.sh` says.
pub fn pg_bin_for(major: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg(". tools/pg.sh && echo \"$PG_BIN\"")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LEARNEDDB_PG", major)
        .output()
        .expect("run tools/pg.sh");
    assert!(out.status.success(), "tools/pg.sh: {out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Cluster {
    pub fn start(name: &str, extra_conf: &[&str]) -> Cluster {
        Cluster::start_with_env(name, extra_conf, "")
    }

    /// As `start`, with `env` (`VAR=value` words) in the server's environment.
    pub fn start_with_env(name: &str, extra_conf: &[&str], env: &str) -> Cluster {
        let c = Cluster::start_major(name, PG_MAJOR, extra_conf, env, "");
        c.connect()
            .batch_execute("CREATE EXTENSION learneddb")
            .unwrap();
        c
    }

    /// A new cluster of PostgreSQL `major`, without the extension; `initdb`
    /// holds extra initdb arguments (e.g. [`NO_CHECKSUMS`]).
    pub fn start_major(
        name: &str,
        major: &'static str,
        extra_conf: &[&str],
        env: &str,
        initdb: &'static str,
    ) -> Cluster {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/learneddb-test-{name}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        let port =
            20000 + (pid % 20000) as u16 + name.bytes().map(|b| b as u16).sum::<u16>() % 1000;
        let c = Cluster {
            dir,
            port,
            major,
            initdb,
            env: env.to_string(),
        };
        c.run(
            "start",
            &extra_conf.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        c
    }

    fn run(&self, cmd: &str, args: &[String]) {
        let mut c = cluster_script_for(self.major);
        c.env("SERVER_ENV", &self.env);
        c.env("INITDB_ARGS", self.initdb);
        c.arg(cmd).arg(&self.dir);
        if cmd == "start" {
            c.arg(self.port.to_string());
        }
        c.args(args);
        let out = c.output().expect("run tools/cluster.sh");
        assert!(
            out.status.success(),
            "cluster {cmd} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn try_connect(&self) -> Result<postgres::Client, postgres::Error> {
        let sock = self.dir.join("sock");
        postgres::Config::new()
            .host_path(&sock)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
    }

    /// A connection to database `db`.
    pub fn connect_to(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.dir.join("sock"))
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(postgres::NoTls)
            .unwrap()
    }

    pub fn connect(&self) -> postgres::Client {
        let mut last = None;
        for _ in 0..100 {
            match self.try_connect() {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("cannot connect: {last:?}\n{}", self.log());
    }

    /// Stops the server with `pg_ctl -m mode` (e.g. "immediate" to simulate a crash).
    pub fn stop(&self, mode: &str) {
        self.run("stop", &[mode.to_string()]);
    }

    pub fn restart(&self) {
        self.run("start", &[]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("fast");
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `learned_verify` on `index` (heap check included) and requires it to pass.
pub fn assert_verified(c: &mut postgres::Client, index: &str) {
    let ok: bool = c
        .query_one("SELECT learned_verify($1::text::regclass)", &[&index])
        .unwrap_or_else(|e| panic!("learned_verify('{index}') failed: {}", db_message(&e)))
        .get(0);
    assert!(ok);
}

/// Runs `sql` (one column) through `index`, which the plan must use, and
/// through the table alone; the rows must be the same. Returns them.
pub fn assert_index_matches_table(
    c: &mut postgres::Client,
    index: &str,
    sql: &str,
    what: &str,
) -> Vec<String> {
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let plan = texts(c, &format!("EXPLAIN (COSTS OFF) {sql}")).join("\n");
    assert!(plan.contains(index), "{what}: {index} not used: {plan}");
    let by_index = texts(c, sql);
    c.batch_execute("RESET ALL; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let by_table = texts(c, sql);
    c.batch_execute("RESET ALL").unwrap();
    assert!(
        by_index == by_table,
        "{what}: the index and the table disagree"
    );
    by_table
}

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Polls `ready` every 10 ms until it holds; panics after `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn backend_pid(c: &mut postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
}

/// The wait event `pid` is waiting on, as `type:event`, or "" if it runs.
pub fn wait_event(c: &mut postgres::Client, pid: i32) -> String {
    c.query_one(
        "SELECT coalesce(wait_event_type || ':' || wait_event, '') FROM pg_stat_activity WHERE pid = $1",
        &[&pid],
    )
    .map(|r| r.get(0))
    .unwrap_or_default()
}

/// Rows of a one-column query (or FETCH), as text; NULL as "NULL".
pub fn texts(c: &mut postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

/// Runs each `;`-separated statement of `sql` on its own (VACUUM cannot run in
/// the implicit transaction of a multi-statement string).
pub fn run_each(c: &mut postgres::Client, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.batch_execute(stmt)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// The SQLSTATE of a database error ("" for any other).
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// The server's message for a failed statement.
pub fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Index blocks read (hit or not) by `sql`, from `pg_statio_user_indexes`.
pub fn index_blocks(c: &mut postgres::Client, index: &str, sql: &str) -> i64 {
    let read = |c: &mut postgres::Client| -> i64 {
        c.batch_execute("SELECT pg_stat_force_next_flush()")
            .unwrap();
        c.query_one(
            "SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = $1",
            &[&index],
        )
        .unwrap()
        .get(0)
    };
    let before = read(c);
    c.batch_execute(sql).unwrap();
    read(c) - before
}

/// The advisory lock a retrain waits for at `learneddb.debug_pause`.
pub const PAUSE_LOCK: i64 = 7_390_001;

/// Takes or lets go (`how`: "lock" or "unlock") of pause lock `n`, which
/// `learneddb.debug_pause = 'point:n'` waits for (0 for a plain 'point').
pub fn pause_lock(c: &mut postgres::Client, n: i64, how: &str) {
    c.query_one(
        &format!("SELECT pg_advisory_{how}($1)::text"),
        &[&(PAUSE_LOCK + n)],
    )
    .unwrap();
}

/// Waits until backend `pid` waits for an advisory lock: a retrain stopped
/// at the stage `learneddb.debug_pause` names.
pub fn wait_for_pause(c: &mut postgres::Client, pid: i32, what: &str) {
    wait_for(what, 30, || {
        c.query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted",
            &[&pid],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
}

/// Starts `learned_retrain(index)` in session `r`, stopped at `stage` (the
/// caller holds the pause lock, from `c`); returns the thread, which yields
/// the path the retrain took once the lock is let go.
pub fn start_paused_retrain(
    c: &mut postgres::Client,
    mut r: postgres::Client,
    stage: &str,
    index: &str,
) -> std::thread::JoinHandle<String> {
    let pid = backend_pid(&mut r);
    r.batch_execute(&format!("SET learneddb.debug_pause = '{stage}'"))
        .unwrap();
    let index = index.to_string();
    let retrainer = std::thread::spawn(move || retrain_path(&mut r, &index));
    wait_for_pause(c, pid, &format!("the retrain to pause at {stage}"));
    retrainer
}

/// Writes `bytes` at offset `at` of file `path` (a relation file of a stopped
/// server, to damage it); returns the bytes that were there.
pub fn overwrite(path: &Path, at: u64, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut old = vec![0u8; bytes.len()];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut old).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    old
}

/// Random keys over the whole `int8` range, from `g` (of `generate_series`).
pub const RANDOM_KEY: &str = "(hashint8(g)::int8 << 32) # hashint8(-g)::int8";

/// `index`'s delta: (entries, pages), from `learned_index_stats`.
pub fn delta_stats(c: &mut postgres::Client, index: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT delta_entries, delta_pages FROM learned_index_stats($1::text::regclass)",
            &[&index],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Retrains `index` with `learned_retrain`; returns the path it took.
pub fn retrain_path(c: &mut postgres::Client, index: &str) -> String {
    c.query_one(
        "SELECT path FROM learned_retrain($1::text::regclass)",
        &[&index],
    )
    .unwrap()
    .get(0)
}
