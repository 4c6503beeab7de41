//! `tally certs`: a county CA and the leaf certificates of a test or small deployment, written
//! by [`tally_net::write_dev_pki`]. This file only turns the arguments into its inputs and
//! reports what was written; the certificates, the naming rule and the refusal to overwrite
//! live in `tally-net`.

use crate::outcome::Outcome;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tally_files::load_definition;
use tally_net::certs::{CA_CERT_FILE, CA_KEY_FILE};
use tally_net::{Identity, Role};

/// Where the README explains what a certificate from another CA must carry.
pub const EXISTING_CA_DOC: &str =
    "crates/tally-net/README.md#using-an-existing-ca-instead-of-tally-certs";

/// The replicas a new county PKI gets when `--replicas` is not given: the smallest cluster
/// that survives the loss of one replica.
pub const DEFAULT_REPLICAS: [u64; 3] = [1, 2, 3];

/// The operator a new county PKI gets when `--operators` is not given.
pub const DEFAULT_OPERATOR: &str = "operator";

/// The hosts put on replica certificates when `--hosts` is not given: one machine's cluster.
pub const DEFAULT_HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// The CA's name when neither `--county` nor `--definition` gives one.
pub const DEFAULT_COUNTY_NAME: &str = "county";

#[derive(clap::Args)]
#[command(after_help = "\
The defaults (replicas 1,2,3 and operator `operator`) apply only when a new CA is made, so a \
first run gives a whole small county. When DIR already holds ca.pem and ca.key, that CA signs \
the new certificates and only what is named is made: add township T19 with \
`tally certs --out DIR --townships T19`. No file is ever overwritten.")]
pub struct CertsArgs {
    /// The folder to write into (created if absent); an existing ca.pem + ca.key there is reused.
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// The county's name in the CA certificate (default: the definition's county name).
    #[arg(long)]
    county: Option<String>,
    /// Replica raft ids [default for a new CA: 1,2,3].
    #[arg(long, value_delimiter = ',')]
    replicas: Option<Vec<u64>>,
    /// Township ids.
    #[arg(long, value_delimiter = ',', conflicts_with = "definition")]
    townships: Vec<String>,
    /// An election definition: a certificate for every township in it.
    #[arg(long, short)]
    definition: Option<PathBuf>,
    /// Also a village certificate for every polling unit of --definition (each unit's device
    /// talks to its township with it).
    #[arg(long, requires = "definition")]
    villages: bool,
    /// Operator names [default for a new CA: operator].
    #[arg(long, value_delimiter = ',')]
    operators: Option<Vec<String>>,
    /// Host names and addresses the replicas and townships are dialled at, put on every
    /// replica and township certificate.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_HOSTS.map(String::from))]
    hosts: Vec<String>,
}

pub fn run(args: &CertsArgs) -> Result<Outcome> {
    let mut villages: Vec<String> = Vec::new();
    let (definition_county, townships) = match &args.definition {
        Some(path) => {
            let definition = load_definition(path)?;
            if args.villages {
                villages = definition
                    .units
                    .iter()
                    .map(|u| u.id.as_str().to_owned())
                    .collect();
            }
            let townships: Vec<String> = definition
                .townships
                .iter()
                .map(|t| t.id.as_str().to_owned())
                .collect();
            if townships.is_empty() {
                bail!(
                    "{} defines no townships; name them with --townships instead",
                    path.display()
                );
            }
            (Some(definition.county.name), townships)
        }
        None => (None, args.townships.clone()),
    };
    let county = args
        .county
        .clone()
        .or(definition_county)
        .unwrap_or_else(|| DEFAULT_COUNTY_NAME.to_owned());

    let ca_exists = args.out.join(CA_CERT_FILE).exists() && args.out.join(CA_KEY_FILE).exists();
    // A later run adds to a county; making the default replicas and operator again would
    // only collide with the files of the first run.
    let replicas = args
        .replicas
        .clone()
        .unwrap_or_else(|| default_unless(ca_exists, DEFAULT_REPLICAS.to_vec()));
    let operators = args
        .operators
        .clone()
        .unwrap_or_else(|| default_unless(ca_exists, vec![DEFAULT_OPERATOR.to_owned()]));
    if replicas.is_empty() && townships.is_empty() && operators.is_empty() && villages.is_empty() {
        bail!(
            "nothing to make: {} already holds a CA, so name the certificates to add with \
             --replicas, --townships, --definition or --operators",
            args.out.display()
        );
    }

    let mut identities = Vec::new();
    for id in &replicas {
        identities.push(Identity::replica(*id)?);
    }
    for (role, names) in [
        (Role::Township, &townships),
        (Role::Operator, &operators),
        (Role::Village, &villages),
    ] {
        for name in names {
            identities.push(Identity::new(role, name.as_str())?);
        }
    }
    let pki = tally_net::write_dev_pki_for(&args.out, &county, &identities, &args.hosts)
        .with_context(|| format!("cannot make certificates in {}", args.out.display()))?;

    if pki.ca_reused {
        if args.county.is_some() {
            eprintln!(
                "note: --county is not used: the existing CA keeps the name it was made with"
            );
        }
        crate::say!(
            "reused the county CA in {} ({CA_CERT_FILE}, {CA_KEY_FILE})",
            args.out.display()
        );
    } else {
        crate::say!(
            "made a new county CA for {county} in {}",
            args.out.display()
        );
    }
    for path in &pki.written {
        crate::say!("wrote {}", path.display());
    }
    crate::say!("{}", closing_note(&args.out));
    Ok(Outcome::Clean)
}

fn default_unless<T>(ca_exists: bool, default: Vec<T>) -> Vec<T> {
    if ca_exists { Vec::new() } else { default }
}

/// The one line after the file list: who may read the keys, and where a real deployment's
/// certificates come from.
fn closing_note(out: &Path) -> String {
    format!(
        "keys (*.key) are mode 0600, readable by their owner only; keep {} off every machine \
         but the one that makes certificates. For a real deployment using an existing CA, see \
         {EXISTING_CA_DOC}",
        out.join(CA_KEY_FILE).display()
    )
}
