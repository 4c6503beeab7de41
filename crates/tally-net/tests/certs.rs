//! Certificates made here carry what the module doc promises, and the files `tally certs`
//! writes load back, with errors that name the file at fault.

use std::path::Path;

use tally_net::certs::{CA_CERT_FILE, CA_KEY_FILE};
use tally_net::{
    CertError, Identity, Role, TlsFiles, client_tls, identity_of, make_ca, make_leaf, server_tls,
    write_dev_pki,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn der_of(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    pem.contents
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn identity_round_trips_through_a_certificate() {
    // Goal: every role and name written into a leaf is read back unchanged, and the leaf
    // carries the fields other implementations rely on (EKUs, SANs, not a CA).
    // Method: make a CA and one leaf per role, parse each with identity_of and x509-parser.
    let ca = make_ca("测试县").unwrap();
    let ca_der = der_of(&ca.cert_pem);
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca_cert.is_ca());
    let constraints = ca_cert.basic_constraints().unwrap().unwrap().value;
    assert_eq!(constraints.path_len_constraint, Some(0));
    assert!(identity_of(&ca_der).is_err(), "a CA carries no role");

    let cases = [
        (Role::Replica, "3"),
        (Role::Township, "T01"),
        (Role::Operator, "alice"),
    ];
    for (role, name) in cases {
        let hosts = strings(&["county-a.example", "10.0.0.7"]);
        let leaf = make_leaf(&ca, role, name, &hosts, 30).unwrap();
        assert_eq!(leaf.identity, Identity::new(role, name).unwrap());
        let der = der_of(&leaf.cert_pem);
        assert_eq!(identity_of(&der).unwrap(), leaf.identity);

        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            format!("{role}:{name}")
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        let dns: Vec<&str> = sans
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect();
        let uris: Vec<&str> = sans
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(uris, [format!("tally://{role}/{name}")]);
        // Servers (replicas, and townships, which polling units dial) always answer to
        // localhost and the loopback addresses besides the hosts asked for.
        if matches!(role, Role::Replica | Role::Township) {
            assert_eq!(dns, ["localhost", "county-a.example"]);
            assert_eq!(
                sans.general_names
                    .iter()
                    .filter(|n| matches!(n, GeneralName::IPAddress(_)))
                    .count(),
                3,
                "127.0.0.1, ::1 and 10.0.0.7"
            );
        } else {
            assert_eq!(dns, ["county-a.example"]);
        }
        // The material is accepted by both TLS builders.
        server_tls(&ca.cert_pem, &leaf.cert_pem, &leaf.key_pem).unwrap();
        client_tls(&ca.cert_pem, &leaf.cert_pem, &leaf.key_pem, "localhost").unwrap();
    }
}

#[test]
fn make_leaf_refuses_bad_requests() {
    // Goal: a leaf is never made with a malformed identity, an absurd validity, or a key
    // that is not the CA's.
    // Method: call make_leaf with each mistake and check the error kind.
    let ca = make_ca("Test County").unwrap();
    for (role, name) in [(Role::Replica, "0"), (Role::Township, "T/01")] {
        assert!(matches!(
            make_leaf(&ca, role, name, &[], 30),
            Err(CertError::BadIdentity { .. })
        ));
    }
    assert!(make_leaf(&ca, Role::Operator, "bob", &[], 0).is_err());
    assert!(make_leaf(&ca, Role::Operator, "bob", &[], 100_000).is_err());

    let other = make_ca("Other County").unwrap();
    let mixed = tally_net::CaFiles {
        cert_pem: ca.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
    };
    assert!(matches!(
        make_leaf(&mixed, Role::Operator, "bob", &[], 30),
        Err(CertError::CaKeyMismatch)
    ));
}

#[test]
fn tls_material_is_checked_before_tonic_sees_it() {
    // Goal: mismatched material is refused with an error that says which part is wrong.
    // Method: hand server_tls and client_tls a leaf from another CA, a key of another leaf,
    // a leaf in place of the CA, and no certificate at all.
    let ca = make_ca("Test County").unwrap();
    let other_ca = make_ca("Other County").unwrap();
    let leaf = make_leaf(&ca, Role::Township, "T01", &[], 30).unwrap();
    let second = make_leaf(&ca, Role::Township, "T02", &[], 30).unwrap();
    let foreign = make_leaf(&other_ca, Role::Township, "T01", &[], 30).unwrap();

    let err = server_tls(&ca.cert_pem, &foreign.cert_pem, &foreign.key_pem).unwrap_err();
    assert!(matches!(err, CertError::NotIssuedByCa { .. }), "{err}");
    let err = client_tls(&ca.cert_pem, &leaf.cert_pem, &second.key_pem, "localhost").unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    let err = server_tls(&leaf.cert_pem, &leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(err.to_string().contains("is not a CA certificate"), "{err}");
    let err = server_tls(&ca.cert_pem, "", &leaf.key_pem).unwrap_err();
    assert!(
        err.to_string().contains("no PEM CERTIFICATE block"),
        "{err}"
    );
    assert!(err.to_string().contains("tally certs"), "{err}");
    let err = client_tls(&ca.cert_pem, &leaf.cert_pem, &leaf.key_pem, " ").unwrap_err();
    assert!(matches!(err, CertError::BadIdentity { .. }), "{err}");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn dev_pki_writes_every_file_once() {
    // Goal: `tally certs` writes the CA and one pair per identity, keeps keys private,
    // never overwrites, and can add a township to an existing county CA.
    // Method: write a PKI into a temporary directory, load each pair back with TlsFiles,
    // write again, then add a township.
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let done = write_dev_pki(
        &pki,
        "Test County",
        &[1, 2],
        &strings(&["T01"]),
        &strings(&["alice"]),
        &strings(&["replica-1.county.example"]),
    )
    .unwrap();
    assert!(!done.ca_reused);
    let names: Vec<String> = done
        .written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ca.key",
            "replica-1.pem",
            "replica-1.key",
            "replica-2.pem",
            "replica-2.key",
            "township-T01.pem",
            "township-T01.key",
            "operator-alice.pem",
            "operator-alice.key",
        ]
    );
    assert_eq!(mode_of(&pki.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode_of(&pki.join("township-T01.key")), 0o600);
    // Certificates are public: at least readable by their owner (the umask may take more).
    assert_eq!(mode_of(&pki.join(CA_CERT_FILE)) & 0o600, 0o600);

    let replica = Identity::replica(1).unwrap();
    let (_, identity) = TlsFiles::in_dir(&pki, &replica).server_tls().unwrap();
    assert_eq!(identity, replica);
    let township = Identity::new(Role::Township, "T01").unwrap();
    let (_, identity) = TlsFiles::in_dir(&pki, &township)
        .client_tls("replica-1.county.example")
        .unwrap();
    assert_eq!(identity, township);

    let ca_before = std::fs::read(pki.join(CA_CERT_FILE)).unwrap();
    let err = write_dev_pki(&pki, "Test County", &[3], &strings(&["T01"]), &[], &[]).unwrap_err();
    assert!(matches!(err, CertError::Exists { .. }));
    assert!(err.to_string().contains("township-T01.pem"), "{err}");
    assert!(
        !pki.join("replica-3.pem").exists(),
        "nothing is written when any file exists"
    );

    let added = write_dev_pki(&pki, "Test County", &[], &strings(&["T02"]), &[], &[]).unwrap();
    assert!(added.ca_reused);
    assert_eq!(added.written.len(), 2);
    assert_eq!(std::fs::read(pki.join(CA_CERT_FILE)).unwrap(), ca_before);
    let t02 = Identity::new(Role::Township, "T02").unwrap();
    TlsFiles::in_dir(&pki, &t02)
        .client_tls("localhost")
        .unwrap();

    let err = write_dev_pki(&pki, "Test County", &[4, 4], &[], &[], &[]).unwrap_err();
    assert!(err.to_string().contains("asked for twice"), "{err}");
}

#[test]
fn missing_and_foreign_files_are_named() {
    // Goal: an operator pointed at a wrong or missing file is told which file and what to do.
    // Method: load TlsFiles with a missing key, and with a CA file from another county.
    let dir = tempfile::tempdir().unwrap();
    write_dev_pki(dir.path(), "A County", &[1], &[], &[], &[]).unwrap();
    let other = tempfile::tempdir().unwrap();
    write_dev_pki(other.path(), "B County", &[1], &[], &[], &[]).unwrap();
    let replica = Identity::replica(1).unwrap();

    let mut files = TlsFiles::in_dir(dir.path(), &replica);
    files.key = dir.path().join("replica-9.key");
    let err = files.server_tls().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, CertError::Missing { .. }), "{message}");
    assert!(message.contains("replica-9.key"), "{message}");
    assert!(message.contains("`tally certs`"), "{message}");

    let mut files = TlsFiles::in_dir(dir.path(), &replica);
    files.ca = other.path().join(CA_CERT_FILE);
    let message = files.server_tls().unwrap_err().to_string();
    assert!(
        message.contains("replica-1.pem was not issued by the CA in"),
        "{message}"
    );
    assert!(message.contains(&other.path().join("ca.pem").display().to_string()));
}
