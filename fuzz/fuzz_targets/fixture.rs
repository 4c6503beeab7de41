// Shared by the targets through `#[path]`: a small election definition whose units have known
// test keys, unit n (1 to 3) holding the secret key of 32 bytes of n, and whose township T01
// holds the secret key of 32 bytes of 0x54 (it countersigns batches). Not every target uses
// every helper.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use std::sync::OnceLock;
use tally_core::definition::Definition;

pub const UNITS: u8 = 3;

pub fn unit_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub const TOWNSHIP: &str = "T01";

pub fn township_key() -> SigningKey {
    SigningKey::from_bytes(&[0x54; 32])
}

pub fn definition_arc() -> std::sync::Arc<Definition> {
    static DEFINITION: OnceLock<std::sync::Arc<Definition>> = OnceLock::new();
    DEFINITION
        .get_or_init(|| std::sync::Arc::new(definition().clone()))
        .clone()
}

pub fn definition() -> &'static Definition {
    static DEFINITION: OnceLock<Definition> = OnceLock::new();
    DEFINITION.get_or_init(|| {
        let mut toml = String::from(
            r#"
[election]
id = "fuzz"
name = "fuzz"

[county]
id = "C"
name = "county"
population = 1000
seats = 30

[[townships]]
id = "T01"
name = "township"
population = 1000
seats = 20
public_key = "TOWNSHIP_KEY"

[[contests]]
id = "T01-C01"
name = "contest"
level = "township"
township = "T01"
seats = 1
registered_voters = 1000
candidates = [{ id = "K1", name = "a" }, { id = "K2", name = "b" }]
"#,
        )
        .replace(
            "TOWNSHIP_KEY",
            &hex::encode(township_key().verifying_key().as_bytes()),
        );
        for n in 1..=UNITS {
            let public_key = hex::encode(unit_key(n).verifying_key().as_bytes());
            toml.push_str(&format!(
                "\n[[units]]\nid = \"T01-U{n:03}\"\nname = \"unit {n}\"\nkind = \"station\"\ntownship = \"T01\"\ncontests = [\"T01-C01\"]\npublic_key = \"{public_key}\"\n"
            ));
        }
        tally_core::definition::load("fuzz.toml", &toml, &mut |path| {
            Err(format!("no file {path}"))
        })
        .expect("the fuzz definition is valid")
    })
}
