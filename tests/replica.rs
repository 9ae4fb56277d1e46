//! Physical replication: a hot standby replays the Generic WAL of a build,
//! inserts, VACUUM, a retrain and a REINDEX, and its copy of the index passes
//! `learned_verify` and answers like the primary.

mod common;

use common::{assert_verified, Cluster};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn as_postgres(args: &[&str]) {
    let out = Command::new("sudo")
        .arg("-u")
        .arg("postgres")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A standby of `primary`, made with pg_basebackup.
struct Standby {
    dir: std::path::PathBuf,
    port: u16,
}

impl Standby {
    fn start(primary: &Cluster) -> Standby {
        let dir = primary.dir.with_file_name(format!(
            "{}-standby",
            primary.dir.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        as_postgres(&["true"]);
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        let sock = primary.dir.join("sock");
        as_postgres(&[
            "/usr/lib/postgresql/15/bin/pg_basebackup",
            "-D",
            data.to_str().unwrap(),
            "-h",
            sock.to_str().unwrap(),
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
        ]);
        let port = primary.port + 1;
        let conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
            dir.join("sock").display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/cluster.sh");
        let ok = Command::new(&script)
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        Standby { dir, port }
    }

    fn connect(&self) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.dir.join("sock"))
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .unwrap()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/cluster.sh");
        let _ = Command::new(&script).arg("stop").arg(&self.dir).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_for_replay(primary: &mut postgres::Client, standby: &mut postgres::Client) {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    let start = Instant::now();
    loop {
        let caught_up: bool = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .unwrap()
            .get(0);
        if caught_up {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "standby did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn standby_replays_the_index() {
    let primary = Cluster::start("replica", &["wal_level = replica", "max_wal_senders = 4"]);
    let mut p = primary.connect();
    p.batch_execute(
        "CREATE TABLE t (id serial, v timestamptz);
         INSERT INTO t (v) SELECT TIMESTAMPTZ '2025-01-01 00:00+00' + g * INTERVAL '1 second' FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    p.batch_execute(
        "CREATE INDEX t_v ON t USING learned (v);
         INSERT INTO t (v) SELECT TIMESTAMPTZ '2025-01-01 00:00+00' + (hashint4(g) & 65535) * INTERVAL '1 second' FROM generate_series(1, 3000) g;
         INSERT INTO t (v) VALUES (NULL), ('infinity');
         DELETE FROM t WHERE id % 5 = 0;",
    )
    .unwrap();
    p.batch_execute("VACUUM t").unwrap();
    p.batch_execute("INSERT INTO t (v) SELECT TIMESTAMPTZ '2026-01-01 00:00+00' + g * INTERVAL '1 minute' FROM generate_series(1, 1000) g").unwrap();
    wait_for_replay(&mut p, &mut s);

    let check = |c: &mut postgres::Client| -> (i64, i64, Vec<String>) {
        c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        let range: i64 = c
            .query_one("SELECT count(*) FROM t WHERE v BETWEEN '2025-01-01 01:00+00' AND '2025-01-01 05:00+00'", &[])
            .unwrap()
            .get(0);
        let nulls: i64 = c
            .query_one("SELECT count(*) FROM t WHERE v IS NULL", &[])
            .unwrap()
            .get(0);
        let last: Vec<String> = c
            .query(
                "SELECT v::text FROM t WHERE v IS NOT NULL ORDER BY v DESC LIMIT 3",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_verified(c, "t_v");
        (range, nulls, last)
    };
    let on_primary = check(&mut p);
    let on_standby = check(&mut s);
    assert_eq!(on_primary, on_standby);
    assert!(on_primary.0 > 10_000, "{on_primary:?}");

    // A retrain (a new generation and the switch to it) is replayed, and so
    // is VACUUM of both generations afterwards.
    p.batch_execute("SELECT learned_retrain('t_v')").unwrap();
    p.batch_execute("DELETE FROM t WHERE id % 7 = 0").unwrap();
    p.batch_execute("VACUUM t").unwrap();
    wait_for_replay(&mut p, &mut s);
    let retrained = check(&mut p);
    assert_eq!(check(&mut s), retrained);
    let generation = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT generation FROM learned_index_stats('t_v')", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(generation(&mut s), 2);

    // A REINDEX is replayed too.
    p.batch_execute("REINDEX INDEX t_v").unwrap();
    wait_for_replay(&mut p, &mut s);
    assert_eq!(check(&mut s), retrained);
}
