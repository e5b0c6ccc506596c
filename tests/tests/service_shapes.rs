//! Services shaped as providers' really are, deployed by the agent on the real DaCHS from
//! nothing. Here: a B2SAFE collection laid out in folders (by target, night and instrument,
//! depths 1 to 3) over Apache mod_dav, brought in by parallel transfers that all make the same
//! folders at once, on a node where none of them exists yet: every fresh deploy must converge in
//! its first pass, at 4 and at 16 transfers at a time. (Before the fix, a worker that found a
//! folder missing and then lost the race to create it failed the pass with "File exists".)

use std::collections::BTreeMap;
use std::path::Path;

use harness::churn::{ROWS_PER_FILE, csv, served};
use harness::dav::{DavServer, PASSWORD, USER};
use harness::git::LocalRepo;
use harness::*;

const NAME: &str = "vt_nested";
const FILES: u32 = 60;
const RUNS: usize = 3;

/// File `i`'s folder: 60 folders at depths 1 to 3 below 10 targets, parents shared.
fn folder(i: u32) -> String {
    match i % 3 {
        0 => format!("t{}", i % 10),
        1 => format!("t{}/n{i}", i % 10),
        _ => format!("t{}/n{}/i{i}", (i - 1) % 10, i - 1),
    }
}

#[test]
fn a_collection_in_nested_folders_converges_in_its_first_pass_on_a_fresh_node() {
    if !require_dachs() {
        return;
    }
    let Some(dav) = DavServer::start() else {
        return;
    };
    let data = dav.data(NAME);
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let dir = data.join(folder(i));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("g{i:04}.csv")), csv(i, 0)).unwrap();
        for r in 0..ROWS_PER_FILE {
            expected.insert(format!("c{i:04}r{r}"), "v0".to_owned());
        }
    }

    // The example's RD reading its data directory recursively, as such a provider's RD does.
    let (repo, _) = LocalRepo::example_as(NAME);
    let rd_path = format!("{NAME}/q.rd");
    let rd = std::fs::read_to_string(repo.path().join(&rd_path)).unwrap();
    let recursive = rd.replace(
        r#"<sources pattern="data/*.csv">"#,
        r#"<sources pattern="data/*.csv" recurse="True">"#,
    );
    assert_ne!(recursive, rd, "the example RD no longer reads data/*.csv");
    repo.write(&rd_path, &recursive);
    repo.write(
        "vespa-service.toml",
        &format!(
            "[[resource]]\ndir = \"{NAME}\"\n\n[[resource.collection]]\nname = \"granules\"\n\
             source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"**/*.csv\"]\n",
            dav.url(NAME)
        ),
    );
    repo.commit("a collection laid out in folders");

    for concurrency in [4, 16] {
        for run in 1..=RUNS {
            // A node where nothing of the resource exists yet: no directory, no table, no state.
            remove_resource(NAME);
            let home = Home::new(&dachs_url(), "");
            home.write(
                "etc/agent.d/20-source.toml",
                &format!(
                    "[source]\nurl = \"{}\"\n\n[granules]\nconcurrency = {concurrency}\n\
                     credentials-dir = \"{}\"\n",
                    repo.path().display(),
                    home.path("credentials").display()
                ),
            );
            secret_file(&home, "credentials/b2safe", &format!("{USER}:{PASSWORD}\n"));
            let out = home.output(&["sync"]);
            let what = format!("concurrency {concurrency}, fresh deploy {run} of {RUNS}");
            assert_eq!(out.code(), 0, "{what}: the first pass failed: {out:?}");
            assert_eq!(
                served(NAME).as_ref(),
                Ok(&expected),
                "{what}: DaCHS does not serve every granule of every folder"
            );
            let plan = home.output(&["plan"]);
            assert_eq!(plan.code(), 0, "{what}: not converged: {plan:?}");
            assert!(
                Path::new("/var/gavo/inputs")
                    .join(NAME)
                    .join("data")
                    .join(folder(FILES - 1))
                    .is_dir()
            );
        }
    }
    remove_resource(NAME);
}
