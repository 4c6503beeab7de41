//! Full disks, for real: a township aggregator and a county replica whose data directory is a
//! tiny tmpfs (`mount -t tmpfs -o size=2m`) filled up under them, as `tally` processes on
//! 127.0.0.1 laid out by `tally::localnet`. What is checked is what the clerk and the operator
//! see (docs/design/township.md and county.md, "When the disk fails"; deploy/README.md):
//!
//! - the township: `tally township import` says the township's disk is full (not "is it running?"), nothing acknowledged is lost, the aggregator stays up,
//!   and once space is freed it takes sheets again by itself and forwards everything;
//! - a replica: it exits with status 74, its log says its disk is full, `tally cluster
//!   status` never shows two leaders, the township's sheets reach the county through the
//!   other replicas, and the replica started again on the freed disk catches up.
//!
//! Mounting needs root (CI runs as root); elsewhere the tests say why they skip and pass.
//! Every wait polls with a deadline. Every process a test starts is stopped when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tally_proto::SignedSheet;
use tally_tests::localnet::{LocalCounty, Tuning, Watch};
use tally_tests::{lay_out_county, poll, small_county};

/// The tmpfs size: enough for an empty database, little enough to fill in a moment.
const TMPFS_SIZE: &str = "2m";
const POLL: Duration = Duration::from_millis(100);
const WAIT_MAX: Duration = Duration::from_secs(60);
/// `tally_county::fault::EXIT_STORAGE`.
const EXIT_STORAGE: i32 = 74;

const TUNING: Tuning = Tuning {
    raft_tick_ms: Some(50),
    outbox_retry_max_ms: Some(300),
    outbox_batch_max: Some(16),
};

/// Whether this process may mount a tmpfs; says why not when it may not.
fn may_mount() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    if uid.as_deref() == Some("0") {
        true
    } else {
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root (uid {uid:?}); CI runs these tests as root"
        );
        false
    }
}

/// A tmpfs mounted at a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(dir.to_owned())
    }

    /// Fills the filesystem with a ballast file until the kernel says it is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.ballast()).unwrap();
        let block = vec![0xA5u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                    break;
                }
            }
        }
    }

    /// Frees the space [`Tmpfs::fill`] took.
    fn free(&self) {
        std::fs::remove_file(self.ballast()).unwrap();
    }

    fn ballast(&self) -> PathBuf {
        self.0.join("ballast")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold a file in it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Setup {
    county: LocalCounty,
    runtime: tokio::runtime::Runtime,
    watch: Watch,
    scratch: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tally_tests::tempdir();
    let county = lay_out_county(
        &dir.path().join("county"),
        &small_county(11, 3),
        Default::default(),
    );
    county.tune(&TUNING).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let watch = {
        let _guard = runtime.enter();
        Watch::new(&county).unwrap()
    };
    Setup {
        county,
        runtime,
        watch,
        scratch,
        _dir: dir,
    }
}

impl Setup {
    /// The signed sheets of every unit of `township`.
    fn sheets_of_township(&self, township: &str) -> Vec<SignedSheet> {
        let generated = &self.county.generated;
        generated
            .sheets
            .iter()
            .zip(&self.county.sheets)
            .filter(|(sheet, _)| {
                generated.units.iter().any(|u| {
                    u.id == sheet.unit && generated.townships[u.township].id.as_str() == township
                })
            })
            .map(|(_, signed)| signed.clone())
            .collect()
    }

    /// The signed sheets of one unit.
    fn sheets_of_unit(&self, unit: &str) -> Vec<SignedSheet> {
        tally_tests::sheets_of_unit(&self.county, unit)
            .into_iter()
            .map(|(_, signed)| signed)
            .collect()
    }

    /// `tally village submit --config <unit's> --retry-for SECS FILES...`.
    fn village_submit(&self, unit: &str, retry_for_secs: &str, files: &[&Path]) -> Output {
        let config = self.county.layout.village_dir(unit).join("village.toml");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "village".as_ref(),
            "submit".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--retry-for".as_ref(),
            retry_for_secs.as_ref(),
        ];
        args.extend(files.iter().map(|f| f.as_os_str()));
        self.tally(&args)
    }

    fn bundle(&self, name: &str, sheets: &[SignedSheet]) -> PathBuf {
        let path = self.scratch.join(format!("{name}.sheets"));
        std::fs::write(&path, tally_proto::write_bundle(sheets)).unwrap();
        path
    }

    fn tally(&self, args: &[&std::ffi::OsStr]) -> Output {
        tally_tests::tally()
            .args(args)
            .env("TALLY_LOG", "warn")
            .output()
            .expect("tally runs")
    }

    fn import(&self, township: &str, bundle: &Path) -> Output {
        let config = self.county.layout.township_config(township);
        self.tally(&[
            "township".as_ref(),
            "import".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            bundle.as_os_str(),
        ])
    }

    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Setup) -> Option<T>) -> T {
        poll(WAIT_MAX, POLL, || check(self).ok_or_else(String::new))
            .unwrap_or_else(|_| panic!("waited {WAIT_MAX:?} for {what}"))
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The digests (first 12 hex digits) an import printed as stored: accepted or superseded.
fn acknowledged(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(": accepted: ") || l.contains(": superseded: "))
        .filter_map(|l| {
            let open = l.rfind('(')?;
            Some(l[open + 1..l.len() - 1].to_owned())
        })
        .collect()
}

// Goal: a township whose disk fills tells its clerk so, loses nothing it acknowledged, does
// not resend what the county already took while it cannot record the answer, stays up, and
// takes sheets and forwards everything once space is freed.
// Method: T01's data_dir is a 2 MB tmpfs. With the county down, import the first 40 of T01's
// sheets (acknowledged, in the outbox); fill the tmpfs; start the county, which takes the
// first batch T01 forwards, while T01 cannot record its answer; import all of T01's sheets (the
// import must say the disk is full, exit 1, and store nothing) and submit one unit's sheets
// with `tally village submit` (pending, exit 2, told the disk is full); check T01 still
// answers its picture with the 40 stored and in the outbox. Free the space and import all
// again: 40 duplicates and the rest accepted; then the outbox drains, the county's chain holds
// every sheet of T01 once, and the unit's pending sheets are delivered.
#[test]
fn a_township_whose_disk_fills_says_so_and_recovers_when_space_is_freed() {
    if !may_mount() {
        return;
    }
    let mut s = setup();
    let data = s.county.layout.servers.join("data/township-T01");
    let tmpfs = Tmpfs::mount(&data);
    s.county.start_township("T01").unwrap();
    s.wait_for("T01 to answer", |s| {
        s.runtime.block_on(s.watch.picture("T01"))
    });

    let sheets = s.sheets_of_township("T01");
    assert!(
        sheets.len() > 64,
        "{} sheets: more than one import call",
        sheets.len()
    );
    const FIRST: usize = 40;
    let first = s.import("T01", &s.bundle("t01-first", &sheets[..FIRST]));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let before = acknowledged(&first);
    assert_eq!(before.len(), FIRST, "{}", text(&first));

    tmpfs.fill();
    s.runtime.block_on(s.county.start_county()).unwrap();
    // The county takes the first batch; T01 cannot record the answer, so it sends nothing
    // more until its database opens again (the batch stays in its outbox).
    let log_path = s.county.fleet.townships["T01"].log.clone();
    s.wait_for("the county to take T01's first batch", |s| {
        let log = std::fs::read_to_string(&log_path).unwrap();
        (s.runtime.block_on(s.watch.county_sheets()) > 0
            && log.contains("the township's disk is full"))
        .then_some(())
    });

    let bundle = s.bundle("t01", &sheets);
    let full = s.import("T01", &bundle);
    let full_text = text(&full);
    assert_eq!(full.status.code(), Some(1), "{full_text}");
    assert!(
        full_text.contains("the township's disk is full"),
        "{full_text}"
    );
    assert!(!full_text.contains("is `tally township"), "{full_text}");
    assert!(acknowledged(&full).is_empty(), "{full_text}");
    eprintln!(
        "the import while T01's disk is full says:\n{}",
        String::from_utf8_lossy(&full.stderr)
    );
    // A polling unit whose sheets are not stored yet submits them: they stay pending in its
    // journal (exit 2), and it is told the township did not store them because its disk is
    // full, not that it did not answer.
    let first_digests: Vec<[u8; 32]> = sheets[..FIRST].iter().map(SignedSheet::digest).collect();
    let unit = s
        .county
        .generated
        .units
        .iter()
        .filter(|u| s.county.generated.townships[u.township].id.as_str() == "T01")
        .map(|u| u.id.to_string())
        .find(|u| {
            let mine = s.sheets_of_unit(u);
            !mine.is_empty() && mine.iter().all(|m| !first_digests.contains(&m.digest()))
        })
        .expect("a unit of T01 with no sheet among the first");
    let unit_bundle = s.bundle(&unit, &s.sheets_of_unit(&unit));
    let village = s.village_submit(&unit, "1", &[&unit_bundle]);
    let village_text = text(&village);
    assert_eq!(village.status.code(), Some(2), "{village_text}");
    eprintln!(
        "tally village submit while T01's disk is full says:\n{}",
        String::from_utf8_lossy(&village.stdout)
    );
    assert!(
        village_text.contains("did not store them"),
        "{village_text}"
    );
    assert!(
        village_text.contains("the township's disk is full"),
        "{village_text}"
    );

    // Up, answering its picture: the first sheets stored and still in the outbox (the
    // county's answer could not be recorded), nothing more.
    s.county.fleet.check_alive().unwrap();
    let picture = s
        .runtime
        .block_on(s.watch.picture("T01"))
        .expect("the picture answers while the disk is full");
    assert_eq!(picture.sheets_stored as usize, FIRST);
    assert_eq!(picture.outbox.map_or(0, |o| o.depth) as usize, FIRST);
    assert!(
        picture
            .storage_error
            .starts_with("the township's disk is full"),
        "{:?}",
        picture.storage_error
    );

    tmpfs.free();
    let again = s.import("T01", &bundle);
    let again_text = text(&again);
    assert_eq!(again.status.code(), Some(0), "{again_text}");
    let after = acknowledged(&again);
    assert_eq!(
        before.len() + after.len(),
        sheets.len(),
        "every sheet stored once: {} before the disk filled, {} after\n{again_text}",
        before.len(),
        after.len()
    );

    // Everything reaches the county, each sheet once.
    s.wait_for("T01's outbox to drain into the county", |s| {
        let p = s.runtime.block_on(s.watch.picture("T01"))?;
        let chain = s.runtime.block_on(s.watch.county_sheets());
        (p.outbox.map_or(1, |o| o.depth) == 0 && chain as usize == sheets.len()).then_some(())
    });
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("the township's database is open again"),
        "{log}"
    );
    let picture = s.runtime.block_on(s.watch.picture("T01")).unwrap();
    assert_eq!(
        picture.storage_error, "",
        "the picture no longer says the disk failed"
    );
    // The unit's pending sheets go through now (stored by the import: duplicates).
    let village = s.village_submit(&unit, "30", &[]);
    assert_eq!(village.status.code(), Some(0), "{}", text(&village));
    s.county.fleet.check_alive().unwrap();
}

/// `tally cluster status --format json`: its exit code and the replicas it lists.
fn cluster_status(s: &Setup) -> (Option<i32>, serde_json::Value) {
    let servers = tally_tests::servers(&s.county);
    let out = s.tally(&[
        "cluster".as_ref(),
        "status".as_ref(),
        "--servers".as_ref(),
        servers.as_ref(),
        "--pki".as_ref(),
        s.county.layout.pki.as_os_str(),
        "--operator".as_ref(),
        tally_tests::localnet::OPERATOR.as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cluster status is not JSON ({e}): {}", text(&out)));
    (out.status.code(), json)
}

fn leaders(status: &serde_json::Value) -> Vec<u64> {
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "leader")
        .filter_map(|r| r["replica"].as_u64())
        .collect()
}

// Goal: a replica whose disk fills stops and exits non-zero (74) with the cause in its log, so
// systemd starts it again; the township whose batch it was taking is told why; the cluster
// never shows two leaders, the township's sheets are all counted through the other replicas, and the replica started again on the freed disk catches
// up. Method: every replica's data_dir is a 2 MB tmpfs; once a leader is elected, fill the
// leader's, then import every township's sheets at its aggregator; wait for the leader's
// process to end and read its status and log; read `tally cluster status` until the others
// have a leader and every sheet is in their chain; free the space, start the replica again
// and wait until it has every sheet and the cluster status is clean.
#[test]
fn a_replica_whose_disk_fills_exits_74_and_the_cluster_shows_one_leader() {
    if !may_mount() {
        return;
    }
    let mut s = setup();
    let mounts: Vec<(u64, Tmpfs)> = tally_tests::localnet::REPLICAS
        .iter()
        .map(|id| {
            let dir = s.county.layout.servers.join(format!("data/replica-{id}"));
            (*id, Tmpfs::mount(&dir))
        })
        .collect();
    let leader = s.runtime.block_on(s.county.start_county()).unwrap();
    s.runtime.block_on(s.county.start_townships()).unwrap();
    let (_, tmpfs) = mounts.iter().find(|(id, _)| *id == leader).unwrap();
    tmpfs.fill();

    let mut total = 0;
    for township in ["T01", "T02", "T03"] {
        let sheets = s.sheets_of_township(township);
        total += sheets.len();
        let bundle = s.bundle(township, &sheets);
        let out = s.import(township, &bundle);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }

    let deadline = Instant::now() + WAIT_MAX;
    let status = loop {
        let proc = s.county.fleet.replicas.get_mut(&leader).unwrap();
        if let Some(status) = proc.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "replica {leader} still runs {WAIT_MAX:?} after its disk filled:\n{}",
            proc.log_tail()
        );
        std::thread::sleep(POLL);
    };
    let proc = &s.county.fleet.replicas[&leader];
    let log = std::fs::read_to_string(&proc.log).unwrap();
    assert_eq!(status.code(), Some(EXIT_STORAGE), "{}", proc.log_tail());
    assert!(
        log.contains(&format!("replica {leader}'s disk is full")),
        "{}",
        proc.log_tail()
    );
    assert!(
        log.contains("exiting with status 74"),
        "{}",
        proc.log_tail()
    );
    for line in log.lines().filter(|l| l.contains("disk is full")) {
        eprintln!("replica {leader}'s log: {line}");
    }

    // The other two elect a leader and take every sheet from the townships; the cluster
    // status never lists two leaders meanwhile.
    s.wait_for("every sheet counted by the other replicas", |s| {
        let (_, status) = cluster_status(s);
        let leaders = leaders(&status);
        assert!(leaders.len() <= 1, "two leaders: {status:#}");
        let counted = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            // The chain's first record is the founding.
            .filter_map(|r| r["chain_length"].as_u64().map(|n| n.saturating_sub(1)))
            .max()
            .unwrap_or(0);
        (leaders.len() == 1 && counted as usize == total).then_some(())
    });

    // A township whose batch the stopped replica itself was taking was told why, and sent it
    // elsewhere. One that was talking to a follower is told nothing: the follower sends the
    // batch on to the new leader (a resent sheet is DUPLICATE), and the count above shows
    // nothing was lost; so the check is on what the stopped replica's callers were told.
    let told = format!("the replica stopped: replica {leader}'s disk is full");
    let address = format!("replica={}", s.county.replica_addresses[&leader]);
    let mut told_lines = Vec::new();
    for township in s.county.fleet.townships.values() {
        let log = std::fs::read_to_string(&township.log).unwrap();
        for line in log.lines().filter(|l| l.contains(&told)) {
            told_lines.push(line.to_owned());
        }
        for line in log
            .lines()
            .filter(|l| l.contains(&address) && l.contains("cannot forward"))
        {
            assert!(
                line.contains("disk is full") || line.contains("connect"),
                "a township was told something else by the stopped replica: {line}"
            );
        }
    }
    match told_lines.first() {
        Some(line) => eprintln!("a township's log: {line}"),
        None => eprintln!("no township was talking to replica {leader} itself"),
    }

    // Space freed, the replica started again (as systemd would): it catches up.
    tmpfs.free();
    s.county
        .fleet
        .replicas
        .get_mut(&leader)
        .unwrap()
        .spawn()
        .unwrap();
    s.wait_for("the replica to catch up and the cluster to be clean", |s| {
        let (code, status) = cluster_status(s);
        assert!(leaders(&status).len() <= 1, "two leaders: {status:#}");
        let caught_up = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["chain_length"].as_u64() == Some(total as u64 + 1))
            .count();
        (code == Some(0) && caught_up == tally_tests::localnet::REPLICAS.len()).then_some(())
    });
    s.county.fleet.check_alive().unwrap();
}
