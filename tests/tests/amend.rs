//! An amendment on election night, through the whole chain: the committee replaces a polling
//! unit's key; the township aggregator learns the amendment from the county and takes the
//! device's sheets signed with the new key; the device, given the amendment file, goes on
//! with its new key.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tally_tests::localnet::{Tuning, Watch};
use tally_tests::{lay_out_county, output, poll, small_county};

const TUNING: Tuning = Tuning {
    raft_tick_ms: Some(50),
    outbox_retry_max_ms: Some(300),
    outbox_batch_max: Some(16),
};
const WAIT_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn text(path: &Path) -> &str {
    path.to_str().expect("paths here are UTF-8")
}

// Goal: a unit's device that broke is replaced on the night: once k officials' amendment is
// recorded, the township takes the unit's sheets signed with the new key (having learned the
// amendment from the county, shown in its picture), forwards them, and the county counts
// them; the old key is refused by the device's own check before anything is sent.
// Method: a county of one township, three replicas and its aggregator as processes; the
// unit's first sheet goes in by `tally village submit`; `tally keygen`, `tally amend
// replace-key`, three officials sign, `tally amend submit`; wait for the township's picture
// to list the amendment; point the unit's village.toml at the new key and the amendment file
// and send version 2 of the sheet signed with the new key; wait for the county to count 2.
#[test]
fn a_replaced_unit_key_goes_through_the_township() {
    let dir = tally_tests::tempdir();
    let work = dir.path();
    let mut county = lay_out_county(
        &work.join("county"),
        &small_county(9, 1),
        Default::default(),
    );
    county.tune(&TUNING).expect("the configs take the tuning");
    let runtime = tally_tests::runtime();
    let watch = {
        let _inside = runtime.enter();
        Watch::new(&county).expect("the operator's certificate loads")
    };
    runtime
        .block_on(county.start_county())
        .expect("the county starts");
    runtime
        .block_on(county.start_townships())
        .expect("the township starts");
    let folder = county.layout.county.clone();
    let definition = folder.join("election.toml");
    let (first, signed) = county
        .generated
        .sheets
        .iter()
        .zip(&county.sheets)
        .next()
        .map(|(s, signed)| (s.clone(), signed.clone()))
        .unwrap();
    let unit = first.unit.as_str().to_owned();
    let township = county
        .definition
        .unit(&first.unit)
        .unwrap()
        .township
        .to_string();
    let config = county.layout.village_dir(&unit).join("village.toml");
    let submit = |bundle: &Path| {
        output(
            work,
            &[
                "village",
                "submit",
                "--config",
                text(&config),
                "--retry-for",
                "30",
                text(bundle),
            ],
        )
    };
    let first_bundle = work.join("first.sheets");
    std::fs::write(&first_bundle, tally_proto::write_bundle(&[signed])).unwrap();
    let (code, out, err) = submit(&first_bundle);
    assert_eq!(code, 0, "{out}{err}");

    // The committee replaces the key.
    let new_key_path = work.join("new.key");
    let public_key = tally_tests::keygen(work, &new_key_path);
    let amendment = work.join("A-2.json");
    let (code, out, err) = output(
        work,
        &[
            "amend",
            "replace-key",
            "-d",
            text(&definition),
            "--id",
            "A-2",
            "--reason",
            "设备被盗，更换密钥",
            "--unit",
            &unit,
            "--public-key",
            &public_key,
            "--out",
            text(&amendment),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for (id, key) in tally_tests::official_key_files(&folder, work)
        .iter()
        .take(3)
    {
        let (code, out, err) = output(
            work,
            &[
                "amend",
                "sign",
                text(&amendment),
                "-d",
                text(&definition),
                "--official",
                id,
                "--key",
                text(key),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let servers = tally_tests::servers(&county);
    let (code, out, err) = output(
        work,
        &[
            "amend",
            "submit",
            text(&amendment),
            "-d",
            text(&definition),
            "--servers",
            &servers,
            "--pki",
            text(&county.layout.pki),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // The township learns it from the county.
    poll(WAIT_MAX, POLL, || {
        let picture = runtime.block_on(watch.picture(&township));
        match picture {
            Some(p)
                if p.amendments
                    .iter()
                    .any(|a| a.starts_with("A-2 (log index ")) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|last| panic!("the township did not learn the amendment: {last}"));

    // Version 2 signed with the old key: the device itself refuses it (its key is no longer
    // the unit's once it is told of the amendment).
    let village = std::fs::read_to_string(&config).unwrap();
    let amended = format!("amendments = [\"{}\"]\n{village}", text(&amendment));
    std::fs::write(&config, &amended).unwrap();
    let definition_loaded = tally_files::load_definition(&definition).unwrap();
    let mut corrected = first.clone();
    corrected.version = 2;
    corrected.replaces_version = Some(1);
    let old_bundle = work.join("old.sheets");
    let old_key = tally_tests::unit_secret_key(&folder, &unit);
    std::fs::write(
        &old_bundle,
        tally_proto::write_bundle(&[tally_proto::sign(
            &corrected,
            &old_key,
            &definition_loaded.election,
        )]),
    )
    .unwrap();
    let (code, out, err) = submit(&old_bundle);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("signing_key"),
        "the device names its key: {out}{err}"
    );

    // With the new key it goes through the township to the county.
    let signing_key_line = amended
        .lines()
        .find(|l| l.starts_with("signing_key"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &config,
        amended.replace(
            &signing_key_line,
            &format!("signing_key = \"{}\"", text(&new_key_path)),
        ),
    )
    .unwrap();
    let new_key = tally_files::read_secret_key(&new_key_path).unwrap();
    let new_bundle = work.join("new.sheets");
    std::fs::write(
        &new_bundle,
        tally_proto::write_bundle(&[tally_proto::sign(
            &corrected,
            &new_key,
            &definition_loaded.election,
        )]),
    )
    .unwrap();
    let (code, out, err) = submit(&new_bundle);
    assert_eq!(code, 0, "{out}{err}");
    poll(WAIT_MAX, POLL, || {
        let results = runtime
            .block_on(county.county_results())
            .map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_str(&results.result_json).map_err(|e| e.to_string())?;
        let contest = json["contests"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["contest"] == first.contest.as_str()))
            .cloned()
            .unwrap_or_default();
        // Version 2 counted: the chain holds the founding, both versions and the act.
        match results.chain_length {
            4 if json["amendments"][0]["id"] == "A-2" => Ok(contest),
            n => Err(format!("chain length {n}: {json}")),
        }
    })
    .unwrap_or_else(|last| panic!("the county did not count the new key's sheet: {last}"));
    county.fleet.stop_all();
}
