//! A replica whose disk fills stops, and says so in everything an operator reads: its status
//! has no role (`stopped`, not the `leader` it was), no leader, the reason naming the full
//! disk, and its Status answer, metrics gauges and health say the same
//! (docs/design/county.md, "When the disk fails"). The process around it exiting with status
//! 74 is checked with real processes in `tests/tests/disk_full.rs`.
//!
//! The data directory is a 2 MB tmpfs (`mount -t tmpfs`), which needs root: CI runs the tests
//! as root; elsewhere the test says why it skips and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;
use tally_county::ReplicaId;
use tally_county::command::Command;
use tally_county::error::WriteError;
use tally_county::server::{self, ReplicaSetup};
use tally_county::transport::Dialer;
use tally_synth::GenParams;
use tonic::transport::Channel;

const WAIT_MAX: Duration = Duration::from_secs(20);
/// Sheets per proposal: enough that a few proposals fill 2 MB.
const SHEETS_PER_PROPOSAL: usize = 100;

/// A cluster of one replica dials no one.
struct NoDialer;

impl Dialer for NoDialer {
    fn channel(&self, address: &str) -> Result<Channel, String> {
        Err(format!("this test dials no one ({address})"))
    }
}

fn is_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    uid.as_deref() == Some("0")
}

/// A tmpfs mounted at a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Process::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(dir.to_owned())
    }

    /// Fills the filesystem with a ballast file until the kernel says it is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join("ballast")).unwrap();
        let block = vec![0xA5u8; 4096];
        while let Ok(n) = file.write(&block) {
            if n == 0 {
                break;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
    }
}

// Goal: the leader whose disk fills stops and reports no role, so no one sees two leaders.
// Method: a one-replica cluster on a 2 MB tmpfs; once it leads, fill the tmpfs and propose
// batches of sample sheets until one is answered "stopped"; then read its status, its Status
// answer and its metrics.
#[test]
fn a_leader_whose_disk_fills_reports_stopped_not_leader() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root; CI runs these tests as root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let tmpfs = Tmpfs::mount(&data_dir);
    let generated = tally_synth::generate(&GenParams::sample()).unwrap();
    let definition = Arc::new(tally_synth::definition(&generated).unwrap());
    let signed = tally_synth::sign_all(&generated);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let opened = server::open(ReplicaSetup {
            cluster_id: "disk-full".into(),
            replica_id: ReplicaId::new(1),
            data_dir: data_dir.clone(),
            definition: definition.clone(),
            initial_voters: vec![ReplicaId::new(1)],
            peers: BTreeMap::from([(ReplicaId::new(1), "127.0.0.1:1".to_owned())]),
            tick: Duration::from_millis(20),
            compact_after_entries: 10_000,
            dialer: Arc::new(NoDialer),
        })
        .unwrap();
        let node = opened.node.clone();
        let mut status = node.status();
        tokio::time::timeout(WAIT_MAX, status.wait_for(|s| s.role == "leader"))
            .await
            .expect("the replica leads")
            .unwrap();

        tmpfs.fill();
        // One township's sheets, in batches, until the disk refuses one.
        let township = definition
            .unit(&generated.sheets[0].unit)
            .unwrap()
            .township
            .clone();
        let mine: Vec<_> = generated
            .sheets
            .iter()
            .zip(&signed)
            .filter(|(sheet, _)| definition.unit(&sheet.unit).unwrap().township == township)
            .map(|(_, signed)| signed.clone())
            .collect();
        let mut stopped = None;
        for batch in mine.chunks(SHEETS_PER_PROPOSAL).cycle().take(1_000) {
            let command = Command::Ingest {
                township: township.clone(),
                sheets: batch.to_vec(),
                countersignature: None,
            };
            match node.propose(command).await {
                Ok(_) => {}
                Err(WriteError::Stopped(reason)) => {
                    stopped = Some(reason);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        let reason = stopped.expect("a proposal is answered stopped once the disk is full");
        assert!(
            reason.contains("replica 1's disk is full"),
            "the answer says why: {reason}"
        );

        tokio::time::timeout(WAIT_MAX, status.wait_for(|s| !s.running))
            .await
            .expect("the status says stopped")
            .unwrap();
        let last = status.borrow().clone();
        assert_eq!(last.role, "stopped", "{last:?}");
        assert_eq!(last.leader, None);
        assert!(last.storage_failed);
        assert!(
            last.stopped
                .as_deref()
                .is_some_and(|r| r.contains("disk is full")),
            "{last:?}"
        );
        let answer = tally_county::shared::status_response(&last);
        assert_eq!(answer.role, "stopped");
        assert!(!answer.running);
        assert_eq!(answer.leader_id, 0);
        assert!(
            answer.stopped.contains("disk is full"),
            "{}",
            answer.stopped
        );
        let metrics = tally_county::metrics::Metrics::new(
            node.metrics(),
            &Default::default(),
            &Default::default(),
        )
        .render(&answer);
        for line in [
            "tally_replica_up 0",
            "tally_raft_is_leader 0",
            "tally_raft_role{role=\"stopped\"} 1",
            "tally_raft_role{role=\"leader\"} 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        // Nothing stays waiting for a stopped driver: a new proposal is refused at once.
        let again = tokio::time::timeout(
            WAIT_MAX,
            node.propose(Command::Ingest {
                township: township.clone(),
                sheets: mine[..1].to_vec(),
                countersignature: None,
            }),
        )
        .await
        .expect("answered at once");
        assert!(matches!(again, Err(WriteError::Stopped(_))), "{again:?}");
    });
}
